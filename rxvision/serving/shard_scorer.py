"""Scoring one shard's keys into prediction rows: fetch, batch, infer, fall back.

Images stream in (``rxvision.serving.fetch``: downloads; ``.isolated_decode``: decoder
processes); cache hits and unreadable images become rows at once, the rest are batched
(the size tuned per runtime) and scored by the model the pool's breaker chooses, with
test-time augmentation when asked.
Images the primary fails on (an exception, NaN logits) go to the fallback; a model
failure costs rows, never the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from rxvision.serving.cache import CachePartition, InferenceCache, RowContract
from rxvision.serving.calibration import softmax
from rxvision.serving.fetch import InputImage, decode_for, fetch_image, stream_images
from rxvision.serving.isolated_decode import decode_isolated, decode_workers
from rxvision.serving.metrics import ScoringMetrics, StatsdSink
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.model_pool import ModelPool
from rxvision.serving.predictions import (
    FALLBACK,
    MODEL_ERROR,
    NON_FINITE,
    PREDICTION_SCHEMA,
    PRIMARY,
    REASON_CHARS,
    cached_row,
    error_row,
    prediction_rows,
)
from rxvision.serving.predictors import Predictor
from rxvision.serving.review_crops import ShardCrops
from rxvision.storage.uri_store import Storage

if TYPE_CHECKING:
    from rxvision.serving.scoring_config import ScoringConfig

log = logging.getLogger(__name__)


# called with how many of the shard's keys have rows so far
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


class ShardScorer:
    """Scores one shard's keys into rows, through the pool's models."""

    def __init__(
        self,
        pool: ModelPool,
        config: ScoringConfig,
        shard: str,
        metrics: ScoringMetrics,
        sink: StatsdSink,
        cache: InferenceCache | None = None,
        crops: ShardCrops | None = None,
    ) -> None:
        self.pool = pool
        self.crops = crops  # the review crops of rows that need review (None: no gallery)
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
        isolated = decode_workers(self.config) > 0

        def fetch(index: int, key: str, submitted: float) -> InputImage:
            return fetch_image(
                index,
                key,
                submitted,
                storage,
                expected,
                self.config,
                self.partition,
                self.tags.get(key),
                decode=not isolated,
            )

        batch: list[InputImage] = []
        workers, ahead = self.config.download_workers, self.config.max_in_flight
        target = self.pool.batch_size()  # tuned per runtime: known once the model loaded
        items = stream_images(keys, fetch, workers, max(ahead, target))
        if isolated:
            items = decode_isolated(items, expected, self.config)
        for item in items:
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
        return self.cache.partition(primary, contract, self.config.possible_runtimes)

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
        its validation split), else ``DEFAULT_REVIEW_THRESHOLD``."""
        if self.config.review_threshold is not None:
            return self.config.review_threshold
        return loaded.review_threshold_or_default

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

    def _score(
        self, batch: list[InputImage], role: str | None = None, why: str | None = None
    ) -> None:
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
            self._keep_review_crops(good, rows)
        bad = [i for i, flag in zip(batch, ok, strict=True) if not flag]
        if bad:
            self._retry_or_fail(bad, role, loaded, failure or f"{NON_FINITE}: NaN or inf logits")

    def _keep_review_crops(self, items: list[InputImage], rows: list[dict[str, Any]]) -> None:
        """The gallery's crop of each row that needs review, from the pixels scored."""
        if self.crops is None:
            return
        for item, row in zip(items, rows, strict=True):
            if row["needs_review"] and item.pixels is not None and item.spec and item.digest:
                self.crops.add(item.spec, item.digest, item.pixels)

    def _retry_or_fail(
        self, items: list[InputImage], role: str, loaded: LoadedModel, reason: str
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
    batch: Sequence[InputImage], loaded: LoadedModel, config: ScoringConfig
) -> torch.Tensor:
    """The batch's model input; an item decoded under another contract (the fallback may
    have been trained at another size) is decoded again from its bytes first."""
    for item in batch:
        if item.spec != loaded.spec or item.pixels is None:
            item.pixels, item.located = decode_for(loaded, item.data, config, item.key)
            item.spec = loaded.spec
    return loaded.batch([i.pixels for i in batch if i.pixels is not None])
