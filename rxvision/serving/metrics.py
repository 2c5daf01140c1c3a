"""Scoring metrics: latency percentiles, throughput, error rate and fallback use.

``ScoringMetrics`` accumulates one scoring job (a shard, or a whole run): per-batch and
per-image latency (p50/p95/p99), images per second, error rate, rows scored by the
fallback model. ``summary()`` is the JSON of the run summary; summaries merge (each
latency series keeps a log-spaced histogram), so that the manifest of a run scored as
many Airflow tasks reports percentiles over all of them.

``StatsdSink`` sends the same figures to statsd under ``rxvision.scoring`` (host and
port from ``STATSD_HOST``/``STATSD_PORT``; without a host it sends nothing).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import statsd

log = logging.getLogger(__name__)

PREFIX = "rxvision.scoring"
# 400 log-spaced buckets from 10 us to 10 min: ~4.5% wide, enough for percentiles
EDGES_MS = np.geomspace(0.01, 600_000.0, 401)
PERCENTILES = (50, 95, 99)


class LatencyStats:
    """One latency series (ms): exact percentiles in-process, a histogram to merge."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.histogram: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, values_ms: Iterable[float]) -> None:
        """Record observations."""
        values = [float(v) for v in values_ms]
        if not values:
            return
        self.samples.extend(values)
        buckets = np.searchsorted(EDGES_MS, values)
        self.histogram.update(int(b) for b in buckets)
        self.count += len(values)
        self.total += sum(values)
        self.max = max(self.max, *values)

    def percentiles(self) -> dict[str, float | None]:
        """p50/p95/p99: exact from samples when this process saw them, else from buckets."""
        if self.count == 0:
            return {f"p{q}": None for q in PERCENTILES}
        if len(self.samples) == self.count:
            values = np.percentile(np.asarray(self.samples), PERCENTILES)
            return {f"p{q}": round(float(v), 3) for q, v in zip(PERCENTILES, values, strict=True)}
        return {f"p{q}": round(self._bucket_percentile(q), 3) for q in PERCENTILES}

    def _bucket_percentile(self, q: float) -> float:
        rank = q / 100 * self.count
        seen = 0
        for bucket in sorted(self.histogram):
            seen += self.histogram[bucket]
            if seen >= rank:
                # the bucket's geometric middle; the top bucket is capped by the max seen
                low = EDGES_MS[max(0, bucket - 1)]
                high = EDGES_MS[min(bucket, len(EDGES_MS) - 1)]
                return float(min(np.sqrt(low * high), self.max))
        return self.max

    def to_json(self) -> dict[str, Any]:
        """Percentiles, count, mean, max and the sparse histogram."""
        return {
            **self.percentiles(),
            "count": self.count,
            "mean": round(self.total / self.count, 3) if self.count else None,
            "max": round(self.max, 3),
            "sum": self.total,
            "histogram": {str(k): v for k, v in sorted(self.histogram.items())},
        }

    def merge_json(self, data: Mapping[str, Any]) -> None:
        """Add a series written by ``to_json`` (its samples are gone: percentiles go
        through the histogram from now on)."""
        self.histogram.update({int(k): int(v) for k, v in data.get("histogram", {}).items()})
        self.count += int(data.get("count", 0))
        self.total += float(data.get("sum", 0.0))
        self.max = max(self.max, float(data.get("max") or 0.0))


