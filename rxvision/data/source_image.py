"""Where one image to preprocess lies: a whole file of a folder, or a byte range of one
(a member of a snapshot's tar shard, read in place instead of unpacked to its own file).

Unpacking a snapshot creates one file per image, the slowest part of a pull on a busy
disk (10,000 small files took 1.4-4 s here); preprocessing reads the shards it fetched
by offset and never creates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SourceImage:
    """One image: its row in the dataset (``path`` relative to the ImageFolder root, its
    ``label``) and where its bytes are: ``size`` bytes of ``file`` from ``offset``
    (``size`` -1: the whole file). ``sha256``, when set, is what the bytes must hash to
    (the snapshot index's): a shard changed on disk is refused, never preprocessed."""

    path: str
    label: str
    file: str
    offset: int = 0
    size: int = -1
    sha256: str = ""

    @classmethod
    def whole_file(cls, root: Path, path: str, label: str) -> SourceImage:
        """The image ``root/path``, read whole."""
        return cls(path, label, str(root / path))

    @property
    def name(self) -> str:
        """How errors name the image: its file, or its member and the shard holding it."""
        return self.file if self.size < 0 else f"{self.path} (in {self.file})"

    def read(self) -> bytes:
        """The image's bytes (``OSError`` when the file is gone or shorter than said)."""
        with open(self.file, "rb") as fh:
            if self.size < 0:
                return fh.read()
            fh.seek(self.offset)
            data = fh.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{len(data)} bytes at offset {self.offset}, expected {self.size}")
        return data
