"""Isolated, time-limited inspection of image files for the DataValidator.

``inspect_file`` reads one file, hashes it and decodes it fully with Pillow, and returns
the facts the validator needs (format, mode, size, bit depth, EXIF orientation) or the
reason it cannot be used (an integrity code). It never raises for a bad file.

``rxvision.data.decode_pool.DecodePool`` runs it in isolated worker processes.

Reason codes are stable strings, documented in docs/data-validation.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

log = logging.getLogger(__name__)

# --- reason codes (stable: reports, dashboards and the docs use them) -------------------
# integrity: the file cannot be used at all
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "corrupt"
DECOMPRESSION_BOMB = "decompression_bomb"
FILE_TOO_LARGE = "file_too_large"
DECODE_TIMEOUT = "decode_timeout"
DECODER_CRASH = "decoder_crash"
# format and content
UNSUPPORTED_FORMAT = "unsupported_format"
TOO_SMALL = "too_small"
NOT_RGB = "not_rgb"
EXIF_ORIENTATION = "exif_orientation"
# across files
LABEL_CONFLICT = "label_conflict"
SPLIT_LEAKAGE = "split_leakage"
DUPLICATE = "duplicate"
# dataset level (warnings and criteria, never a file's rejection)
IGNORED_FILE = "ignored_file"
CLASS_IMBALANCE = "class_imbalance"
TOO_FEW_CLASSES = "too_few_classes"
QUARANTINE_LIMIT = "quarantine_limit"

INTEGRITY_CODES = frozenset(
    {EMPTY_FILE, NOT_AN_IMAGE, CORRUPT, DECOMPRESSION_BOMB, FILE_TOO_LARGE}
    | {DECODE_TIMEOUT, DECODER_CRASH}
)

EXIF_ORIENTATION_TAG = 0x0112

# Leading bytes of the formats Pillow decodes: a file that starts like an image but does
# not decode is corrupt; one that starts like nothing known is not an image at all.
_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little endian
    b"MM\x00*",  # TIFF, big endian
    b"BM",
    b"RIFF",  # WEBP (RIFF....WEBP)
)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What a worker refuses before decoding: hostile sizes."""

    max_pixels: int = 50_000_000
    max_file_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileTask:
    """One file to inspect: its absolute path and its key (posix path relative to the root);
    with ``size`` >= 0, the image is the ``size`` bytes at ``offset`` of that file (a
    snapshot's shard, read in place)."""

    path: str
    key: str
    offset: int = 0
    size: int = -1  # -1: the whole file


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What inspecting one file found; ``code`` is None when it decoded fully."""

    key: str
    size_bytes: int = 0
    sha256: str | None = None
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    bits: int | None = None  # bits per channel
    orientation: int | None = None  # EXIF orientation, None when absent
    code: str | None = None
    message: str = ""

    @property
    def decoded(self) -> bool:
        """True when the file decoded fully (it may still fail policy checks)."""
        return self.code is None

    def with_key(self, key: str) -> FileFacts:
        """These facts for file ``key`` (``dataclasses.replace`` costs ~2.5 us per call
        through its field introspection: ~0.25 s for a 100,000-file night's lookups)."""
        return FileFacts(
            key,
            self.size_bytes,
            self.sha256,
            self.format,
            self.mode,
            self.width,
            self.height,
            self.bits,
            self.orientation,
            self.code,
            self.message,
        )

    def __reduce__(self) -> tuple[type[FileFacts], tuple[object, ...]]:
        # one per file from each decode worker: a frozen, slotted dataclass pickles
        # through dataclasses.fields() on both sides (~25 us per file in the parent,
        # which shares the cores with the workers); the field values in order are enough
        return (FileFacts, tuple(getattr(self, name) for name in self.__slots__))


InspectFn = Callable[[FileTask, DecodeLimits], FileFacts]


def file_lost(task: FileTask, code: str, message: str) -> FileFacts:
    """The finding for a file whose decoder process died or hung (``DecodePool``)."""
    return FileFacts(task.key, code=code, message=message)


def inspect_file(task: FileTask, limits: DecodeLimits) -> FileFacts:
    """Hash and fully decode one file; file problems become a code, never an exception."""
    if task.size >= 0:
        return _inspect_range(task, task.size, limits)
    try:
        info = os.stat(task.path)
    except OSError as exc:
        return FileFacts(task.key, code=NOT_AN_IMAGE, message=f"cannot read file: {exc}")
    if not stat.S_ISREG(info.st_mode):
        return FileFacts(task.key, code=NOT_AN_IMAGE, message="not a regular file")
    if info.st_size == 0:
        return FileFacts(task.key, code=EMPTY_FILE, message="file is empty (0 bytes)")
    if info.st_size > limits.max_file_bytes:
        return FileFacts(
            task.key,
            size_bytes=info.st_size,
            code=FILE_TOO_LARGE,
            message=f"{info.st_size} bytes, over the limit of {limits.max_file_bytes}",
        )
    try:
        with open(task.path, "rb") as handle:
            # bounded read: the file may grow between stat and read
            data = handle.read(limits.max_file_bytes + 1)
    except OSError as exc:
        return FileFacts(task.key, code=NOT_AN_IMAGE, message=f"cannot read file: {exc}")
    digest = hashlib.sha256(data).hexdigest()
    return _decode(task.key, data, digest, limits)


def _inspect_range(task: FileTask, size: int, limits: DecodeLimits) -> FileFacts:
    """``inspect_file`` of an image stored as a byte range of a larger file."""
    if size == 0:
        return FileFacts(task.key, code=EMPTY_FILE, message="file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        return FileFacts(
            task.key,
            size_bytes=size,
            code=FILE_TOO_LARGE,
            message=f"{size} bytes, over the limit of {limits.max_file_bytes}",
        )
    try:
        with open(task.path, "rb") as handle:
            data = os.pread(handle.fileno(), size, task.offset)
    except OSError as exc:
        return FileFacts(task.key, code=NOT_AN_IMAGE, message=f"cannot read {task.path}: {exc}")
    if len(data) != size:
        return FileFacts(
            task.key,
            size_bytes=len(data),
            code=NOT_AN_IMAGE,
            message=f"{task.path} ends {size - len(data)} bytes short of this image",
        )
    return _decode(task.key, data, hashlib.sha256(data).hexdigest(), limits)


def _decode(key: str, data: bytes, digest: str, limits: DecodeLimits) -> FileFacts:
    base = FileFacts(key, size_bytes=len(data), sha256=digest)
    facts = base  # grows with what the header tells, kept in the report of a failure
    try:
        with _decode_guard(limits.max_pixels):
            image = Image.open(BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                return replace(base, code=DECOMPRESSION_BOMB, message=_bomb(image))
            if image.format == "PNG":
                # verify() checks every chunk's CRC (load() skips the IDAT CRCs); it must
                # come first and consumes the image, so decode a fresh one afterwards.
                image.verify()
                image = Image.open(BytesIO(data))
            facts = replace(base, **_header_facts(image))
            _scaled_for_integrity(image)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return replace(base, code=DECOMPRESSION_BOMB, message=str(exc))
    except UnidentifiedImageError:
        return replace(base, **_unidentified(data))
    except MemoryError:
        return replace(facts, code=CORRUPT, message="out of memory while decoding")
    except Exception as exc:  # any decoder error means the file cannot be used
        return replace(facts, code=CORRUPT, message=_decode_error(exc))
    return facts


def _scaled_for_integrity(image: Image.Image) -> None:
    """Let a JPEG decode at 1/8 scale: the check is whether every byte parses, not the
    pixels. libjpeg still reads and entropy-decodes every block of every scan (a truncated
    or damaged stream fails the same way), it only skips most of the inverse DCT and the
    colour conversion: ~1.5x faster per file here. The facts above came from the header."""
    if image.format == "JPEG":
        width, height = image.size
        image.draft(None, (max(1, width // 8), max(1, height // 8)))


@contextlib.contextmanager
def _decode_guard(max_pixels: int) -> Iterator[None]:
    """Pillow's own bomb check at our limit, warnings quiet, truncated images refused."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the file is judged anyway
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _header_facts(image: Image.Image) -> dict[str, Any]:
    """Format, mode, size, bit depth and EXIF orientation, read before decoding the pixels."""
    return {
        "format": image.format,
        "mode": image.mode,
        "width": image.size[0],
        "height": image.size[1],
        "bits": _bits_per_channel(image),
        "orientation": _orientation(image),
    }


def _bits_per_channel(image: Image.Image) -> int:
    if image.mode in ("I", "F"):
        return 32
    if image.mode.startswith("I;16"):
        return 16
    # Pillow opens a 16-bit RGB PNG as 8-bit "RGB"; only its raw mode tells.
    rawmodes = [str(tile.args) for tile in getattr(image, "tile", [])]
    return 16 if any(";16" in raw for raw in rawmodes) else 8


def _orientation(image: Image.Image) -> int | None:
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG)
    except Exception:  # broken EXIF blocks must not decide a file's fate
        return None
    return value if isinstance(value, int) else None


def _bomb(image: Image.Image) -> str:
    width, height = image.size
    return f"header declares {width}x{height} = {width * height} pixels, over the limit"


def _unidentified(data: bytes) -> dict[str, Any]:
    """Tell a damaged image (known magic bytes) from something that is no image at all."""
    if any(data.startswith(magic) for magic in _MAGIC):
        return {"code": CORRUPT, "message": "starts like an image but cannot be parsed"}
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return {"code": NOT_AN_IMAGE, "message": "an HTML/XML document, not an image"}
    if _looks_like_text(data[:512]):
        return {"code": NOT_AN_IMAGE, "message": "a text file, not an image"}
    return {"code": NOT_AN_IMAGE, "message": "no known image format"}


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _decode_error(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"cannot decode: {text}"
