"""The batch scorer: images in S3 (or a folder) in, Parquet predictions out.

A run has three steps, which the CLI runs in one process and the scoring DAG runs as
tasks (one mapped task per shard):

1. ``plan_shards``: list the input (sorted keys, image suffixes only), cut it into
   shards of ``shard_size`` keys (``shard-00000``, ...). The plan is saved as
   ``OUTPUT/_plan.json`` by the first run (with the time it was made and, from the DAG,
   the pinned model versions); reruns reuse it, so files arriving later never move a key
   from one shard to another. A missing input folder, or an input with no image, is
   ``NoInputImages`` (nothing written) unless ``allow_empty``.
2. ``score_shard``: download with a bounded thread pool (``download_workers`` threads,
   at most ``max_in_flight`` images ahead of the model), decode, preprocess with the
   model's ``EvalPreset``, batch, score. Rows go to ``OUTPUT/_tmp/<shard>.<token>.parquet``
   and are then committed to ``OUTPUT/shards/<shard>.parquet``; a committed shard is
   skipped by a rerun, so a key is never written twice. An unreadable image becomes a
   row with ``error`` set; it never stops the batch.
3. ``finalize_scoring``: once every planned shard is committed, write
   ``OUTPUT/_manifest.json`` (shards, row counts, merged metrics) and ``_SUCCESS`` last.

The primary model sits behind a circuit breaker (``rxvision.serving.circuit``): when its
error rate over a sliding window passes the threshold, the ``fallback`` alias scores
instead. When it cannot be loaded, the fallback scores only if the caller allows it
(``fallback_on_load_failure``: the CLI, or an Airflow task's last try); otherwise
``PrimaryUnavailable`` is raised with nothing committed, so a transient failure (a
download timeout) is retried rather than committing a whole shard scored by the
fallback. Rows say which model scored them (``scored_by``, ``model_version``) and why
the fallback did (``fallback_reason``); an alert metric goes to statsd.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict, Field

from rxvision.config.load import load_config, validate_config
from rxvision.data.imaging import ImageDecodeError, ImageSpec, decode_located
from rxvision.data.localize import DISABLED, LOCALIZED
from rxvision.errors import ConfigError, NotFound, RxVisionError
from rxvision.home import repo_root
from rxvision.serving.batch_tuning import BatchSizeChoice, BatchTuningConfig, choose_batch_size
from rxvision.serving.cache import (
    CacheConfig,
    CachePartition,
    InferenceCache,
    RowContract,
    content_hash,
    open_cache,
)
from rxvision.serving.calibration import softmax
from rxvision.serving.circuit import CircuitBreaker, CircuitConfig
from rxvision.serving.metrics import ScoringMetrics, StatsdSink
from rxvision.serving.model import (
    FP32_TOLERANCE,
    IMAGE_SUFFIXES,
    LoadedModel,
    Predictor,
    PredictorOptions,
    load_model,
    resolve_device,
    resolve_model,
    select_predictor,
)
from rxvision.serving.processed import list_tagged
from rxvision.serving.review_gallery import review_summary
from rxvision.storage.s3 import S3Store, parse_s3_uri

log = logging.getLogger(__name__)

DEFAULT_CONFIG = repo_root() / "configs" / "serving.yaml"
PRIMARY, FALLBACK = "primary", "fallback"
# a fallback reason repeats on every row of a shard: the exception text, cut to this
REASON_CHARS = 500
MISSING = "missing"
DOWNLOAD_FAILED = "download_failed"
MODEL_ERROR = "model_error"
NON_FINITE = "non_finite_logits"

PREDICTION_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float32()),
        ("topk_labels", pa.list_(pa.string())),
        ("topk_probs", pa.list_(pa.float32())),
        ("model_version", pa.string()),
        ("needs_review", pa.bool_()),
        ("error", pa.string()),
        ("scored_by", pa.string()),
        ("runtime", pa.string()),
        ("shard_id", pa.string()),
        # the model's contract crops the pill: whether one was found (False: the whole
        # frame was scored); null when the model scores whole frames by design
        ("localized", pa.bool_()),
        ("localization", pa.string()),
        # why the fallback scored this row (the primary failed to load, the breaker was
        # open, or the primary failed on this image); null when the primary scored it
        ("fallback_reason", pa.string()),
        # sha256 of the bytes scored (null when they could not be read)
        ("content_sha256", pa.string()),
        # served from the inference cache (rxvision.serving.cache), not scored this run
        ("cached", pa.bool_()),
    ]
)


class ScoringError(RxVisionError):
    """A shard cannot be scored (no model loads) or a run is not complete."""

    exit_code = 9


class PrimaryUnavailable(ScoringError):
    """The primary model cannot be loaded and this try may not fall back: nothing is
    committed, and the task's retry loads it again."""


class NoInputImages(NotFound):
    """The input folder does not exist, or the input holds no image (a path typo must
    not look like a night with no images)."""


# --- config ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatsdSettings(_Strict):
    """Where metrics go; ``null`` host or port: ``STATSD_HOST``/``STATSD_PORT``."""

    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    prefix: str = "rxvision.scoring"


Runtime = Literal["onnxruntime-int8", "onnxruntime", "torchscript", "eager"]


def _default_runtimes() -> list[Runtime]:
    return ["onnxruntime", "torchscript", "eager"]


class ScoringConfig(_Strict):
    """The batch scorer (``configs/serving.yaml``)."""

    model_uri: str = "models:/rxvision-pill-classifier@champion"
    fallback_uri: str | None = None  # null: models:/<name>@<fallback_alias> of the primary
    fallback_alias: str = "fallback"
    tracking_uri: str | None = None
    shard_size: int = Field(500, ge=1)
    # at most this many shards per run (each a mapped Airflow task: Airflow refuses to
    # map more than max_map_length, 1,024 by default); a larger input gets larger shards
    max_shards: int = Field(512, ge=1)
    # null: the size tuned at export for the runtime and device that score (a version
    # tag, rxvision.serving.batch_tuning), else 32; a number overrides the tuned size
    batch_size: int | None = Field(None, ge=1)
    download_workers: int = Field(8, ge=1, le=256)
    max_in_flight: int = Field(64, ge=1)
    top_k: int = Field(5, ge=1)
    # test-time augmentation: average the calibrated probabilities of the image turned by
    # 0, 90, 180 and 270 degrees (4), or score it once (1); costs that many model calls
    tta_rotations: Literal[1, 2, 4] = 1
    # null: the model's own (chosen for a precision on its validation split)
    review_threshold: float | None = Field(None, ge=0, le=1)
    runtimes: list[Runtime] = Field(default_factory=_default_runtimes)
    probe_runtimes: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    parity_tolerance: float = Field(FP32_TOLERANCE, gt=0)
    suffixes: list[str] = Field(default_factory=lambda: list(IMAGE_SUFFIXES))
    max_image_bytes: int = Field(64 * 1024 * 1024, ge=1)
    max_pixels: int = Field(50_000_000, ge=1)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    batch_tuning: BatchTuningConfig = Field(default_factory=BatchTuningConfig)
    statsd: StatsdSettings = Field(default_factory=StatsdSettings)


