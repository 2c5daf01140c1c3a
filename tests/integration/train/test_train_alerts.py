"""Training alert thresholds through ``train()`` against the stack: each forced crossing
reaches the webhook, the stack's statsd receiver and an S3 record, once; a NaN loss
stops the run naming the step and the loss, with a finite last checkpoint in S3."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from http_receiver import Receiver
from mlflow.tracking import MlflowClient
from train_helpers import CPU_QUICK, TINY

from rxvision.pipeline.alerts import list_alerts
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store
from rxvision.train import run as train_run
from rxvision.train.config import load_train_config
from rxvision.train.module import RxVisionTrainer
from rxvision.train.monitoring import ENV_WEBHOOK, NonFiniteLoss
from rxvision.train.run import train

pytestmark = pytest.mark.integration

BUCKET = "s3://rxvision-checkpoints"


@pytest.fixture
def webhook(
    stack: LocalStack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Receiver]:
    """The stack's variables (statsd included) and a webhook, as the training task gets."""
    receiver = Receiver([])
    monkeypatch.setenv("RXVISION_HOME", str(stack.home.root))
    monkeypatch.setenv(ENV_WEBHOOK, receiver.url)
    for name in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_TASK_ID", "STATSD_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield receiver
    finally:
        receiver.close()


def counters_after(stack: LocalStack, expected: dict[str, float]) -> dict[str, float]:
    """The statsd counters once each of ``expected`` reached its value (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        counters: dict[str, float] = stack.metrics()["counters"]
        done = all(counters.get(k, 0) >= v for k, v in expected.items())
        if done or time.monotonic() > deadline:
            return counters
        time.sleep(0.2)


def test_each_forced_threshold_alerts_once_at_every_sink(
    stack: LocalStack, webhook: Receiver, tiny_pills: Path, tmp_path: Path
) -> None:
    run_id = f"it-alerts-{uuid.uuid4().hex[:6]}"
    records = f"s3://rxvision-artifacts/alerts-{run_id}"
    free = shutil.disk_usage(stack.home.cache_dir).free
    cfg = load_train_config(
        CPU_QUICK,
        [
            *TINY,
            "training.epochs=3",
            "checkpoint.every_n_steps=2",
            f"checkpoint.root={BUCKET}",
            "monitoring.check_every_n_steps=1",
            "monitoring.max_rss=1",
            "monitoring.min_throughput_fraction=1e9",
            "monitoring.throughput_warmup_steps=1",
            "monitoring.throughput_window=1",
            "monitoring.throughput_sustain_s=0",  # cpu-quick waits 2 minutes: not here
            f"monitoring.min_free_disk={free + 2**40}",  # S3 root: the staging folder's disk
            "monitoring.plateau_evals=1",
            "monitoring.plateau_min_delta=1.0",
            "monitoring.plateau_target=null",  # a perfect tiny split would end the count
            f"monitoring.alerts_uri={records}",
        ],
    )
    metrics = ("peak_rss", "throughput", "free_disk", "no_improvement")
    before = stack.metrics()["counters"]
    result = train(cfg, tiny_pills, run_id=run_id, progress_bar=False)
    assert result.global_step == result.max_steps  # alerts only: the run went on
    assert sorted(result.extra["alerts"]) == sorted(metrics)
    payloads = [body["payload"] for body in webhook.bodies]
    assert sorted(p["class"] for p in payloads) == sorted(f"train_{m}" for m in metrics)
    for payload in payloads:
        details = payload["custom_details"]
        assert details["run_id"] == run_id
        assert f"training {details['metric']} = {details['value']}" in payload["summary"]
        assert f"crossed its threshold {details['threshold']}" in payload["summary"]
    by_metric = {p["custom_details"]["metric"]: p["custom_details"] for p in payloads}
    assert by_metric["peak_rss"]["threshold"] == "<= 1 B"
    # an S3 root takes local disk in its staging folder (or the folder that will hold it)
    staging = stack.home.cache_dir / "checkpoints" / run_id
    measured = Path(by_metric["free_disk"]["value"].split(" free at ", 1)[1])
    assert staging.is_relative_to(measured)
    recorded = list(list_alerts(records, S3Store()))
    assert sorted(r["kind"] for r in recorded) == sorted(f"train_{m}" for m in metrics)
    assert all(r["delivery"]["webhook"] == "202" for r in recorded)
    expected = {
        f"rxvision.alerts.train_{m}": before.get(f"rxvision.alerts.train_{m}", 0) + 1
        for m in metrics
    }
    counters = counters_after(stack, expected)
    assert {k: counters.get(k) for k in expected} == expected


def test_nan_loss_stops_the_run_and_keeps_a_finite_checkpoint(
    stack: LocalStack,
    webhook: Receiver,
    tiny_pills: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = train_run.build_module

    def with_nan_from_step_3(*args: Any, **kwargs: Any) -> RxVisionTrainer:
        module = original(*args, **kwargs)

        def hook(layer: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            if module.training and module.trainer.global_step >= 3:
                return output * float("nan")
            return None

        module.head.register_forward_hook(hook)
        return module

    monkeypatch.setattr(train_run, "build_module", with_nan_from_step_3)
    run_id = f"it-nan-{uuid.uuid4().hex[:6]}"
    cfg = load_train_config(
        CPU_QUICK,
        [*TINY, "training.epochs=3", "checkpoint.every_n_steps=2", f"checkpoint.root={BUCKET}"],
    )
    with pytest.raises(NonFiniteLoss) as caught:
        train(cfg, tiny_pills, run_id=run_id, progress_bar=False)
    store = S3Store()
    keys = sorted(k.rsplit("/", 1)[-1] for k in store.list_keys(f"{BUCKET}/{run_id}/"))
    steps = [k for k in keys if k.startswith("step-")]
    # every 2 steps and at epoch ends, up to step 3 (whose update was still finite)
    assert steps and set(steps) <= {"step-00000002.ckpt", "step-00000003.ckpt"}
    last = f"{BUCKET}/{run_id}/{steps[-1]}"
    assert "training loss is nan at step 3 (train/loss)" in str(caught.value)
    assert f"Last good checkpoint: {last}" in str(caught.value)
    local = Path(str(stack.home.root)) / "nan-check.ckpt"
    store.download_file(last, local)
    data = torch.load(local, map_location="cpu", weights_only=True)
    assert data["global_step"] == int(steps[-1][5:13])
    weights = [t for t in data["state_dict"].values() if t.is_floating_point()]
    assert weights and all(torch.isfinite(t).all() for t in weights)
    payloads = [body["payload"] for body in webhook.bodies]
    assert [p["class"] for p in payloads] == ["train_nonfinite_loss"]
    assert payloads[0]["severity"] == "critical"
    assert payloads[0]["custom_details"]["last_good_checkpoint"] == last
    client = MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name("rxvision_cpu_quick").experiment_id],
        filter_string=f"tags.`rxvision.run_id` = '{run_id}'",
    )
    assert [r.info.status for r in runs] == ["FAILED"]
