"""The preprocessing feature store: each image decoded and resized once, into uint8 shards.

A shard set lives in S3 under a key derived from (snapshot content hash, preprocessing
config hash). The same key again is a cache hit and computes nothing. Writes are atomic:
shards go under a fresh ``attempts/<id>/`` prefix and the set is committed by writing
``manifest.json`` last, with a conditional put, so readers never see a half-written set
and two writers never overwrite each other. Training reads the shards (downloaded once
into a local cache and memory-mapped) and augments them on the fly.

A new snapshot's unchanged images are not decoded again: their rows are read in place
from a recent set's shards (``feature_references``), or copied from them
(``feature_reuse``) where a shard lost most of its rows or is under half full (so small
shards merge).
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from rxvision.data.feature_local import link_local_copy, local_shard_name
from rxvision.data.feature_manifest import (
    MANIFEST,
    USED_MARKER,
    FeatureManifest,
    PreprocessConfig,
    ShardRecord,
    feature_key,
)
from rxvision.data.feature_references import (
    NPY_HEAD_BYTES,
    ReferencePlan,
    StoredRows,
    plan_references,
    stored_rows_of,
)
from rxvision.data.feature_reuse import EarlierRows, RecentSets, rows_among
from rxvision.data.feature_rows import DecodedBatch, assembled, load_batch, reuse_mask
from rxvision.data.kept_folders import mark_used
from rxvision.data.layout import check_class_layout
from rxvision.data.source_image import SourceImage
from rxvision.errors import FeatureStoreError, NotFound
from rxvision.forkserver import worker_context
from rxvision.storage.s3 import S3Store, parse_s3_uri

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


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
        source = self.earlier_set(config, digests) if known else None
        plan = ReferencePlan([], rows)
        earlier = None
        if source is not None:
            plan = plan_references(rows, source, self._stored_rows(config), config.shard_size)
            earlier = self._rows_of(source)
        attempt = uuid.uuid4().hex[:12]
        began = time.monotonic()
        written, copied = self._write_shards(
            plan.rest, key, attempt, config, workers, progress, earlier, len(rows) - len(plan.rest)
        )
        extra: dict[str, Any] = {
            "seconds": round(time.monotonic() - began, 2),
            "reused": copied + plan.rows,
            "read_in_place": plan.rows,
        }
        if earlier is not None:
            extra["reused_from"] = earlier.set_key
        shards = plan.shards + written
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
        """The rows of ``earlier_set``, read by sha256 (None: there is none)."""
        manifest = self.earlier_set(config, wanted)
        return self._rows_of(manifest) if manifest is not None else None

    def earlier_set(
        self, config: PreprocessConfig, wanted: Collection[str] = ()
    ) -> FeatureManifest | None:
        """The recent set committed with ``config`` that holds the most of the ``wanted``
        sha256 (the newest on a tie; None: there is none, or they were deleted since).
        The newest alone would do but for an ad-hoc build of a few images, after which
        the next night would decode nearly everything again."""
        recent = self.recent.keys(config.config_hash())
        found = [m for m in map(self._readable_manifest, recent) if m is not None]
        candidates = [m for m in found if m.spec == config.spec]
        if not candidates:
            return None
        wanted = set(wanted)
        manifest = max(candidates, key=lambda m: rows_among(m.shards, wanted))
        log.info("reusing unchanged images' rows of %s", self.prefix(manifest.key))
        return manifest

    def _readable_manifest(self, key: str) -> FeatureManifest | None:
        """``manifest``, or None with a warning when this version cannot read it: a set
        another version wrote is no reason to fail a night, only one to reuse nothing."""
        try:
            return self.manifest(key)
        except FeatureStoreError as exc:
            log.warning("not reusing %s: %s", self.prefix(key), exc)
            return None

    def object_uri(self, manifest: FeatureManifest, shard: ShardRecord) -> str:
        """The URI of the array ``shard`` (of ``manifest``) reads."""
        return f"{self.root_uri}/{manifest.object_key(shard)}"

    def _rows_of(self, manifest: FeatureManifest) -> EarlierRows:
        return EarlierRows(
            manifest.key,
            manifest.shards,
            lambda shard: self.s3.get_bytes(self.object_uri(manifest, shard)),
        )

    def _stored_rows(self, config: PreprocessConfig) -> StoredRows:
        """How many rows of ``config``'s shape the array at a key holds (None: not one)."""
        row_shape = (config.img_size, config.img_size, 3)

        def stored_rows(object_key: str) -> int | None:
            uri = f"{self.root_uri}/{object_key}"
            try:
                head, size = self.s3.get_head(uri, NPY_HEAD_BYTES)
            except (NotFound, ClientError) as exc:
                log.warning("%s: cannot be read in place (%s); its rows are copied", uri, exc)
                return None
            rows = stored_rows_of(head, size, row_shape)
            if rows is None:
                log.warning("%s: not a whole %s shard; its rows are copied", uri, row_shape)
            return rows

        return stored_rows

    def _write_shards(
        self,
        rows: list[SourceImage],
        key: str,
        attempt: str,
        config: PreprocessConfig,
        workers: int,
        progress: Progress | None,
        earlier: EarlierRows | None = None,
        already: int = 0,
    ) -> tuple[list[ShardRecord], int]:
        """Write ``rows`` into new shards: (their records, how many rows were copied from
        ``earlier``). ``already``: rows of the set read in place, counted in progress."""
        total = already + len(rows)
        if not rows:
            if progress:
                progress(total, total)
            return [], 0
        chunks = [rows[i : i + config.shard_size] for i in range(0, len(rows), config.shard_size)]
        records: list[ShardRecord] = []
        reused, done = 0, already
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
                    progress(done, total)
                log.info("preprocess: %d/%d images (%d copied)", done, total, reused)

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
        body = manifest.to_bytes()
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
        then mark the folder used (``USED_MARKER``: what ``prune_used_last`` keeps by).
        An object read in place from an earlier set is linked from that set's download
        when there is one: the next night's training downloads only the new shards."""
        local = cache_dir / manifest.key
        paths = []
        for shard in manifest.shards:
            target = local / local_shard_name(manifest, shard)
            if not target.is_file() and not link_local_copy(cache_dir, manifest, shard, target):
                self.s3.download_file(self.object_uri(manifest, shard), target)
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