@dataclass
class ScoringMetrics:
    """Counters and latencies of one scoring job."""

    batch_ms: LatencyStats = field(default_factory=LatencyStats)
    image_ms: LatencyStats = field(default_factory=LatencyStats)
    images: int = 0
    errors: int = 0
    fallback: int = 0
    batches: int = 0
    seconds: float = 0.0
    error_reasons: Counter[str] = field(default_factory=Counter)

    def observe_batch(self, seconds: float, image_latencies_ms: Iterable[float]) -> None:
        """One model call over a batch and the end-to-end latency of each image in it."""
        self.batches += 1
        self.batch_ms.add([seconds * 1000])
        self.image_ms.add(image_latencies_ms)

    def observe_rows(self, rows: int, errors: Iterable[str | None], fallback: int) -> None:
        """Rows written: how many, their error reasons (None: scored), how many by the fallback."""
        self.images += rows
        codes = [e.split(":", 1)[0] for e in errors if e]
        self.errors += len(codes)
        self.error_reasons.update(codes)
        self.fallback += fallback

    @property
    def error_rate(self) -> float:
        """Error rows / rows."""
        return self.errors / self.images if self.images else 0.0

    @property
    def images_per_s(self) -> float:
        """Rows per second of wall time."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The JSON of the run summary."""
        return {
            "images": self.images,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "error_reasons": dict(self.error_reasons),
            "fallback_count": self.fallback,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 3),
            "latency_ms": {"batch": self.batch_ms.to_json(), "image": self.image_ms.to_json()},
        }

    def merge_summary(self, data: Mapping[str, Any]) -> None:
        """Add another job's ``summary()`` (e.g. every shard's, for the manifest)."""
        self.images += int(data.get("images", 0))
        self.errors += int(data.get("errors", 0))
        self.fallback += int(data.get("fallback_count", 0))
        self.batches += int(data.get("batches", 0))
        self.seconds += float(data.get("seconds", 0.0))
        self.error_reasons.update(dict(data.get("error_reasons", {})))
        latency = data.get("latency_ms", {})
        self.batch_ms.merge_json(latency.get("batch", {}))
        self.image_ms.merge_json(latency.get("image", {}))


class StatsdSink:
    """statsd metrics under ``rxvision.scoring``; a no-op without a statsd host."""

    def __init__(
        self, host: str | None = None, port: int | None = None, prefix: str = PREFIX
    ) -> None:
        self.host = host or os.environ.get("STATSD_HOST")
        self.port = int(port or os.environ.get("STATSD_PORT") or 8125)
        self.prefix = prefix
        self._client: statsd.StatsClient | None = None

    @property
    def enabled(self) -> bool:
        """Whether a statsd host is configured."""
        return bool(self.host)

    def client(self) -> statsd.StatsClient | None:
        """The UDP client, built on first use."""
        if self._client is None and self.host:
            self._client = statsd.StatsClient(self.host, self.port, prefix=self.prefix)
        return self._client

    def batch(self, seconds: float, image_latencies_ms: Iterable[float], role: str) -> None:
        """Timers of one batch (one packet per batch through a pipeline)."""
        client = self.client()
        if client is None:
            return
        with client.pipeline() as pipe:
            pipe.timing("batch_ms", seconds * 1000)
            for value in image_latencies_ms:
                pipe.timing("image_ms", value)
            pipe.incr(f"batches.{role}")

    def rows(self, rows: int, errors: int, fallback: int) -> None:
        """Counters of rows written."""
        client = self.client()
        if client is None:
            return
        with client.pipeline() as pipe:
            pipe.incr("images", rows)
            if errors:
                pipe.incr("errors", errors)
            if fallback:
                pipe.incr("fallback", fallback)

    def alert(self, name: str, reason: str) -> None:
        """An alert counter (``alert.<name>``), e.g. the circuit breaker opening."""
        log.error("alert %s.alert.%s: %s", self.prefix, name, reason)
        client = self.client()
        if client is not None:
            client.incr(f"alert.{name}")

    def event(self, name: str, count: int = 1) -> None:
        """A plain counter, e.g. ``shards.committed``."""
        client = self.client()
        if client is not None:
            client.incr(name, count)

    def summary(self, summary: Mapping[str, Any], scope: str = "shard") -> None:
        """Gauges of a finished job: throughput, error rate, fallback count, percentiles."""
        client = self.client()
        if client is None:
            return
        with client.pipeline() as pipe:
            pipe.gauge(f"{scope}.images_per_s", float(summary.get("images_per_s", 0.0)))
            pipe.gauge(f"{scope}.error_rate", float(summary.get("error_rate", 0.0)))
            pipe.gauge(f"{scope}.fallback_count", float(summary.get("fallback_count", 0)))
            for series, stats in summary.get("latency_ms", {}).items():
                for q in PERCENTILES:
                    value = stats.get(f"p{q}")
                    if value is not None:
                        pipe.gauge(f"{scope}.latency.{series}.p{q}", float(value))
