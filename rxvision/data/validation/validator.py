"""DataValidator: checks a dataset folder against a ValidationPolicy before training.

It refuses a split layout up front, scans every file in isolated worker processes
(``scan``), then judges every criterion (``verdict``) into a ValidationResult.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rxvision.cpu_budget import usable_cores
from rxvision.data.decode import InspectFn, inspect_file
from rxvision.data.layout import check_class_layout
from rxvision.data.packed_snapshot import PackedSnapshot
from rxvision.data.validation.known_facts import KnownFacts
from rxvision.data.validation.packed_walk import PackedWalk
from rxvision.data.validation.policy import ValidationPolicy
from rxvision.data.validation.report import ValidationResult
from rxvision.data.validation.scan import ProgressFn, scan_dataset
from rxvision.data.validation.verdict import judge_scan
from rxvision.errors import ConfigError, NotFound


class DataValidator:
    """Validates a dataset folder against a ValidationPolicy.

    ``workers``: decode processes (default: one per usable core; 0 decodes in this process
    without isolation, for debugging). ``inspect`` replaces the per-file decoder (a test
    hook: it runs inside the workers, so it must be importable). ``progress(files_done)``
    is called as files finish. A calling script needs the usual
    ``if __name__ == "__main__":`` guard (workers re-import the main module).
    """

    def __init__(
        self,
        policy: ValidationPolicy | None = None,
        *,
        workers: int | None = None,
        chunk_size: int = 16,
        inspect: InspectFn = inspect_file,
        progress: ProgressFn | None = None,
    ) -> None:
        self.policy = policy or ValidationPolicy()
        self.workers = _default_workers() if workers is None else workers
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        self.chunk_size = chunk_size
        self.inspect = inspect
        self.progress = progress

    def validate_dataset(
        self,
        data_path: Path,
        digests: Mapping[str, str] | None = None,
        known: KnownFacts | None = None,
    ) -> ValidationResult:
        """Check every file and the dataset as a whole; never raises for a bad file.

        A folder laid out by split (``DIR/<split>/<class>/``) raises ``DataLayoutError``
        before any file is read (``rxvision.data.layout.check_class_layout``).
        ``digests`` (each file's sha256 by relative path, as a pulled snapshot's index
        gives them) and ``known``: a file decoded fully before is not decoded again, and
        ``known`` keeps what this run found (``rxvision.data.validation.known_facts``).
        """
        root = Path(data_path)
        if not root.is_dir():
            raise NotFound(f"dataset folder {root} does not exist or is not a folder")
        check_class_layout(root)  # DIR/<split>/<class>/ is refused (DataLayoutError)
        metrics = scan_dataset(
            root,
            self.policy,
            workers=self.workers,
            chunk_size=self.chunk_size,
            inspect=self.inspect,
            progress=self.progress,
            digests=digests,
            known=known,
        )
        return judge_scan(metrics, self.policy)

    def validate_packed(
        self, packed: PackedSnapshot, known: KnownFacts | None = None, name: str | None = None
    ) -> ValidationResult:
        """``validate_dataset`` of a fetched snapshot read in place: each image decoded
        from its byte range of a shard (nothing unpacked), known facts looked up by the
        index's sha256. A shard that differs from the index, or an image whose bytes do,
        raises ``SnapshotError``. ``name`` says what the result calls the snapshot
        (default: its folder)."""
        # a shard of images all known by content is not even opened (a warm night)
        walk = PackedWalk(packed, known if known is not None else frozenset())
        metrics = scan_dataset(
            packed.dataset,
            self.policy,
            workers=self.workers,
            chunk_size=self.chunk_size,
            inspect=self.inspect,
            progress=self.progress,
            digests=walk.digests(),
            known=known,
            walk=walk,
            verify_digests=True,
        )
        return judge_scan(metrics, self.policy, name)


def _default_workers() -> int:
    return usable_cores()
