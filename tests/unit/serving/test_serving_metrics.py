"""Latency percentiles, merged summaries and statsd packets."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from rxvision.serving.metrics import LatencyStats, ScoringMetrics, StatsdSink

pytestmark = pytest.mark.unit


def test_exact_percentiles_in_process() -> None:
    stats = LatencyStats()
    stats.add(range(1, 101))
    out = stats.to_json()
    assert out["count"] == 100 and out["max"] == 100
    assert out["p50"] == pytest.approx(50.5) and out["p99"] == pytest.approx(99.01)


def test_merged_percentiles_come_from_the_histogram() -> None:
    rng = np.random.default_rng(0)
    values = rng.lognormal(3, 0.5, 4000)
    parts = [LatencyStats() for _ in range(4)]
    for part, chunk in zip(parts, np.array_split(values, 4), strict=True):
        part.add(chunk)
    merged = LatencyStats()
    for part in parts:
        merged.merge_json(part.to_json())
    exact = np.percentile(values, [50, 95, 99])
    got = merged.percentiles()
    for q, want in zip((50, 95, 99), exact, strict=True):
        assert got[f"p{q}"] == pytest.approx(want, rel=0.05)


def test_scoring_metrics_summary_and_merge() -> None:
    metrics = ScoringMetrics(seconds=2.0)
    metrics.observe_batch(0.1, [120.0, 130.0])
    metrics.observe_rows(3, [None, None, "corrupt: cannot decode"], fallback=1)
    summary = metrics.summary()
    assert summary["images"] == 3 and summary["errors"] == 1
    assert summary["error_rate"] == pytest.approx(1 / 3, rel=1e-4)
    assert summary["images_per_s"] == 1.5 and summary["fallback_count"] == 1
    assert summary["error_reasons"] == {"corrupt": 1}
    total = ScoringMetrics()
    total.merge_summary(summary)
    total.merge_summary(summary)
    assert total.summary()["images"] == 6 and total.summary()["latency_ms"]["image"]["count"] == 4


def test_statsd_sink_sends_prefixed_metrics() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    port = receiver.getsockname()[1]
    sink = StatsdSink("127.0.0.1", port)
    sink.batch(0.05, [60.0, 70.0], "primary")
    sink.alert("circuit_open", "error rate 0.9")
    lines: list[str] = []
    for _ in range(2):
        lines.extend(receiver.recv(65535).decode().splitlines())
    receiver.close()
    assert "rxvision.scoring.batch_ms:50.000000|ms" in lines[0] or any(
        line.startswith("rxvision.scoring.batch_ms:") for line in lines
    )
    assert sum(line.startswith("rxvision.scoring.image_ms:") for line in lines) == 2
    assert "rxvision.scoring.alert.circuit_open:1|c" in lines


def test_statsd_sink_without_host_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATSD_HOST", raising=False)
    sink = StatsdSink()
    assert not sink.enabled and sink.client() is None
    sink.batch(0.1, [1.0], "primary")  # no error, nothing sent
