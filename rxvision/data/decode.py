"""Isolated, time-limited inspection of image files for the DataValidator.

``inspect_file`` reads one file, hashes it and decodes it fully with Pillow, and returns
the facts the validator needs (format, mode, size, bit depth, EXIF orientation) or the
reason it cannot be used (an integrity code). It never raises for a bad file.

``DecodePool`` runs ``inspect_file`` in worker processes fed in small chunks. Image
decoders are C code fed with untrusted bytes: a decoder that crashes the process (a
segfault, an abort) or hangs must cost one file, not the run. The pool sees a dead or
overdue worker, files the file it was on as ``decoder_crash`` or ``decode_timeout``,
starts a new worker and hands it the rest of the chunk.

Reason codes are stable strings, documented in docs/data-validation.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import signal
import stat
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from io import BytesIO
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

from rxvision.errors import RxVisionError

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
    """One file to inspect: its absolute path and its key (posix path relative to the root)."""

    path: str
    key: str


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


InspectFn = Callable[[FileTask, DecodeLimits], FileFacts]


def inspect_file(task: FileTask, limits: DecodeLimits) -> FileFacts:
    """Hash and fully decode one file; file problems become a code, never an exception."""
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


# --- the isolated pool --------------------------------------------------------------------


def _worker_main(conn: Connection, inspect: InspectFn, limits: DecodeLimits) -> None:
    """Inspect the files of each chunk received, one reply per file, until None arrives."""
    # Ctrl-C goes to the whole process group: the parent decides, workers keep quiet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for task in chunk:
            conn.send(("facts", inspect(task, limits)))


@dataclass
class _Slot:
    """One worker process and the files in flight to it (up to two chunks), in order."""

    process: BaseProcess
    conn: Connection
    chunk: list[FileTask]
    done: int = 0
    ready: bool = False
    since: float = 0.0  # when the current file started (last reply or hand-out)

    @property
    def busy(self) -> bool:
        return self.done < len(self.chunk)

    @property
    def pending(self) -> int:
        """Files handed out and not answered yet."""
        return len(self.chunk) - self.done

    @property
    def current(self) -> FileTask:
        return self.chunk[self.done]


class DecodePool:
    """Worker processes that inspect files; a crash or a hang costs one file only.

    ``workers=0`` inspects in this process: no isolation, no time limit (for debugging and
    for fast property tests of ``inspect``).
    """

    MAX_START_FAILURES = 3
    GATHER_S = 0.003
    START_TIMEOUT_S = 60.0  # a new worker must say "ready" within this; not a file's fault

    def __init__(
        self,
        limits: DecodeLimits,
        *,
        workers: int,
        file_timeout_s: float,
        chunk_size: int = 8,
        inspect: InspectFn = inspect_file,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.limits = limits
        self.workers = workers
        self.file_timeout_s = file_timeout_s
        self.chunk_size = chunk_size
        self.inspect = inspect
        self._slots: list[_Slot] = []
        self._start_failures = 0
        self._context = _mp_context()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def imap_unordered(self, tasks: Iterable[FileTask]) -> Iterator[FileFacts]:
        """Facts for every task, in completion order; ``tasks`` is consumed lazily."""
        if self.workers == 0:
            for task in tasks:
                yield self.inspect(task, self.limits)
            return
        source = iter(tasks)
        retry: deque[FileTask] = deque()
        try:
            self._slots = [self._start_worker() for _ in range(self.workers)]
            for index in range(len(self._slots)):
                self._hand_out(index, source, retry)
                self._hand_out(index, source, retry)
            while any(slot.busy for slot in self._slots):
                self._wait()
                for index, slot in enumerate(self._slots):
                    yield from self._collect(slot)
                    lost, facts = self._check_health(slot)
                    if facts is not None:
                        yield facts
                    if lost:
                        slot = self._replace(index, slot, retry, blamed=facts is not None)
                    self._hand_out(index, source, retry)
        finally:
            self.close()

    def close(self) -> None:
        """Stop every worker: politely, then by force."""
        for slot in self._slots:
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(None)
        deadline = time.monotonic() + 1.0
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
            slot.conn.close()
        self._slots = []

    def _start_worker(self) -> _Slot:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child, self.inspect, self.limits),
            name="rxvision-decode",
            daemon=True,
        )
        process.start()
        child.close()
        return _Slot(process=process, conn=parent, chunk=[], since=time.monotonic())

    def _hand_out(self, index: int, source: Iterator[FileTask], retry: deque[FileTask]) -> None:
        """Keep slot ``index`` fed: up to two chunks in flight, so its worker starts the
        next file while this process is still collecting the last reply. Re-queued files
        go first, then new ones."""
        slot = self._slots[index]
        if slot.pending > self.chunk_size:
            return
        chunk: list[FileTask] = []
        while retry and len(chunk) < self.chunk_size:
            chunk.append(retry.popleft())
        for task in source:
            chunk.append(task)
            if len(chunk) >= self.chunk_size:
                break
        if not chunk:
            return
        was_busy = slot.busy
        try:
            slot.conn.send(chunk)
        except OSError:
            retry.extendleft(reversed(chunk))
            if was_busy:
                return  # the worker died at work: _check_health files it
            # the worker died while idle (killed from outside): no file is to blame
            log.warning("a decode worker died while idle; starting another")
            slot.process.join()
            self._replace(index, slot, retry, blamed=False)
            self._hand_out(index, source, retry)
            return
        if was_busy:
            slot.chunk, slot.done = slot.chunk[slot.done :] + chunk, 0
        else:  # the clock of an idle worker's first file starts now
            slot.chunk, slot.done, slot.since = chunk, 0, time.monotonic()

    def _wait(self) -> None:
        busy = [slot for slot in self._slots if slot.busy]
        now = time.monotonic()
        due = min(slot.since + self._time_limit(slot) for slot in busy)
        handles: list[Any] = [slot.conn for slot in busy]
        handles += [slot.process.sentinel for slot in busy]
        if wait(handles, timeout=max(0.01, due - now)) and all(slot.pending > 1 for slot in busy):
            # every worker has work queued: let replies gather, so this process wakes
            # once per few files rather than per file (its cycles are the workers' too)
            time.sleep(self.GATHER_S)

    def _collect(self, slot: _Slot) -> Iterator[FileFacts]:
        """Replies already sent by ``slot``'s worker."""
        while slot.busy:
            try:
                if not slot.conn.poll():
                    return
                kind, payload = slot.conn.recv()
            except (EOFError, OSError):
                return  # the worker died; _check_health files it
            if kind == "ready":
                # the first file's clock starts now: start-up is not decoding time
                slot.ready, slot.since = True, time.monotonic()
                continue
            slot.done += 1
            slot.since = time.monotonic()
            yield payload

    def _check_health(self, slot: _Slot) -> tuple[bool, FileFacts | None]:
        """Whether ``slot``'s worker is lost (dead or overdue), and the facts to file for
        the file it was on (None when no file is to blame)."""
        if not slot.busy:
            return False, None
        if not slot.process.is_alive():
            slot.process.join()
            if not slot.ready:
                self._count_start_failure(slot)
                return True, None
            facts = FileFacts(
                slot.current.key, code=DECODER_CRASH, message=_death(slot.process.exitcode)
            )
            return True, facts
        if time.monotonic() - slot.since > self._time_limit(slot):
            slot.process.kill()
            slot.process.join()
            if not slot.ready:
                self._count_start_failure(slot)
                return True, None
            message = f"decoding took longer than {self.file_timeout_s:g} s"
            return True, FileFacts(slot.current.key, code=DECODE_TIMEOUT, message=message)
        return False, None

    def _time_limit(self, slot: _Slot) -> float:
        return self.file_timeout_s if slot.ready else self.START_TIMEOUT_S

    def _count_start_failure(self, slot: _Slot) -> None:
        """A worker that died or hung before saying ready: no file is to blame, but a
        broken worker must not loop forever."""
        self._start_failures += 1
        if self._start_failures >= self.MAX_START_FAILURES:
            raise RxVisionError(
                f"decode worker died on start {self._start_failures} times "
                f"(exit code {slot.process.exitcode}); see the log above"
            )

    def _replace(self, index: int, slot: _Slot, retry: deque[FileTask], *, blamed: bool) -> _Slot:
        """Start a new worker in ``slot``'s place; the rest of its chunk goes first in line."""
        rest = slot.chunk[slot.done + 1 :] if blamed else slot.chunk[slot.done :]
        retry.extendleft(reversed(rest))
        slot.conn.close()
        replacement = self._start_worker()
        self._slots[index] = replacement
        log.warning("restarted a decode worker (%d files re-queued)", len(rest))
        return replacement


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the decoder process died with {name} while decoding this file"
    return f"the decoder process exited with code {exitcode} while decoding this file"


def _mp_context() -> Any:
    """forkserver where there is one: workers never inherit threads or locks of the caller."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # preloaded once in the server, so each new worker starts in milliseconds
        context.set_forkserver_preload(["__main__", "rxvision.data.decode"])
        return context
    return multiprocessing.get_context("spawn")