def load_scoring_config(
    path: Path | str | None = None, overrides: list[str] | None = None
) -> ScoringConfig:
    """``configs/serving.yaml`` (or ``path``) with overrides; defaults without a file."""
    if path is None and not DEFAULT_CONFIG.is_file():
        return validate_config({}, ScoringConfig, overrides, source="serving defaults")
    return load_config(path or DEFAULT_CONFIG, ScoringConfig, overrides)


# --- storage: S3 or a local folder, by the URI's form ------------------------------------


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for S3 URIs and local paths alike."""
    return "/".join([root.rstrip("/"), *parts])


def normalize_uri(uri: str) -> str:
    """An S3 URI without a trailing slash, or an absolute local path: one spelling per
    location, so that keys and plans compare equal across runs."""
    if uri.startswith("s3://"):
        parse_s3_uri(uri)
        return uri.rstrip("/")
    return str(Path(uri.removeprefix("file://")).expanduser().resolve())


class Storage:
    """The few object operations scoring needs, on ``s3://`` URIs or local paths."""

    def __init__(self, s3: S3Store | None = None) -> None:
        self._s3 = s3

    @property
    def s3(self) -> S3Store:
        """The S3 client wrapper (built on first use)."""
        if self._s3 is None:
            self._s3 = S3Store()
        return self._s3

    def list(self, root: str) -> list[str]:
        """Every object under ``root`` (a prefix or a folder), sorted, as full URIs/paths."""
        if root.startswith("s3://"):
            bucket, prefix = parse_s3_uri(root)
            prefix = f"{prefix.rstrip('/')}/" if prefix else ""
            return sorted(
                f"s3://{bucket}/{key}" for key in self.s3.list_keys(f"s3://{bucket}/{prefix}")
            )
        folder = Path(root)
        if not folder.is_dir():
            return []
        return sorted(str(p) for p in folder.rglob("*") if p.is_file())

    def read(self, uri: str) -> bytes:
        """An object's bytes; ``NotFound`` when missing."""
        if uri.startswith("s3://"):
            return self.s3.get_bytes(uri)
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no such file: {uri}") from exc

    def write(self, uri: str, data: bytes) -> None:
        """Write an object (local files through a temporary name: never half-written)."""
        if uri.startswith("s3://"):
            self.s3.put_bytes(uri, data)
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def read_tagged(self, uri: str) -> tuple[bytes, str] | None:
        """An object's bytes and its version tag (the S3 ETag; a content hash locally),
        for ``write_if``; None when it does not exist."""
        if uri.startswith("s3://"):
            from botocore.exceptions import ClientError

            bucket, key = parse_s3_uri(uri)
            try:
                got = self.s3.client.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise
            return bytes(got["Body"].read()), str(got["ETag"])
        path = Path(uri)
        if not path.is_file():
            return None
        data = path.read_bytes()
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, uri: str, data: bytes, match: str | None) -> bool:
        """Write ``data`` only if the object is still the version ``read_tagged`` saw
        (``match``; None: only if it does not exist). False when another writer came
        first. On S3 a conditional PUT (If-Match / If-None-Match: the store decides,
        atomically); locally under an exclusive lock on a sibling ``.lock`` file."""
        if uri.startswith("s3://"):
            return self._s3_write_if(uri, data, match)
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = self.read_tagged(uri)
            if (found[1] if found else None) != match:
                return False
            self.write(uri, data)
            return True

    def _s3_write_if(self, uri: str, data: bytes, match: str | None) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = parse_s3_uri(uri)
        condition = {"IfMatch": match} if match is not None else {"IfNoneMatch": "*"}
        try:
            self.s3.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except ClientError as exc:
            # 412: the object changed (or appeared) since it was read; 409: a concurrent
            # conditional write is in flight
            if _error_code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return False
            raise
        return True

    def delete(self, uri: str) -> None:
        """Delete one object (no error when it is already gone)."""
        if uri.startswith("s3://"):
            bucket, key = parse_s3_uri(uri)
            self.s3.client.delete_object(Bucket=bucket, Key=key)
            return
        Path(uri).unlink(missing_ok=True)

    def exists(self, uri: str) -> bool:
        """Whether an object exists."""
        return self.s3.exists(uri) if uri.startswith("s3://") else Path(uri).is_file()

    def move(self, src: str, dst: str) -> None:
        """Commit ``src`` as ``dst``: an S3 server-side copy (the object appears whole)
        then delete, or an atomic rename on a local disk."""
        if src.startswith("s3://"):
            src_bucket, src_key = parse_s3_uri(src)
            dst_bucket, dst_key = parse_s3_uri(dst)
            self.s3.client.copy_object(
                Bucket=dst_bucket, Key=dst_key, CopySource={"Bucket": src_bucket, "Key": src_key}
            )
            self.s3.client.delete_object(Bucket=src_bucket, Key=src_key)
            return
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)

    def delete_prefix(self, root: str) -> int:
        """Delete everything under ``root``; return how many objects."""
        if root.startswith("s3://"):
            return self.s3.delete_prefix(f"{root.rstrip('/')}/")
        found = self.list(root)
        for path in found:
            Path(path).unlink(missing_ok=True)
        return len(found)


