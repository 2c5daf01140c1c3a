"""Review crops made while scoring: the gallery's pictures without a second download.

The review gallery shows, for each row the model is unsure of, the model's input crop.
Made when the gallery is published, that is one GET, a decode, the pill's localization
and a JPEG per item (~6 ms each on this 2-core machine: a third of a run whose model
sends every row to review, ``bench/scoring_job.py``). The scorer holds exactly that crop
(the pixels the model's tensor was made from) when it learns that a row needs review,
so it makes the thumbnail then and stores the shard's thumbnails as one segment, in the
thumbnail cache's format (``rxvision.serving.thumbnail_cache``), under the run::

    OUTPUT/_thumbnails/<contract12>/seg-<utc>-<token>.parquet   (content_sha256, jpeg)

``contract12`` hashes the model's preprocessing contract and the thumbnail's size and
quality, so a gallery configured otherwise, or a row scored by another contract, misses
by construction and re-makes its crop. The gallery reads the segments of the contracts
it shows, keeping only the crops it shows. A segment is an optimisation: a missing or
unreadable one costs the gallery a download per item, never the run.

``input_crop`` is an item's picture: the crop made while scoring, else the thumbnail
cache's, else re-made from the image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from rxvision.data.imaging import ImageSpec, decode_located
from rxvision.data.references import thumbnail_jpeg
from rxvision.serving.cache import CacheStorage, list_segments
from rxvision.serving.review_models import ModelInfo
from rxvision.serving.review_page import Picture, ReviewItem
from rxvision.serving.thumbnail_cache import ThumbnailCache, read_segments

if TYPE_CHECKING:
    from rxvision.serving.review_gallery import ReviewConfig

log = logging.getLogger(__name__)


class ShardCrops:
    """The thumbnails of one shard's rows that need review, stored as one segment."""

    def __init__(
        self, output_uri: str, storage: CacheStorage, *, thumb_px: int, jpeg_quality: int
    ) -> None:
        self.thumb_px = thumb_px
        self.jpeg_quality = jpeg_quality
        # never merged: the shards of a run write their segments at the same time
        self._store = ThumbnailCache(
            output_uri,
            storage,
            thumb_px=thumb_px,
            jpeg_quality=jpeg_quality,
            reuse=False,
            max_segments=sys.maxsize,
        )

    def add(self, spec: ImageSpec, digest: str, pixels: np.ndarray) -> None:
        """Keep the thumbnail of ``pixels``: the crop ``spec`` made of the bytes hashing to
        ``digest`` (the gallery's ``input_crop`` makes the same one from the image)."""
        self._store.put(spec, digest, thumbnail_jpeg(pixels, self.thumb_px, self.jpeg_quality))

    def save(self) -> int:
        """Store the thumbnails kept (one segment per contract); how many. A failure is
        logged, never raised: the gallery then re-makes those crops."""
        try:
            return self._store.flush()
        except Exception as exc:
            log.warning("review crops not stored (the gallery re-makes them): %s", exc)
            return 0


class RunCrops:
    """The thumbnails a run's shards stored, for the items a gallery shows."""

    def __init__(
        self, output_uri: str, storage: CacheStorage, *, thumb_px: int, jpeg_quality: int
    ) -> None:
        self._layout = ThumbnailCache(
            output_uri, storage, thumb_px=thumb_px, jpeg_quality=jpeg_quality, reuse=False
        )
        self._storage = storage
        self._crops: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()  # get is called from the gallery's download threads
        self.hits = 0

    def load(self, wanted: Iterable[tuple[ImageSpec, str]]) -> int:
        """Read the stored thumbnails of ``wanted`` (contract, content hash) pairs; how
        many were found. Unreadable segments count as none."""
        by_partition: dict[str, set[str]] = {}
        for spec, digest in wanted:
            by_partition.setdefault(self._layout.partition_uri(spec), set()).add(digest)
        for uri, digests in by_partition.items():
            try:
                segments = list_segments(self._storage.list(uri))
                self._crops[uri] = read_segments(self._storage, segments, digests)
            except Exception as exc:
                log.warning("cannot read the run's review crops at %s: %s", uri, exc)
        return sum(len(crops) for crops in self._crops.values())

    def get(self, spec: ImageSpec, digest: str) -> bytes | None:
        """The thumbnail the scorer made of the bytes hashing to ``digest``, or None."""
        found = self._crops.get(self._layout.partition_uri(spec), {}).get(digest)
        with self._lock:
            self.hits += found is not None
        return found


def input_crop(
    item: ReviewItem,
    storage: CacheStorage,
    model: ModelInfo,
    config: ReviewConfig,
    thumbnails: ThumbnailCache | None = None,
    run_crops: RunCrops | None = None,
) -> Picture:
    """The model's input for ``item``: the crop the scorer made of it (``run_crops``),
    else re-made from its image under the version's preprocessing contract
    (localization crop, resize; not normalised). Without a contract, the whole photo. A
    missing or undecodable image is a note, not a failure. With ``thumbnails``, the crop
    of the scored bytes is read from there when it was made before (no download), and
    kept there when it is made now or was made while scoring."""
    notes = [model.note] if model.note else []
    digest = item.content_sha256
    if run_crops is not None and model.spec is not None and digest:
        made = run_crops.get(model.spec, digest)
        if made is not None:
            if thumbnails is not None:
                thumbnails.put(model.spec, digest, made)  # a rescore finds it there
            return Picture(made, "; ".join(notes))
    if thumbnails is not None and model.spec is not None and digest:
        cached = thumbnails.get(model.spec, digest)
        if cached is not None:
            return Picture(cached, "; ".join(notes))
    try:
        data = storage.read(item.key)
    except Exception as exc:
        return Picture(None, f"image unavailable: {exc}")
    try:
        if model.spec is not None:
            pixels, _ = decode_located(
                data,
                model.spec,
                max_pixels=config.max_pixels,
                max_bytes=config.max_image_bytes,
                name=item.key,
            )
        else:
            pixels = whole_photo(data, config)
    except Exception as exc:
        return Picture(None, f"image cannot be decoded now: {exc}")
    jpeg = thumbnail_jpeg(pixels, config.thumb_px, config.jpeg_quality)
    if digest and hashlib.sha256(data).hexdigest() != digest:
        notes.append("the image changed since it was scored: this is the new one")
    elif thumbnails is not None and model.spec is not None and digest:
        thumbnails.put(model.spec, digest, jpeg)  # the scored bytes' crop only
    return Picture(jpeg, "; ".join(notes))


def whole_photo(data: bytes, config: ReviewConfig) -> np.ndarray:
    """The whole photo, its aspect kept (a model whose contract is unknown: no crop can be
    re-made). Refused over the scorer's size limits, like any image it reads."""
    if len(data) > config.max_image_bytes:
        raise ValueError(f"{len(data)} bytes, over the limit of {config.max_image_bytes}")
    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > config.max_pixels:
            raise ValueError(f"{image.width}x{image.height} pixels, over the limit")
        image.draft("RGB", (config.thumb_px, config.thumb_px))  # JPEG: decode at a fraction
        return np.asarray(image.convert("RGB"))
