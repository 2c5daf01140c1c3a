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
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import ClientError
from PIL import Image

from rxvision.errors import NotFound, RxVisionError
from rxvision.storage.s3 import S3Store, parse_s3_uri

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

Progress = Callable[[int, int], None]


class FeatureStoreError(RxVisionError):
    """A shard set cannot be built or read (the message names the file or key)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are stored: square RGB of ``img_size`` pixels, resized once."""

    img_size: int = 224
    resample: str = "bilinear"
    shard_size: int = 1000

    def config_hash(self) -> str:
        """A stable hash of the settings that change the stored pixels."""
        payload = json.dumps(
            {"v": FORMAT_VERSION, "img_size": self.img_size, "resample": self.resample},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShardRecord:
    """One shard of a set: its object key, and the path and label of each row."""

    key: str
    paths: list[str]
    labels: list[str]


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


def feature_key(snapshot_hash: str, config: PreprocessConfig) -> str:
    """The cache key of a (snapshot, preprocessing config) pair."""
    return f"{snapshot_hash[:16]}-{config.config_hash()}"


def load_resized(path: Path, img_size: int, resample: str = "bilinear") -> np.ndarray:
    """Decode one image as RGB and resize it to ``img_size`` square (uint8 HWC)."""
    method = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[resample]
    try:
        with Image.open(path) as img:
            # JPEG draft mode decodes at a reduced scale directly: much faster to resize.
            img.draft("RGB", (img_size, img_size))
            rgb = img.convert("RGB")
            return np.asarray(rgb.resize((img_size, img_size), method), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FeatureStoreError(f"{path}: cannot decode image: {exc}") from exc


def _load_batch(args: tuple[list[str], int, str]) -> np.ndarray:
    paths, img_size, resample = args
    return np.stack([load_resized(Path(p), img_size, resample) for p in paths])


class FeatureStore:
    """Build and read shard sets under an ``s3://bucket/prefix`` root."""

    def __init__(self, root_uri: str, store: S3Store | None = None) -> None:
        self.root_uri = root_uri.rstrip("/")
        self.s3 = store or S3Store()

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
        key = feature_key(snapshot_hash, config)
        found = self.manifest(key)
        if found is not None:
            log.info("feature store hit: %s (%d images)", self.prefix(key), found.images)
            return found, False
        rows = sorted(items) if items is not None else list_image_folder(data_dir)
        if not rows:
            raise FeatureStoreError(f"no images to preprocess under {data_dir}")
        attempt = uuid.uuid4().hex[:12]
        began = time.monotonic()
        shards = self._write_shards(data_dir, rows, key, attempt, config, workers, progress)
        manifest = FeatureManifest(
            key=key,
            snapshot_hash=snapshot_hash,
            config=asdict(config),
            classes=sorted({label for _, label in rows}),
            images=len(rows),
            shards=shards,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            attempt=attempt,
            extra={"seconds": round(time.monotonic() - began, 2)},
        )
        return self._commit(manifest), True

    def _write_shards(
        self,
        data_dir: Path,
        rows: list[tuple[str, str]],
        key: str,
        attempt: str,
        config: PreprocessConfig,
        workers: int,
        progress: Progress | None,
    ) -> list[ShardRecord]:
        chunks = [rows[i : i + config.shard_size] for i in range(0, len(rows), config.shard_size)]
        records, done = [], 0
        with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
            for index, chunk in enumerate(chunks):
                array = self._decode_chunk(pool, data_dir, chunk, config, workers)
                shard_key = f"attempts/{attempt}/shard-{index:05d}.npy"
                buf = io.BytesIO()
                np.save(buf, array, allow_pickle=False)
                self.s3.put_bytes(f"{self.prefix(key)}/{shard_key}", buf.getvalue())
                records.append(
                    ShardRecord(shard_key, [p for p, _ in chunk], [lbl for _, lbl in chunk])
                )
                done += len(chunk)
                if progress:
                    progress(done, len(rows))
                log.info("preprocess: %d/%d images", done, len(rows))
        return records

    def _decode_chunk(
        self,
        pool: ProcessPoolExecutor,
        data_dir: Path,
        chunk: list[tuple[str, str]],
        config: PreprocessConfig,
        workers: int,
    ) -> np.ndarray:
        paths = [str(data_dir / p) for p, _ in chunk]
        step = max(1, len(paths) // (workers * 4))
        jobs = [
            (paths[i : i + step], config.img_size, config.resample)
            for i in range(0, len(paths), step)
        ]
        return np.concatenate(list(pool.map(_load_batch, jobs)))

    def _commit(self, manifest: FeatureManifest) -> FeatureManifest:
        """Write the manifest only if none exists (S3 conditional put); a writer that
        loses the race drops its own attempt and returns the winner's manifest."""
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
        return manifest

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
        """Fetch a set's shards into ``cache_dir/<key>/`` (kept: later runs read locally)."""
        local = cache_dir / manifest.key
        paths = []
        for shard in manifest.shards:
            target = local / Path(shard.key).name
            if not target.is_file():
                self.s3.download_file(f"{self.prefix(manifest.key)}/{shard.key}", target)
            paths.append(target)
        return paths


def list_image_folder(data_dir: Path) -> list[tuple[str, str]]:
    """(relative path, label) of every image of an ImageFolder directory, sorted."""
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
    return sorted(
        (p.relative_to(data_dir).as_posix(), p.relative_to(data_dir).parts[0])
        for p in data_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and len(p.relative_to(data_dir).parts) > 1
    )


class FeatureShardDataset:
    """A map-style dataset over local shard files (memory-mapped), with a transform.

    ``transform`` takes an HWC uint8 array and returns the model input (e.g. an
    albumentations pipeline from ``rxvision.data.presets``); labels are class indices.
    """

    def __init__(
        self,
        manifest: FeatureManifest,
        shard_paths: Sequence[Path],
        transform: Callable[[np.ndarray], Any] | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.manifest = manifest
        self.class_to_idx = {c: i for i, c in enumerate(manifest.classes)}
        self.shard_paths = list(shard_paths)
        self.transform = transform
        self._arrays: list[np.ndarray | None] = [None] * len(self.shard_paths)
        self._rows = [
            (s, r, self.class_to_idx[label])
            for s, shard in enumerate(manifest.shards)
            for r, label in enumerate(shard.labels)
        ]
        if indices is not None:
            self._rows = [self._rows[i] for i in indices]

    def __len__(self) -> int:
        return len(self._rows)

    def _array(self, shard: int) -> np.ndarray:
        # Opened lazily in each DataLoader worker: memory maps do not survive pickling.
        array = self._arrays[shard]
        if array is None:
            array = np.load(self.shard_paths[shard], mmap_mode="r", allow_pickle=False)
            self._arrays[shard] = array
        return array

    def __getitem__(self, index: int) -> tuple[Any, int]:
        shard, row, label = self._rows[index]
        image = np.array(self._array(shard)[row])
        return (self.transform(image) if self.transform else image), label

    def labels(self) -> list[int]:
        """The class index of every row (for stratified splits and metrics)."""
        return [label for _, _, label in self._rows]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = [None] * len(self.shard_paths)
        return state