def _error_code(exc: Any) -> str:
    """A botocore ``ClientError``'s error code (``NoSuchKey``, ``PreconditionFailed``)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


# --- shards ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """A fixed set of input keys scored and committed together. ``tags``: each S3 key's
    ``etag:size`` from the listing (parallel to ``keys``; empty for local input), with
    which the inference cache serves an unchanged object without downloading it."""

    shard_id: str
    keys: tuple[str, ...]
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """For the plan file and Airflow's XCom."""
        data: dict[str, Any] = {"shard_id": self.shard_id, "keys": list(self.keys)}
        if self.tags:
            data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shard:
        """From ``to_json`` (plans saved before tags have none)."""
        keys = tuple(str(k) for k in data["keys"])
        tags = tuple(str(t) for t in data.get("tags") or ())
        return cls(str(data["shard_id"]), keys, tags if len(tags) == len(keys) else ())

    def source_tags(self) -> dict[str, str]:
        """key -> listing tag, for the keys that have one."""
        return {k: t for k, t in zip(self.keys, self.tags, strict=False) if t}


def shard_id(index: int) -> str:
    """``shard-00042``."""
    return f"shard-{index:05d}"


def _is_input_image(uri: str, root: str, suffixes: Sequence[str]) -> bool:
    relative = uri[len(root.rstrip("/")) + 1 :]
    hidden = any(part.startswith((".", "_")) for part in relative.split("/"))
    return not hidden and uri.lower().endswith(tuple(s.lower() for s in suffixes))


