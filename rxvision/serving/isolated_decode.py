"""Decoding the scoring job's downloaded images in worker processes.

The images are users' files: a decoder that crashes or hangs on one must cost that
image's row (``decoder_crash``, ``decode_timeout``), not the shard, and not the Airflow
task's retries (``rxvision.data.decode_pool.DecodePool``). The workers also take the
decode and the pill's localization (~3 ms of CPU per photo, partly Python, so holding
the GIL) out of the process that downloads and runs the model: its threads no longer wait
on the decoding for the interpreter.

``decode_workers: 0`` decodes in the download threads instead (no isolation).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rxvision.data.decode_pool import DecodePool, start_forkserver
from rxvision.data.imaging import ImageDecodeError, ImageSpec, decode_located
from rxvision.data.localize import DISABLED

# the workers import this module to run ``decode_task``: nothing heavier than the decoder
if TYPE_CHECKING:
    from rxvision.serving.fetch import InputImage
    from rxvision.serving.model_contract import LoadedModel
    from rxvision.serving.scoring_config import ScoringConfig

# an exception the decoder raised that is not one of its reasons (a bug on this image)
DECODE_FAILED = "decode_failed"
# small chunks: a worker holds at most two, and the model waits for whole batches
CHUNK = 4


@dataclass(frozen=True)
class DecodeTask:
    """One downloaded image to decode: its key (named in errors) and bytes."""

    key: str
    index: int
    data: bytes


@dataclass(frozen=True)
class DecodeContract:
    """How every image of the shard is decoded: the model's spec and the hostile-size
    limits (sent once to each worker)."""

    spec: ImageSpec
    max_pixels: int
    max_bytes: int


@dataclass(frozen=True)
class DecodedImage:
    """A worker's answer: the crop the model input is made from, or why there is none."""

    index: int
    pixels: np.ndarray | None = None
    located: str = DISABLED
    error: str | None = None


def decode_task(task: DecodeTask, contract: DecodeContract) -> DecodedImage:
    """Decode one image under the contract (runs in a worker); failures become the
    answer's error, never an exception."""
    try:
        pixels, located = decode_located(
            task.data,
            contract.spec,
            max_pixels=contract.max_pixels,
            max_bytes=contract.max_bytes,
            name=task.key,
        )
    except ImageDecodeError as exc:
        return DecodedImage(task.index, error=exc.reason)
    except Exception as exc:  # a decoder bug on this image costs its row, not the worker
        return DecodedImage(task.index, error=f"{DECODE_FAILED}: {type(exc).__name__}: {exc}")
    return DecodedImage(task.index, pixels, located)


def lost_task(task: DecodeTask, code: str, message: str) -> DecodedImage:
    """The answer for an image whose worker died or ran out of time on it."""
    return DecodedImage(task.index, error=f"{code}: {message}")


def needs_decoding(item: InputImage) -> bool:
    """Downloaded, not served by the cache, not failed, not decoded yet."""
    return item.error is None and item.hit is None and item.pixels is None and item.downloaded


def decode_workers(config: ScoringConfig) -> int:
    """The configured worker processes, else as many as the model runtime's threads (this
    task's share of the cores, ``rxvision.cpu_budget``)."""
    if config.decode_workers is not None:
        return config.decode_workers
    import torch

    return max(1, torch.get_num_threads())


def start_decoders(config: ScoringConfig) -> None:
    """Start the decode workers' forkserver now when the shard will use workers, so that
    it loads and warms the decoder while this process plans, loads the model and starts
    downloading: a fresh process's first decoded image came after ~310 ms, ~30 ms so
    (measured on 2 cores, with 0.3 s of other work between)."""
    if decode_workers(config) > 0:
        start_forkserver(decode_task)


DecodeFn = Callable[[DecodeTask, DecodeContract], DecodedImage]


def decode_isolated(
    items: Iterable[InputImage],
    loaded: LoadedModel,
    config: ScoringConfig,
    *,
    decode: DecodeFn = decode_task,
) -> Iterator[InputImage]:
    """``items`` (consumed lazily), those still to decode decoded by worker processes
    under ``loaded``'s contract; in completion order. The others pass through.
    ``decode`` runs in the workers (importable by qualified name)."""
    passing: deque[InputImage] = deque()
    waiting: dict[int, InputImage] = {}

    def tasks() -> Iterator[DecodeTask]:
        for item in items:
            if needs_decoding(item):
                waiting[item.index] = item
                yield DecodeTask(item.key, item.index, item.data)
            else:
                passing.append(item)

    contract = DecodeContract(loaded.spec, config.max_pixels, config.max_image_bytes)
    pool: DecodePool[DecodeTask, DecodeContract, DecodedImage] = DecodePool(
        contract,
        workers=decode_workers(config),
        file_timeout_s=config.decode_timeout_s,
        inspect=decode,
        lost=lost_task,
        chunk_size=CHUNK,
    )
    with pool:
        for decoded in pool.imap_unordered(tasks()):
            while passing:
                yield passing.popleft()
            yield _with_pixels(waiting.pop(decoded.index), decoded, loaded)
    while passing:
        yield passing.popleft()


def _with_pixels(item: InputImage, decoded: DecodedImage, loaded: LoadedModel) -> InputImage:
    if decoded.pixels is None:
        item.error = decoded.error
        return item
    item.pixels, item.located = decoded.pixels, decoded.located
    item.spec = loaded.spec
    return item
