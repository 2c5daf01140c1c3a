"""Fetching a shard's input images: download, hash, cache lookup, decode, preprocess.

A bounded thread pool (``download_workers`` threads, at most ``max_in_flight`` images
ahead of the model) yields the images in key order, each ready for the model (decoded
under its preprocessing contract; or left as bytes for the isolated decoder processes,
``rxvision.serving.isolated_decode``), served by the inference cache, or carrying why it
cannot be scored. An unreadable image is an error on its own row; a store that is down
aborts the shard (``StorageUnavailable``: nothing committed, the task retries).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rxvision.data.imaging import ImageDecodeError, ImageSpec, decode_located
from rxvision.data.localize import DISABLED
from rxvision.errors import NotFound
from rxvision.serving.cache import CachePartition, content_hash
from rxvision.serving.errors import StorageUnavailable
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.predictions import DOWNLOAD_FAILED, MISSING
from rxvision.storage.uri_store import Storage, storage_unavailable

if TYPE_CHECKING:
    from rxvision.serving.scoring_config import ScoringConfig


@dataclass
class InputImage:
    """One input key on its way to the model: its bytes, decoded crop, cached row or
    error."""

    index: int
    key: str
    submitted: float
    data: bytes = b""
    spec: ImageSpec | None = None
    # the decoded crop (HWC uint8) under ``spec``: the batch's model input is made from
    # it (``LoadedModel.batch``), and so is the review crop of a row the model is unsure
    # of, not downloaded and decoded again
    pixels: np.ndarray | None = None
    located: str = DISABLED
    error: str | None = None
    digest: str | None = None
    hit: dict[str, Any] | None = None  # the cached row: not decoded, not scored
    downloaded: bool = False  # False for a hit by key and listing tag


def fetch_image(
    index: int,
    key: str,
    submitted: float,
    storage: Storage,
    loaded: LoadedModel,
    cfg: ScoringConfig,
    cache: CachePartition | None = None,
    tag: str | None = None,
    decode: bool = True,
) -> InputImage:
    """Look up ``key`` at its listing ``tag`` in ``cache`` (a hit needs no download),
    else download, hash, look up the content hash, else decode (``load_image`` under
    the model's contract) and preprocess one image; failures become the item's error.
    ``decode=False`` stops at the bytes (``rxvision.serving.isolated_decode`` decodes)."""
    item = InputImage(index, key, submitted)
    if cache is not None and tag:
        found = cache.get_source(key, tag)
        if found is not None:
            item.digest, item.hit = found
            return item
    try:
        item.data = storage.read(key)
        item.downloaded = True
        item.digest = content_hash(item.data)
        item.hit = cache.get(item.digest) if cache is not None else None
        if item.hit is not None or not decode:
            return item
        item.pixels, item.located = decode_for(loaded, item.data, cfg, key)
        item.spec = loaded.spec
    except ImageDecodeError as exc:
        item.error = exc.reason
    except NotFound as exc:
        item.error = f"{MISSING}: {exc}"
    except Exception as exc:
        if storage_unavailable(exc):
            # the store, not this object: abort the shard (nothing committed) so the
            # task's retry scores it, rather than commit every image as an error row
            raise StorageUnavailable(f"storage unreachable reading {key}: {exc}") from exc
        item.error = f"{DOWNLOAD_FAILED}: {type(exc).__name__}: {exc}"  # this object only
    return item


def decode_for(
    loaded: LoadedModel, data: bytes, cfg: ScoringConfig, key: str
) -> tuple[np.ndarray, str]:
    """An image's bytes decoded under ``loaded``'s contract (the crop, not normalized;
    ``loaded.batch`` makes the model input), and where the pill was found (its
    localization status)."""
    return decode_located(
        data, loaded.spec, max_pixels=cfg.max_pixels, max_bytes=cfg.max_image_bytes, name=key
    )


def stream_images(
    keys: Sequence[str], fetch: Callable[[int, str, float], InputImage], workers: int, ahead: int
) -> Iterator[InputImage]:
    """Items in key order, fetched by ``workers`` threads at most ``ahead`` keys ahead."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rxvision-fetch")
    pending: deque[Future[InputImage]] = deque()
    position = 0
    try:
        while position < len(keys) or pending:
            while position < len(keys) and len(pending) < ahead:
                pending.append(pool.submit(fetch, position, keys[position], time.perf_counter()))
                position += 1
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