def list_input_shards(
    input_uri: str,
    shard_size: int,
    *,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    storage: Storage | None = None,
    keys: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    max_shards: int | None = None,
) -> list[Shard]:
    """The input's images in key order, ``shard_size`` per shard (more when that would
    make over ``max_shards`` shards: the count stays bounded, the size grows): the same
    input always gives the same shards. Hidden (``.``/``_``) names and other suffixes are skipped.
    ``keys``: the candidates (full URIs: e.g. only what is new, ``rxvision.serving.
    processed``) with their listing ``tags``, default every object listed under the
    input (an S3 listing's ETag and size come with each key at no extra request).
    ``NoInputImages`` when a local input folder does not exist (a path typo)."""
    if shard_size < 1:
        raise ConfigError(f"shard_size must be at least 1, got {shard_size}")
    storage = storage or Storage()
    input_uri = normalize_uri(input_uri)
    if not input_uri.startswith("s3://") and not Path(input_uri).is_dir():
        raise NoInputImages(f"input folder {input_uri} does not exist")
    if keys is None and input_uri.startswith("s3://"):
        tags = list_tagged(input_uri, storage)
        keys = list(tags)
    listed = storage.list(input_uri) if keys is None else sorted(keys)
    keys = [u for u in listed if _is_input_image(u, input_uri, suffixes)]
    # only S3 tags name the bytes (the ETag); a local file's mtime and size do not
    known = {k: t for k, t in (tags or {}).items() if k.startswith("s3://")}
    if max_shards is not None and len(keys) > shard_size * max_shards:
        shard_size = -(-len(keys) // max_shards)  # ceil: exactly max_shards or fewer
    shards = []
    for i, start in enumerate(range(0, len(keys), shard_size)):
        chunk = tuple(keys[start : start + shard_size])
        chunk_tags = tuple(known.get(k, "") for k in chunk) if known else ()
        shards.append(Shard(shard_id(i), chunk, chunk_tags))
    log.info("%s: %d images in %d shards of <= %d", input_uri, len(keys), len(shards), shard_size)
    return shards


def read_plan(output_uri: str, storage: Storage | None = None) -> dict[str, Any] | None:
    """``OUTPUT/_plan.json`` as saved by ``plan_shards``; None before the first plan."""
    storage = storage or Storage()
    plan_uri = join(normalize_uri(output_uri), "_plan.json")
    if not storage.exists(plan_uri):
        return None
    return dict(json.loads(storage.read(plan_uri)))


def planned_shard(output_uri: str, shard: str, storage: Storage | None = None) -> Shard:
    """One shard of the run's saved plan (``OUTPUT/_plan.json``): what a mapped scoring
    task scores, so its Airflow input carries the shard's id, never its keys."""
    plan = read_plan(output_uri, storage)
    if plan is None:
        raise ScoringError(f"{output_uri} has no _plan.json: run plan_shards first")
    for data in plan["shards"]:
        if data["shard_id"] == shard:
            return Shard.from_json(data)
    raise ScoringError(f"{output_uri}/_plan.json has no shard {shard}")


def plan_time(plan: Mapping[str, Any]) -> datetime:
    """When a plan was made (``planned_at``; ``created`` for plans saved before it)."""
    raw = str(plan.get("planned_at") or plan["created"])
    stamp = datetime.fromisoformat(raw)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def plan_shards(
    input_uri: str,
    output_uri: str,
    shard_size: int,
    *,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    storage: Storage | None = None,
    allow_empty: bool = False,
    record: Mapping[str, Any] | None = None,
    keys: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    max_shards: int | None = None,
) -> list[Shard]:
    """The run's shards: read from ``OUTPUT/_plan.json`` when a run already planned
    them (same input and shard size), else listed (or cut from ``keys``, see
    ``list_input_shards``) and saved there with ``record`` (e.g. the pinned models) and
    the time. No image: ``NoInputImages`` before anything is written, unless
    ``allow_empty`` (then an empty plan)."""
    storage = storage or Storage()
    input_uri, output_uri = normalize_uri(input_uri), normalize_uri(output_uri)
    plan = read_plan(output_uri, storage)
    if plan is not None:
        if plan["input_uri"] != input_uri or plan["shard_size"] != shard_size:
            raise ConfigError(
                f"{output_uri} holds a run of input {plan['input_uri']} with shard_size "
                f"{plan['shard_size']}, not {input_uri} with {shard_size}: choose a new output"
            )
        shards = [Shard.from_json(s) for s in plan["shards"]]
        _check_not_empty(shards, input_uri, allow_empty)
        return shards
    shards = list_input_shards(
        input_uri,
        shard_size,
        suffixes=suffixes,
        storage=storage,
        keys=keys,
        tags=tags,
        max_shards=max_shards,
    )
    _check_not_empty(shards, input_uri, allow_empty)
    now = datetime.now(UTC)
    plan = {
        "input_uri": input_uri,
        "shard_size": shard_size,
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        # orders runs (latest.json never moves to an older plan): microseconds, so two
        # runs planned in the same second still compare
        "planned_at": now.isoformat(timespec="microseconds"),
        **(record or {}),
        "shards": [s.to_json() for s in shards],
    }
    storage.write(join(output_uri, "_plan.json"), json.dumps(plan).encode())
    return shards


def _check_not_empty(shards: Sequence[Shard], input_uri: str, allow_empty: bool) -> None:
    if not shards and not allow_empty:
        raise NoInputImages(
            f"no images under {input_uri} (suffixes other than images and hidden names are "
            "skipped): check the path, or allow an empty run (--allow-empty)"
        )


def shard_uri(output_uri: str, shard: str) -> str:
    """Where a committed shard lives."""
    return join(output_uri, "shards", f"{shard}.parquet")


# --- decoding ----------------------------------------------------------------------------


@dataclass
class _Item:
    index: int
    key: str
    submitted: float
    data: bytes = b""
    spec: ImageSpec | None = None
    tensor: torch.Tensor | None = None
    located: str = DISABLED
    error: str | None = None
    digest: str | None = None
    hit: dict[str, Any] | None = None  # the cached row: not decoded, not scored
    downloaded: bool = False  # False for a hit by key and listing tag


def _fetch(
    index: int,
    key: str,
    submitted: float,
    storage: Storage,
    loaded: LoadedModel,
    cfg: ScoringConfig,
    cache: CachePartition | None = None,
    tag: str | None = None,
) -> _Item:
    """Look up ``key`` at its listing ``tag`` in ``cache`` (a hit needs no download),
    else download, hash, look up the content hash, else decode (``load_image`` under
    the model's contract) and preprocess one image; failures become the item's error."""
    item = _Item(index, key, submitted)
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
        if item.hit is not None:
            return item
        item.tensor, item.located = _prepare(item.data, loaded, cfg, key)
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


def _prepare(
    data: bytes, loaded: LoadedModel, cfg: ScoringConfig, key: str
) -> tuple[torch.Tensor, str]:
    pixels, located = decode_located(
        data, loaded.spec, max_pixels=cfg.max_pixels, max_bytes=cfg.max_image_bytes, name=key
    )
    return loaded.tensor(pixels), located


class StorageUnavailable(ScoringError):
    """The object store itself failed (connection refused, 5xx): retry the shard later."""


def storage_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store is down rather than that one object is bad."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500
    return False


def _stream(
    keys: Sequence[str], fetch: Callable[[int, str, float], _Item], workers: int, ahead: int
) -> Iterator[_Item]:
    """Items in key order, fetched by ``workers`` threads at most ``ahead`` keys ahead."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rxvision-fetch")
    pending: deque[Future[_Item]] = deque()
    position = 0
    try:
        while position < len(keys) or pending:
            while position < len(keys) and len(pending) < ahead:
                pending.append(pool.submit(fetch, position, keys[position], time.perf_counter()))
                position += 1
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- models: primary and fallback behind the breaker -------------------------------------


ModelLoader = Callable[[str], LoadedModel]


def fallback_for(model_uri: str, alias: str) -> str | None:
    """``models:/name@<alias>`` for a registry URI of ``name``; None for other URIs."""
    if not model_uri.startswith("models:/") or model_uri.startswith("models:/m-"):
        return None
    name = model_uri.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
    fallback = f"models:/{name}@{alias}"
    return None if fallback == model_uri else fallback


def pin_model_uri(model_uri: str, tracking_uri: str | None = None) -> str:
    """An alias URI pinned to the version it points at now (every shard of a run then
    uses one version even if a promotion lands mid-run); other URIs unchanged, and an
    alias that does not resolve is left for the loader to fail on (and fall back)."""
    if "@" not in model_uri:
        return model_uri
    from mlflow.tracking import MlflowClient

    try:
        return resolve_model(model_uri, MlflowClient(tracking_uri)).pinned_uri
    except RxVisionError as exc:
        log.warning("cannot pin %s: %s", model_uri, exc)
        return model_uri


@dataclass
class _Slot:
    uri: str | None
    loaded: LoadedModel | None = None
    predictor: Predictor | None = None
    failure: str | None = None
    batch: BatchSizeChoice | None = None


class ModelPool:
    """The primary and fallback models, each loaded when first needed, behind a breaker.

    ``fallback_on_load_failure``: whether a primary that cannot be loaded is replaced by
    the fallback (True: the CLI, or an Airflow task's last try) or raises
    ``PrimaryUnavailable`` (an earlier try: the retry loads it again).
    """

    def __init__(
        self,
        primary_uri: str,
        fallback_uri: str | None,
        config: ScoringConfig,
        *,
        sink: StatsdSink | None = None,
        loader: ModelLoader | None = None,
        fallback_on_load_failure: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.fallback_on_load_failure = fallback_on_load_failure
        self.sink = sink or StatsdSink()
        self.loader = loader or (lambda uri: load_model(uri, tracking_uri=config.tracking_uri))
        self.slots = {PRIMARY: _Slot(primary_uri), FALLBACK: _Slot(fallback_uri)}
        self.breaker = CircuitBreaker(
            config.circuit,
            on_open=lambda reason: self.sink.alert("circuit_open", reason),
            on_switch=self._switched,
            clock=clock,
        )
        self.options = PredictorOptions(
            device=resolve_device(config.device),
            precision=config.precision,
            tolerance=config.parity_tolerance,
            probe=config.probe_runtimes,
            tracking_uri=config.tracking_uri,
        )

    def _switched(self, event: dict[str, Any]) -> None:
        """Log and count a breaker switch (``circuit.open``, ``.half_open``, ``.closed``)."""
        log.warning(
            "circuit %s -> %s: %s scores from now on (%s)",
            event["from"],
            event["to"],
            event["scoring"],
            event["reason"],
        )
        self.sink.event(f"circuit.{event['to']}")

    def model(self, role: str) -> LoadedModel | None:
        """The model of ``role`` (loaded on first call), or None when it cannot load."""
        slot = self.slots[role]
        if slot.loaded is not None or slot.failure is not None or slot.uri is None:
            return slot.loaded
        try:
            slot.loaded = self.loader(slot.uri)
        except Exception as exc:  # any load failure: the other model takes over
            failure = f"{type(exc).__name__}: {exc}"
            if role == PRIMARY and not self.fallback_on_load_failure:
                # a download timeout must not cost a whole shard its champion: raise, with
                # nothing recorded or committed, and let the task's retry load it again
                log.error(
                    "cannot load primary model %s: %s; not the last try: failing the try "
                    "so that it is retried (the fallback scores only on the last try)",
                    slot.uri,
                    failure,
                )
                raise PrimaryUnavailable(
                    f"cannot load primary model {slot.uri}: {failure} (not the last try: "
                    "retried, the fallback scores only on the last try)"
                ) from exc
            slot.failure = failure
            log.error("cannot load %s model %s: %s", role, slot.uri, slot.failure)
            if role == PRIMARY:
                log.error(
                    "scoring with the fallback model %s instead of %s (each row says so in "
                    "fallback_reason)",
                    self.slots[FALLBACK].uri,
                    slot.uri,
                )
                self.sink.alert("primary_load_failed", slot.failure)
                self.breaker.trip(f"load_failed: {slot.failure}", permanent=True)
        return slot.loaded

    def fallback_reason(self) -> str:
        """Why the fallback scores now: the primary did not load, or the breaker is open."""
        failure = self.slots[PRIMARY].failure
        if failure is not None:
            return f"primary_load_failed: {failure}"[:REASON_CHARS]
        return f"circuit_open: {self.breaker.reason or 'open'}"[:REASON_CHARS]

    def choose(self) -> str:
        """The role to score the next batch: the primary while the breaker allows it."""
        if self.breaker.allow() and self.model(PRIMARY) is not None:
            return PRIMARY
        if self.model(FALLBACK) is not None:
            return FALLBACK
        primary, fallback = self.slots[PRIMARY], self.slots[FALLBACK]
        raise ScoringError(
            f"no model can score: primary {primary.uri} ({primary.failure or self.breaker.reason}),"
            f" fallback {fallback.uri or 'not configured'} ({fallback.failure or 'n/a'})"
        )

    def expected(self) -> LoadedModel:
        """The model expected to score (primary, else fallback): images are prepared
        under its preprocessing contract."""
        return self.get(self.choose())

    def get(self, role: str) -> LoadedModel:
        """A model known to be loaded."""
        loaded = self.model(role)
        if loaded is None:
            raise ScoringError(f"{role} model is not available")
        return loaded

    def predictor(self, role: str, sample: torch.Tensor) -> Predictor:
        """The role's runtime, picked on the first batch it scores."""
        slot = self.slots[role]
        if slot.predictor is None:
            loaded = self.get(role)
            slot.predictor = select_predictor(loaded, self.config.runtimes, sample, self.options)
            slot.batch = choose_batch_size(
                self.config.batch_size,
                loaded.ref.tags,
                slot.predictor.runtime,
                slot.predictor.device,
            )
            log.info(
                "%s model %s scores in batches of %d with %s on %s: %s",
                role,
                loaded.label,
                slot.batch.size,
                slot.predictor.runtime,
                slot.predictor.device,
                slot.batch.reason,
            )
        return slot.predictor

    def batch_size(self) -> int:
        """How many images a batch collects: the chosen size of the model expected to
        score (the primary when it loaded); before its runtime is picked, the size for
        the first preferred runtime (the usual pick)."""
        slot = self.slots[PRIMARY] if self.slots[PRIMARY].loaded else self.slots[FALLBACK]
        if slot.batch is not None:
            return slot.batch.size
        tags = slot.loaded.ref.tags if slot.loaded else {}
        runtime = self.config.runtimes[0] if self.config.runtimes else "eager"
        return choose_batch_size(self.config.batch_size, tags, runtime, self.options.device).size

    def describe(self) -> dict[str, Any]:
        """Which models and runtimes served, for summaries."""
        out: dict[str, Any] = {}
        for role, slot in self.slots.items():
            out[role] = {
                "uri": slot.uri,
                "version": slot.loaded.label if slot.loaded else None,
                "runtime": slot.predictor.runtime if slot.predictor else None,
                "device": slot.predictor.device if slot.predictor else None,
                "batch_size": slot.batch.size if slot.batch else None,
                "batch_size_source": slot.batch.source if slot.batch else None,
                "load_error": slot.failure,
            }
        out["circuit"] = self.breaker.snapshot()
        return out


# --- scoring -----------------------------------------------------------------------------


def error_row(
    key: str, reason: str, shard: str, model: str | None = None, digest: str | None = None
) -> dict[str, Any]:
    """A row for an input that could not be scored."""
    return {
        "key": key,
        "label": None,
        "confidence": None,
        "topk_labels": [],
        "topk_probs": [],
        "model_version": model,
        "needs_review": False,
        "error": reason,
        "scored_by": None,
        "runtime": None,
        "shard_id": shard,
        "localized": None,
        "localization": None,
        "fallback_reason": None,
        "content_sha256": digest,
        "cached": False,
    }


def cached_row(key: str, hit: dict[str, Any], digest: str | None, shard: str) -> dict[str, Any]:
    """A row served from the inference cache (the primary scored it in an earlier run)."""
    return {
        **error_row(key, "", shard),
        **hit,
        "error": None,
        "scored_by": PRIMARY,
        "content_sha256": digest,
        "cached": True,
    }


def prediction_rows(
    keys: Sequence[str],
    probs: np.ndarray,
    loaded: LoadedModel,
    *,
    role: str,
    runtime: str,
    top_k: int,
    review_threshold: float,
    shard: str,
    located: Sequence[str] | None = None,
    fallback_reason: str | None = None,
    digests: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """One row per image: top-1 label and confidence, top-k, review flag, where the pill
    was found (``located``: each image's localization status) and, for rows the
    fallback scored, why (``fallback_reason``)."""
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = []
    statuses = list(located) if located is not None else [DISABLED] * len(keys)
    hashes = list(digests) if digests is not None else [None] * len(keys)
    for key, p, top, status, digest in zip(keys, probs, order, statuses, hashes, strict=True):
        confidence = float(p[top[0]])
        rows.append(
            {
                "key": key,
                "label": loaded.classes[int(top[0])],
                "confidence": confidence,
                "topk_labels": [loaded.classes[int(i)] for i in top],
                "topk_probs": [float(p[i]) for i in top],
                "model_version": loaded.label,
                "needs_review": confidence < review_threshold,
                "error": None,
                "scored_by": role,
                "runtime": runtime,
                "shard_id": shard,
                "localized": None if status == DISABLED else status == LOCALIZED,
                "localization": None if status == DISABLED else status,
                "fallback_reason": fallback_reason if role == FALLBACK else None,
                "content_sha256": digest,
                "cached": False,
            }
        )
    return rows


@dataclass
class ShardResult:
    """What ``score_shard`` did."""

    shard_id: str
    uri: str
    rows: int
    skipped: bool
    summary: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[int], None]


def tta_probs(
    predictor: Predictor, images: torch.Tensor, temperature: float, rotations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities (the model's temperature, fitted on its validation split),
    averaged over ``rotations`` quarter turns of the batch, and which rows are finite."""
    turns = range(0, 4, 4 // rotations)
    runs = [predictor.predict(torch.rot90(images, k, dims=(2, 3)) if k else images) for k in turns]
    ok = np.logical_and.reduce([np.isfinite(logits).all(axis=1) for logits in runs])
    probs = np.zeros((len(images), runs[0].shape[1]), dtype=np.float64)
    for logits in runs:
        probs[ok] += softmax(logits[ok], temperature)
    return (probs / len(runs)).astype(np.float32), ok


class _ShardScorer:
    """Scores one shard's keys into rows, through the pool's models."""

    def __init__(
        self,
        pool: ModelPool,
        config: ScoringConfig,
        shard: str,
        metrics: ScoringMetrics,
        sink: StatsdSink,
        cache: InferenceCache | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.shard = shard
        self.metrics = metrics
        self.sink = sink
        self.cache = cache
        self.partition: CachePartition | None = None
        self.rows: list[tuple[int, dict[str, Any]]] = []
        self.tags: dict[str, str] = {}
        self.downloaded = 0

    def run(
        self,
        keys: Sequence[str],
        storage: Storage,
        progress: ProgressFn | None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Stream, batch and score every key (a cache hit is served, not scored).
        ``tags``: key -> listing tag, for cache lookups without a download."""
        expected = self.pool.expected()
        self.partition = self._partition()
        self.tags = dict(tags or {})

        def fetch(index: int, key: str, submitted: float) -> _Item:
            return _fetch(
                index,
                key,
                submitted,
                storage,
                expected,
                self.config,
                self.partition,
                self.tags.get(key),
            )

        batch: list[_Item] = []
        workers, ahead = self.config.download_workers, self.config.max_in_flight
        target = self.pool.batch_size()  # tuned per runtime: known once the model loaded
        for item in _stream(keys, fetch, workers, max(ahead, target)):
            self.downloaded += item.downloaded
            if item.error is not None:
                row = error_row(item.key, item.error, self.shard, digest=item.digest)
                self._add([(item.index, row)])
            elif item.hit is not None:
                self._add([(item.index, cached_row(item.key, item.hit, item.digest, self.shard))])
            else:
                batch.append(item)
            if len(batch) >= target:
                self._score(batch)
                batch = []
                target = self.pool.batch_size()
            if progress is not None:
                progress(len(self.rows) + len(batch))
        if batch:
            self._score(batch)
            if progress is not None:
                progress(len(self.rows))

    def _partition(self) -> CachePartition | None:
        """The cache partition of the primary model (None without a cache, or when the
        primary did not load: only its rows are ever cached)."""
        primary = self.pool.slots[PRIMARY].loaded
        if self.cache is None or primary is None:
            return None
        contract = RowContract(
            self.config.top_k, self.config.tta_rotations, self.review_threshold(primary)
        )
        return self.cache.partition(primary, contract)

    def cacheable(self) -> list[dict[str, Any]]:
        """Rows to store after the commit: scored by the primary now, without error."""
        if self.partition is None:
            return []
        primary = self.pool.get(PRIMARY).label
        return [
            {**row, "source_key": row["key"], "source_tag": self.tags.get(row["key"])}
            for _, row in self.rows
            if row["scored_by"] == PRIMARY
            and row["model_version"] == primary
            and not row["error"]
            and not row["cached"]
        ]

    def review_threshold(self, loaded: LoadedModel) -> float:
        """The configured threshold, else the one chosen with the model (a precision on
        its validation split), else 0.6."""
        if self.config.review_threshold is not None:
            return self.config.review_threshold
        return loaded.review_threshold if loaded.review_threshold is not None else 0.6

    def _add(self, rows: list[tuple[int, dict[str, Any]]]) -> None:
        self.rows.extend(rows)
        self.metrics.observe_rows(
            len(rows),
            [r["error"] for _, r in rows],
            sum(1 for _, r in rows if r["scored_by"] == FALLBACK),
        )
        self.sink.rows(
            len(rows),
            sum(1 for _, r in rows if r["error"]),
            sum(1 for _, r in rows if r["scored_by"] == FALLBACK),
        )

    def _score(self, batch: list[_Item], role: str | None = None, why: str | None = None) -> None:
        """Score ``batch`` with ``role`` (default: the breaker's choice); images the
        primary fails on go to the fallback, if there is one. ``why``: the reason the
        fallback scores them (default: the pool's)."""
        role = role or self.pool.choose()
        if role == FALLBACK and why is None:
            why = self.pool.fallback_reason()
        loaded = self.pool.get(role)
        images = _batch_tensor(batch, loaded, self.config)
        failure: str | None = None
        runtime = "?"
        began = time.perf_counter()
        try:
            predictor = self.pool.predictor(role, images)  # exports on the first batch
            runtime = predictor.runtime
            began = time.perf_counter()  # batch latency is the model call alone
            probs, ok = tta_probs(predictor, images, loaded.temperature, self.config.tta_rotations)
        except Exception as exc:  # a model failure costs rows, never the run
            failure = f"{MODEL_ERROR}: {type(exc).__name__}: {exc}"
            log.warning("%s model failed on a batch of %d: %s", role, len(batch), failure)
            probs, ok = np.zeros((len(batch), 1), np.float32), np.zeros(len(batch), bool)
        seconds = time.perf_counter() - began
        done = time.perf_counter()
        self.metrics.observe_batch(seconds, [(done - i.submitted) * 1000 for i in batch])
        self.sink.batch(seconds, [(done - i.submitted) * 1000 for i in batch], role)
        if role == PRIMARY:
            self.pool.breaker.record(successes=int(ok.sum()), failures=int((~ok).sum()))
        good = [i for i, flag in zip(batch, ok, strict=True) if flag]
        if good:
            rows = prediction_rows(
                [i.key for i in good],
                probs[ok],
                loaded,
                role=role,
                runtime=runtime,
                top_k=self.config.top_k,
                review_threshold=self.review_threshold(loaded),
                shard=self.shard,
                located=[i.located for i in good],
                fallback_reason=why,
                digests=[i.digest for i in good],
            )
            self._add(list(zip([i.index for i in good], rows, strict=True)))
        bad = [i for i, flag in zip(batch, ok, strict=True) if not flag]
        if bad:
            self._retry_or_fail(bad, role, loaded, failure or f"{NON_FINITE}: NaN or inf logits")

    def _retry_or_fail(
        self, items: list[_Item], role: str, loaded: LoadedModel, reason: str
    ) -> None:
        if role == PRIMARY and self.pool.model(FALLBACK) is not None:
            self._score(items, FALLBACK, f"primary_failed: {reason}"[:REASON_CHARS])
            return
        self._add(
            [(i.index, error_row(i.key, reason, self.shard, loaded.label, i.digest)) for i in items]
        )

    def table(self) -> pa.Table:
        """The rows in key order."""
        ordered = [row for _, row in sorted(self.rows, key=lambda pair: pair[0])]
        return pa.Table.from_pylist(ordered, schema=PREDICTION_SCHEMA)


def _batch_tensor(
    batch: Sequence[_Item], loaded: LoadedModel, config: ScoringConfig
) -> torch.Tensor:
    """The batch's tensors; decoded again from the bytes when this model's contract
    differs (the fallback may have been trained at another size)."""
    if all(i.spec == loaded.spec for i in batch):
        return torch.stack([i.tensor for i in batch if i.tensor is not None])
    prepared = [_prepare(i.data, loaded, config, i.key) for i in batch]
    for item, (_, located) in zip(batch, prepared, strict=True):
        item.located, item.spec = located, loaded.spec
    return torch.stack([tensor for tensor, _ in prepared])


def score_shard(
    model_uri: str,
    shard_keys: Sequence[str],
    output_uri: str,
    shard_id: str,
    *,
    config: ScoringConfig | None = None,
    fallback_uri: str | None = None,
    pool: ModelPool | None = None,
    storage: Storage | None = None,
    sink: StatsdSink | None = None,
    progress: ProgressFn | None = None,
    fallback_on_load_failure: bool = True,
    cache: InferenceCache | None = None,
    source_tags: Mapping[str, str] | None = None,
) -> ShardResult:
    """Score one shard's keys (full ``s3://`` URIs or paths) into
    ``OUTPUT/shards/<shard_id>.parquet``, unless a run already committed it.

    ``cache`` (default: ``config.cache``'s): unchanged images under an unchanged primary
    are served from it (``cached`` rows); the primary's fresh rows are added to it
    once the shard has committed. ``source_tags`` (``Shard.source_tags``): an object
    whose key and listing tag (ETag and size) the cache has seen is served without
    being downloaded; any other is downloaded and looked up by its content hash.

    The Airflow task of one shard calls this. ``fallback_uri`` defaults to the
    ``fallback`` alias of a registry ``model_uri``. Raises ``ScoringError`` (nothing
    committed) when neither model can be loaded, and ``PrimaryUnavailable`` when the
    primary cannot and ``fallback_on_load_failure`` is False (a try before the last).
    """
    config = config or ScoringConfig()
    storage = storage or Storage()
    sink = sink or _sink(config)
    output_uri = normalize_uri(output_uri)
    final = shard_uri(output_uri, shard_id)
    if storage.exists(final):
        log.info("%s already committed at %s: skipped", shard_id, final)
        sink.event("shards.skipped")
        return ShardResult(shard_id, final, 0, True, _read_summary(storage, output_uri, shard_id))
    if pool is None:
        fallback = (
            fallback_uri or config.fallback_uri or fallback_for(model_uri, config.fallback_alias)
        )
        pool = ModelPool(
            model_uri,
            fallback,
            config,
            sink=sink,
            fallback_on_load_failure=fallback_on_load_failure,
        )
    cache = cache or open_cache(config.cache, storage)
    metrics = ScoringMetrics()
    began = time.perf_counter()
    switches = len(pool.breaker.events)  # the pool may have scored shards before this one
    scorer = _ShardScorer(pool, config, shard_id, metrics, sink, cache)
    scorer.run(shard_keys, storage, progress, source_tags)
    table = scorer.table()
    metrics.seconds = time.perf_counter() - began
    cached = sum(bool(c) for c in table.column("cached").to_pylist())
    summary = {
        "shard_id": shard_id,
        "uri": final,
        "model_uri": model_uri,
        "models": pool.describe(),
        "rows_by_model": _rows_by_model(table),
        "finished": _now(),
        "cached": cached,
        # objects read from the store (the rest: cache hits by key and ETag, no GET)
        "downloaded": scorer.downloaded,
        "circuit_events": [
            {**event, "shard_id": shard_id} for event in pool.breaker.events[switches:]
        ],
        **metrics.summary(),
    }
    _commit(storage, output_uri, shard_id, table, summary)
    sink.summary(summary)
    sink.event("shards.committed")
    sink.event("cache.hits", cached)
    if cache is not None and scorer.partition is not None:
        cache.store_committed(scorer.partition, scorer.cacheable(), sink)
    log.info(
        "%s: %d rows (%d from the cache, %d errors, %d by fallback) in %.1f s, %.1f images/s",
        shard_id,
        table.num_rows,
        cached,
        metrics.errors,
        metrics.fallback,
        metrics.seconds,
        metrics.images_per_s,
    )
    return ShardResult(shard_id, final, table.num_rows, False, summary)


def _rows_by_model(table: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for role, version in zip(
        table.column("scored_by").to_pylist(),
        table.column("model_version").to_pylist(),
        strict=True,
    ):
        if role:
            name = f"{role}:{version}"
            counts[name] = counts.get(name, 0) + 1
    return counts


def _commit(
    storage: Storage, output_uri: str, shard: str, table: pa.Table, summary: dict[str, Any]
) -> None:
    """Summary first, then the Parquet under a temporary key, then the commit: a shard
    is committed exactly when ``shards/<id>.parquet`` exists, and then its summary does."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    storage.write(join(output_uri, "_summary", f"{shard}.json"), json.dumps(summary).encode())
    tmp = join(output_uri, "_tmp", f"{shard}.{uuid.uuid4().hex[:12]}.parquet")
    storage.write(tmp, buffer.getvalue())
    storage.move(tmp, shard_uri(output_uri, shard))


def _read_summary(storage: Storage, output_uri: str, shard: str) -> dict[str, Any]:
    try:
        return dict(json.loads(storage.read(join(output_uri, "_summary", f"{shard}.json"))))
    except NotFound:
        return {}


def _sink(config: ScoringConfig) -> StatsdSink:
    return StatsdSink(config.statsd.host, config.statsd.port, config.statsd.prefix)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- finishing a run ---------------------------------------------------------------------


def finalize_scoring(
    output_uri: str,
    shard_ids: Sequence[str] | None = None,
    *,
    storage: Storage | None = None,
    sink: StatsdSink | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check every shard is committed, then write the review gallery
    (``rxvision.serving.review_gallery``: its failure is recorded, never fatal),
    ``_manifest.json`` and ``_SUCCESS`` (last). The expected shards are ``shard_ids``,
    else the plan's. ``ScoringError`` names the missing shards (nothing written)."""
    storage = storage or Storage()
    output_uri = normalize_uri(output_uri)
    expected = list(shard_ids) if shard_ids is not None else _planned_ids(storage, output_uri)
    committed = {
        Path(uri).name.removesuffix(".parquet")
        for uri in storage.list(join(output_uri, "shards"))
        if uri.endswith(".parquet")
    }
    missing = sorted(set(expected) - committed)
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ScoringError(f"{output_uri}: {len(missing)} shards not committed: {shown}")
    merged = ScoringMetrics()
    shards = []
    events: list[dict[str, Any]] = []
    for shard in expected:
        summary = _read_summary(storage, output_uri, shard)
        merged.merge_summary(summary)
        shards.append(
            {
                "shard_id": shard,
                "uri": shard_uri(output_uri, shard),
                "rows": summary.get("images"),
                "cached": summary.get("cached", 0),
                "downloaded": summary.get("downloaded"),
                "rows_by_model": summary.get("rows_by_model", {}),
            }
        )
        events.extend(summary.get("circuit_events", []))
    # before the manifest, which records where it is (or why it is missing)
    review = review_summary(output_uri, [s["uri"] for s in shards], storage, sink or StatsdSink())
    manifest = {
        "output_uri": output_uri,
        "finished": _now(),
        "rows": sum(int(s["rows"] or 0) for s in shards),
        "cached": sum(int(s["cached"] or 0) for s in shards),
        "downloaded": sum(int(s["downloaded"] or 0) for s in shards),
        # every breaker switch of every shard, oldest first: the incident tracker's hook
        "circuit_events": sorted(events, key=lambda e: str(e.get("time"))),
        "shards": shards,
        "metrics": merged.summary(),
        **review,
        **(extra or {}),
    }
    storage.write(join(output_uri, "_manifest.json"), json.dumps(manifest, indent=2).encode())
    storage.delete_prefix(join(output_uri, "_tmp"))
    storage.write(join(output_uri, "_SUCCESS"), b"")
    if sink is not None:
        sink.summary(manifest["metrics"], scope="run")
    return manifest


def _planned_ids(storage: Storage, output_uri: str) -> list[str]:
    plan_uri = join(output_uri, "_plan.json")
    if not storage.exists(plan_uri):
        raise ScoringError(f"{output_uri} has no _plan.json: give the shard ids to expect")
    return [s["shard_id"] for s in json.loads(storage.read(plan_uri))["shards"]]


def score_batch(
    model_uri: str,
    input_uri: str,
    output_uri: str,
    *,
    config: ScoringConfig | None = None,
    storage: Storage | None = None,
    loader: ModelLoader | None = None,
    progress: Callable[[str, int], None] | None = None,
    allow_empty: bool = False,
    fallback_on_load_failure: bool = True,
) -> dict[str, Any]:
    """Plan, score every shard in this process, finalize; return the manifest (the run
    summary). A rerun into the same output skips committed shards.

    No image (or no input folder): ``NoInputImages`` with nothing written, unless
    ``allow_empty`` (an empty manifest and ``_SUCCESS``; a missing folder stays an
    error). ``fallback_on_load_failure``: see ``ModelPool`` (this process is the only
    try, so by default the fallback scores at once)."""
    config = config or ScoringConfig()
    storage = storage or Storage()
    sink = _sink(config)
    began = time.perf_counter()
    input_uri, output_uri = normalize_uri(input_uri), normalize_uri(output_uri)
    # no pinning here: the pool loads each model once per process, so one run scores
    # with one version; tasks of a DAG share a version through pin_model_uri
    primary = model_uri
    fallback = config.fallback_uri or fallback_for(model_uri, config.fallback_alias)
    shards = plan_shards(
        input_uri,
        output_uri,
        config.shard_size,
        suffixes=config.suffixes,
        storage=storage,
        allow_empty=allow_empty,
    )
    pool = ModelPool(
        primary,
        fallback,
        config,
        sink=sink,
        loader=loader,
        fallback_on_load_failure=fallback_on_load_failure,
    )
    cache = open_cache(config.cache, storage)  # one per run: each partition is read once
    results = []
    for shard in shards:
        report = (lambda n, s=shard.shard_id: progress(s, n)) if progress else None
        results.append(
            score_shard(
                primary,
                shard.keys,
                output_uri,
                shard.shard_id,
                config=config,
                pool=pool,
                storage=storage,
                sink=sink,
                progress=report,
                cache=cache,
                source_tags=shard.source_tags(),
            )
        )
    extra = {
        "model_uri": model_uri,
        "fallback_uri": fallback,
        "input_uri": input_uri,
        "models": pool.describe(),
        "skipped_shards": [r.shard_id for r in results if r.skipped],
        "wall_seconds": round(time.perf_counter() - began, 3),
    }
    return finalize_scoring(
        output_uri, [s.shard_id for s in shards], storage=storage, sink=sink, extra=extra
    )
