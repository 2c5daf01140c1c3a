"""The preprocessing feature store: each image decoded and resized once, into uint8 shards.

A shard set lives in S3 under a key derived from (snapshot content hash, preprocessing
config hash). The same key again is a cache hit and computes nothing. Writes are atomic:
shards go under a fresh ``attempts/<id>/`` prefix and the set is committed by writing
``manifest.json`` last, with a conditional put, so readers never see a half-written set
and two writers never overwrite each other. Training reads the shards (downloaded once
into a local cache and memory-mapped) and augments them on the fly.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from rxvision.data.feature_reuse import EarlierRows, RecentSets, rows_among
from rxvision.data.feature_rows import DecodedBatch, assembled, load_batch, reuse_mask
from rxvision.data.imaging import (
    ImageSpec,
    Resample,
)
from rxvision.data.kept_folders import mark_used
from rxvision.data.layout import check_class_layout
from rxvision.data.localize import CropSpec
from rxvision.data.source_image import SourceImage
from rxvision.errors import FeatureStoreError, NotFound
from rxvision.forkserver import worker_context
from rxvision.storage.s3 import S3Store, parse_s3_uri

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# in a downloaded set's local folder, once every shard is there: touched at each use
USED_MARKER = ".used"
# 2: rows carry their content hashes (sha256, perceptual) for content-based splits
# 3: the perceptual hash is of the whole photo, not of the (cropped, masked) model input
FORMAT_VERSION = 3

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are stored: ``rxvision.data.imaging.load_image`` at ``img_size`` px
    (the model's preprocessing contract), ``shard_size`` images per shard."""

    img_size: int = 224
    resample: Resample = "bilinear"
    shard_size: int = 1000
    crop: CropSpec | None = None

    @property
    def spec(self) -> ImageSpec:
        """The image spec every stored image follows."""
        return ImageSpec(img_size=self.img_size, resample=self.resample, crop=self.crop)

    @classmethod
    def for_spec(cls, spec: ImageSpec, shard_size: int = 1000) -> PreprocessConfig:
        """The store config that materializes images as ``spec`` says."""
        return cls(
            img_size=spec.img_size, resample=spec.resample, shard_size=shard_size, crop=spec.crop
        )

    def config_hash(self) -> str:
        """A stable hash of the settings that change the stored pixels and rows."""
        payload = json.dumps({"v": FORMAT_VERSION, "spec": self.spec.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShardRecord:
    """One shard of a set: its object key, and the path and label of each row."""

    key: str
    paths: list[str]
    labels: list[str]
    # content hashes of each row: file sha256 and 64-bit perceptual hash (16 hex digits)
    sha256: list[str] = field(default_factory=list)
    phash: list[str] = field(default_factory=list)
    # each row's pill localization: localized, a fallback reason, or disabled
    located: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FeatureManifest:
    """A committed shard set."""

    key: str
    snapshot_hash: str
    config: dict[str, Any]
    classes: list[str]
    images: int
    shards: list[ShardRecord]
    created: str
    attempt: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureManifest:
        """Read a ``manifest.json``."""
        shards = [ShardRecord(**s) for s in data["shards"]]
        return cls(**{**data, "shards": shards})

    @property
    def spec(self) -> ImageSpec:
        """The image spec of the stored pixels (refused when the set predates it)."""
        return ImageSpec.from_dict(self.config.get("spec") or {}, source=f"feature set {self.key}")


def feature_key(snapshot_hash: str, config: PreprocessConfig) -> str:
    """The cache key of a (snapshot, preprocessing config) pair."""
    return f"{snapshot_hash[:16]}-{config.config_hash()}"


class FeatureStore:
    """Build and read shard sets under an ``s3://bucket/prefix`` root."""

    def __init__(self, root_uri: str, store: S3Store | None = None) -> None:
        self.root_uri = root_uri.rstrip("/")
        self.s3 = store or S3Store()
        self.recent = RecentSets(self.root_uri, self.s3)

    def prefix(self, key: str) -> str:
        """The URI of one shard set."""
        return f"{self.root_uri}/{key}"

    def manifest(self, key: str) -> FeatureManifest | None:
        """The committed manifest of ``key``, or None (not built, or interrupted)."""
        try:
            data = self.s3.get_bytes(f"{self.prefix(key)}/{MANIFEST}")
        except NotFound:
            return None
        return FeatureManifest.from_json(json.loads(data))

    def materialize(
        self,
        data_dir: Path,
        snapshot_hash: str,
        config: PreprocessConfig,
        items: Sequence[tuple[str, str]] | None = None,
        workers: int = 2,
        progress: Progress | None = None,
    ) -> tuple[FeatureManifest, bool]:
        """Build the shard set for a pulled snapshot unless it exists; return it and
        whether it was built now (False: a cache hit, nothing computed).

        ``items`` are (relative path, label) pairs; by default every image of the
        ImageFolder ``data_dir``.
        """
        found = self.manifest(feature_key(snapshot_hash, config))
        if found is not None:
            log.info("feature store hit: %s (%d images)", found.key, found.images)
            return found, False
        rows = sorted(items) if items is not None else list_image_folder(data_dir)
        if not rows:
            raise FeatureStoreError(f"no images to preprocess under {data_dir}")
        images = [SourceImage.whole_file(data_dir, path, label) for path, label in rows]
        return self.materialize_images(images, snapshot_hash, config, workers, progress)

    def materialize_images(
        self,
        images: Sequence[SourceImage],
        snapshot_hash: str,
        config: PreprocessConfig,
        workers: int = 2,
        progress: Progress | None = None,
        reuse: bool = True,
    ) -> tuple[FeatureManifest, bool]:
        """``materialize`` of images wherever their bytes lie (files, or the members of
        a fetched snapshot's shards, read in place: ``SnapshotStore.fetched``), stored in
        path order. With ``reuse``, an image whose ``sha256`` is known and matches a row of
        the newest set built with ``config`` is copied from it, not decoded
        (``rxvision.data.feature_reuse``)."""
        key = feature_key(snapshot_hash, config)
        found = self.manifest(key)
        if found is not None:
            log.info("feature store hit: %s (%d images)", self.prefix(key), found.images)
            return found, False
        rows = sorted(images, key=lambda image: image.path)
        if not rows:
            raise FeatureStoreError(f"no images to preprocess for snapshot {snapshot_hash}")
        # rows are matched by the sha256 an image must have: files of a folder carry none
        known = reuse and any(image.sha256 for image in rows)
        digests = {image.sha256 for image in rows if image.sha256}
        earlier = self.earlier_rows(config, digests) if known else None
        attempt = uuid.uuid4().hex[:12]
        began = time.monotonic()
        shards, reused = self._write_shards(rows, key, attempt, config, workers, progress, earlier)
        extra: dict[str, Any] = {"seconds": round(time.monotonic() - began, 2), "reused": reused}
        if earlier is not None:
            extra["reused_from"] = earlier.set_key
        manifest = FeatureManifest(
            key=key,
            snapshot_hash=snapshot_hash,
            config={"spec": config.spec.to_dict(), "shard_size": config.shard_size},
            classes=sorted({image.label for image in rows}),
            images=len(rows),
            shards=shards,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            attempt=attempt,
            extra=extra,
        )
        return self._commit(manifest, config), True

    def earlier_rows(
        self, config: PreprocessConfig, wanted: Collection[str] = ()
    ) -> EarlierRows | None:
        """The rows of the recent set committed with ``config`` that holds the most of
        the ``wanted`` sha256 (the newest on a tie; None: there is none, or they were
        deleted since). The newest alone would do but for an ad-hoc build of a few
        images, after which the next night would decode nearly everything again."""
        recent = self.recent.keys(config.config_hash())
        found = [m for m in map(self.manifest, recent) if m is not None]
        candidates = [m for m in found if m.spec == config.spec]
        if not candidates:
            return None
        wanted = set(wanted)
        manifest = max(candidates, key=lambda m: rows_among(m.shards, wanted))
        log.info("reusing unchanged images' rows of %s", self.prefix(manifest.key))
        base = self.prefix(manifest.key)
        return EarlierRows(
            manifest.key, manifest.shards, lambda shard: self.s3.get_bytes(f"{base}/{shard}")
        )

    def _write_shards(
        self,
        rows: list[SourceImage],
        key: str,
        attempt: str,
        config: PreprocessConfig,
        workers: int,
        progress: Progress | None,
        earlier: EarlierRows | None = None,
    ) -> tuple[list[ShardRecord], int]:
        chunks = [rows[i : i + config.shard_size] for i in range(0, len(rows), config.shard_size)]
        records: list[ShardRecord] = []
        reused, done = 0, 0
        # uploads run beside the next shard's assembly (two in flight, ~28 MB each at
        # 96 px): with rows reused, S3 round trips are most of a build's time
        uploading: deque[tuple[Future[None], int]] = deque()

        def uploaded(keep: int) -> None:
            nonlocal done
            while len(uploading) > keep:
                future, count = uploading.popleft()
                future.result()
                done += count
                if progress:
                    progress(done, len(rows))
                log.info("preprocess: %d/%d images (%d reused)", done, len(rows), reused)

        # forkserver workers: none inherits this process's threads (an OpenCV pool, boto3),
        # and each runs one OpenCV thread (rxvision.pool_worker), as many workers as cores
        context = worker_context(["rxvision.data.feature_rows"])
        with (
            ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context) as pool,
            ThreadPoolExecutor(max_workers=2) as uploads,
        ):

            def submit(chunk: list[SourceImage]) -> tuple[list[Future[DecodedBatch]], list[bool]]:
                mask = reuse_mask(chunk, earlier)
                fresh = [image for image, reuse in zip(chunk, mask, strict=True) if not reuse]
                return self._submit_chunk(pool, fresh, config, workers), mask

            # the next shard is decoding while this one is saved and uploaded: the workers
            # never wait for S3, nor for the slowest piece of a shard
            ahead = deque(submit(c) for c in chunks[:2])
            for index, chunk in enumerate(chunks):
                futures, mask = ahead.popleft()
                parts = [f.result() for f in futures]
                if index + 2 < len(chunks):
                    ahead.append(submit(chunks[index + 2]))
                decoded, copied = assembled(chunk, mask, parts, earlier, config.spec)
                reused += copied
                shard_key = f"attempts/{attempt}/shard-{index:05d}.npy"
                buf = io.BytesIO()
                np.save(buf, decoded.pixels, allow_pickle=False)
                uri = f"{self.prefix(key)}/{shard_key}"
                uploading.append(
                    (uploads.submit(self.s3.put_bytes, uri, buf.getvalue()), len(chunk))
                )
                records.append(
                    ShardRecord(
                        shard_key,
                        [image.path for image in chunk],
                        [image.label for image in chunk],
                        decoded.sha256,
                        decoded.phash,
                        decoded.located,
                    )
                )
                uploaded(keep=2)
            uploaded(keep=0)
        return records, reused

    def _submit_chunk(
        self,
        pool: ProcessPoolExecutor,
        chunk: list[SourceImage],
        config: PreprocessConfig,
        workers: int,
    ) -> list[Future[DecodedBatch]]:
        step = max(1, len(chunk) // (workers * 4))
        spec = config.spec.to_dict()
        starts = range(0, len(chunk), step)
        return [pool.submit(load_batch, (chunk[i : i + step], spec)) for i in starts]

    def _commit(self, manifest: FeatureManifest, config: PreprocessConfig) -> FeatureManifest:
        """Write the manifest only if none exists (S3 conditional put); a writer that
        loses the race drops its own attempt and returns the winner's manifest. The
        committed set becomes the newest of ``config`` (whose rows a later build reuses)."""
        bucket, key = parse_s3_uri(f"{self.prefix(manifest.key)}/{MANIFEST}")
        body = json.dumps(asdict(manifest), indent=1).encode()
        try:
            self.s3.client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code not in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                raise
            winner = self.manifest(manifest.key)
            if winner is None:
                raise FeatureStoreError(f"manifest of {manifest.key} vanished") from exc
            if winner.attempt != manifest.attempt:
                self.s3.delete_prefix(f"{self.prefix(manifest.key)}/attempts/{manifest.attempt}/")
            return winner
        self._drop_stale_attempts(manifest)
        self.mark_newest(manifest, config)
        return manifest

    def mark_newest(self, manifest: FeatureManifest, config: PreprocessConfig) -> None:
        """Make ``manifest`` the set whose rows the next build with ``config`` reuses
        (each commit does; after deleting a set, point back at the one before)."""
        self.recent.mark_newest(manifest.key, config.config_hash())

    def _drop_stale_attempts(self, manifest: FeatureManifest) -> None:
        # Interrupted earlier attempts are invisible (no manifest names them): clean up.
        keep = f"attempts/{manifest.attempt}/"
        base = self.prefix(manifest.key) + "/"
        stale = {
            k.split("/attempts/", 1)[1].split("/", 1)[0]
            for k in self.s3.list_keys(f"{base}attempts/")
            if keep not in k
        }
        for attempt in stale:
            self.s3.delete_prefix(f"{base}attempts/{attempt}/")

    def download(self, manifest: FeatureManifest, cache_dir: Path) -> list[Path]:
        """Fetch a set's shards into ``cache_dir/<key>/`` (kept: later runs read locally),
        then mark the folder used (``USED_MARKER``: what ``prune_used_last`` keeps by)."""
        local = cache_dir / manifest.key
        paths = []
        for shard in manifest.shards:
            target = local / Path(shard.key).name
            if not target.is_file():
                self.s3.download_file(f"{self.prefix(manifest.key)}/{shard.key}", target)
            paths.append(target)
        local.mkdir(parents=True, exist_ok=True)  # a set of no shard is still a set
        mark_used(local, USED_MARKER)
        return paths


def list_image_folder(data_dir: Path) -> list[tuple[str, str]]:
    """(relative path, label) of every image of an ImageFolder directory, sorted; a
    ``DIR/<split>/<class>`` layout is refused (``DataLayoutError``)."""
    check_class_layout(data_dir)
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
    return sorted(
        (p.relative_to(data_dir).as_posix(), p.relative_to(data_dir).parts[0])
        for p in data_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and len(p.relative_to(data_dir).parts) > 1
    )
