"""Training alert thresholds, each forced on a real ``pl.Trainer`` fit of a tiny model.

Alerts go through the real sinks built from the environment: a webhook ``http.server`` on
loopback (``RXVISION_ALERT_WEBHOOK_URL``) and the project's statsd receiver
(``rxvision.stack.statsd_receiver``, a subprocess on a free UDP port). A non-finite loss
stops the fit with ``NonFiniteLoss`` and leaves only checkpoints with finite weights.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from http_receiver import Receiver
from lightning_helpers import cpu_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rxvision.errors import ConfigError
from rxvision.stack.statsd_receiver import load_metrics
from rxvision.train.checkpoint_callback import StepCheckpoint, finite_weights
from rxvision.train.checkpoints import CheckpointStore, verify_checkpoint
from rxvision.train.config import MonitoringConfig, OptimizerConfig, load_train_config
from rxvision.train.module import RxVisionTrainer
from rxvision.train.monitoring import ENV_WEBHOOK, NonFiniteLoss, TrainingMonitor

pytestmark = pytest.mark.unit

CLASSES = ["a", "b", "c"]
BATCH = 4
STEPS_PER_EPOCH = 6  # 24 training images


@dataclass
class Sinks:
    """The real sinks the monitor finds through the environment."""

    webhook: Receiver
    statsd_state: Path

    def counters(self, expected: str, timeout: float = 10) -> dict[str, float]:
        """The receiver's counters once ``expected`` arrived (the state is flushed ~0.5 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counters: dict[str, float] = load_metrics(self.statsd_state)["counters"]
            if expected in counters:
                return counters
            time.sleep(0.1)
        return dict(load_metrics(self.statsd_state)["counters"])

    def alerts(self) -> list[dict[str, Any]]:
        """Every webhook body's PagerDuty payload."""
        return [body["payload"] for body in self.webhook.bodies]


def tiny_net() -> nn.Module:
    """Conv, BatchNorm, pooling: 8 features."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sinks]:
    """A webhook and a statsd receiver, named in the environment as the pipeline does."""
    port, state = _free_udp_port(), tmp_path / "statsd.json"
    command = [sys.executable, "-m", "rxvision.stack.statsd_receiver", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--state", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    webhook = Receiver([])
    try:
        deadline = time.monotonic() + 30
        while not state.is_file():  # written once it listens
            assert proc.poll() is None and time.monotonic() < deadline, "statsd receiver"
            time.sleep(0.05)
        monkeypatch.setenv(ENV_WEBHOOK, webhook.url)
        monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
        monkeypatch.setenv("STATSD_PORT", str(port))
        for name in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_TASK_ID", "STATSD_PREFIX"):
            monkeypatch.delenv(name, raising=False)
        yield Sinks(webhook, state)
    finally:
        webhook.close()
        proc.terminate()
        proc.wait(timeout=10)


def _loader(n: int, seed: int = 0) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 16, 16, generator=generator)
    labels = torch.arange(n) % len(CLASSES)
    images += labels.view(-1, 1, 1, 1) * 0.5  # separable: validation can improve
    return DataLoader(TensorDataset(images, labels), batch_size=BATCH)


@dataclass
class Fit:
    trainer: pl.Trainer
    module: RxVisionTrainer
    store: CheckpointStore
    monitor: TrainingMonitor


def fit(
    tmp_path: Path,
    monitoring: MonitoringConfig,
    *,
    max_steps: int = 2 * STEPS_PER_EPOCH,
    every_n_steps: int = 2,
    lr: float = 1e-3,
    module: RxVisionTrainer | None = None,
) -> Fit:
    """A CPU fit of the tiny model with StepCheckpoint and the monitor, as ``run.py`` wires them."""
    torch.manual_seed(0)
    module = module or RxVisionTrainer(
        tiny_net(), 8, CLASSES, optimizer=OptimizerConfig(lr=lr), steps_per_epoch=6
    )
    store = CheckpointStore(str(tmp_path / "ckpt"), "run-m", staging_root=tmp_path / "staging")
    monitor = TrainingMonitor(monitoring, run_id="run-m", store=store)
    callbacks = [StepCheckpoint(store, every_n_steps=every_n_steps, keep_last=3), monitor]
    trainer = cpu_trainer(callbacks, max_steps, tmp_path / "pl")
    result = Fit(trainer, module, store, monitor)
    trainer.fit(module, _loader(24), _loader(12, seed=1))
    return result


def only_alert(sinks: Sinks, kind: str) -> dict[str, Any]:
    """The one webhook alert of ``kind`` (and no second of it)."""
    found = [a for a in sinks.alerts() if a["class"] == kind]
    assert len(found) == 1, sinks.alerts()
    return found[0]


def test_peak_rss_over_one_byte_alerts_once(sinks: Sinks, tmp_path: Path) -> None:
    fit(tmp_path, MonitoringConfig(max_rss=1, check_every_n_steps=1))
    alert = only_alert(sinks, "train_peak_rss")  # checked at 12 steps: one alert
    assert alert["summary"].startswith("training peak_rss = ")
    assert "crossed its threshold <= 1 B at step 1 (run run-m)" in alert["summary"]
    details = alert["custom_details"]
    assert details["metric"] == "peak_rss" and details["threshold"] == "<= 1 B"
    assert details["value"].endswith(" MiB") or details["value"].endswith(" GiB")
    assert details["run_id"] == "run-m" and details["step"] == 1
    counters = sinks.counters("rxvision.alerts.train_peak_rss")
    assert counters["rxvision.alerts.train_peak_rss"] == 1
    assert counters["rxvision.alerts.train_peak_rss.rxvision_train.train"] == 1


def test_throughput_under_its_running_median_alerts(sinks: Sinks, tmp_path: Path) -> None:
    cfg = MonitoringConfig(
        min_throughput_fraction=1e9,
        throughput_warmup_steps=1,
        throughput_window=2,
        check_every_n_steps=1,
    )
    run = fit(tmp_path, cfg)
    alert = only_alert(sinks, "train_throughput")
    assert "images/s" in alert["custom_details"]["value"]
    assert "1e+09 x running median" in alert["custom_details"]["threshold"]
    assert "training throughput = " in alert["summary"]
    # the warm-up batch, then a window of 2: checked from step 3 on, alerted once
    assert alert["custom_details"]["step"] == 3
    assert len(run.monitor.throughput.rates) == 2 * STEPS_PER_EPOCH
    assert sinks.counters("rxvision.alerts.train_throughput")["rxvision.alerts.train_throughput"]


def test_throughput_alerts_only_once_under_its_floor_for_throughput_sustain_s(
    sinks: Sinks, tmp_path: Path
) -> None:
    cfg = MonitoringConfig(
        min_throughput_fraction=1e9,  # under the floor at every check
        throughput_warmup_steps=1,
        throughput_window=2,
        check_every_n_steps=1,
        throughput_sustain_s=10.0,
    )
    # a clock that says 4 s pass between checks: under the floor at steps 3, 4, 5, 6
    # is 0, 4, 8, 12 s, so the alert comes at step 6
    monitor = TrainingMonitor(cfg, run_id="run-m", store=None)  # type: ignore[arg-type]
    ticks = iter(range(0, 10_000, 4))
    monitor.clock = lambda: float(next(ticks))
    monitor.throughput.rates = [100.0, 100.0]
    steps = []
    for step in range(3, 9):
        monitor.throughput.rates.append(10.0)
        if any(c.metric == "throughput" for c in monitor.resource_crossings(None, step)):  # type: ignore[arg-type]
            steps.append(step)
    assert steps[0] == 6
    # back over the floor: the clock starts again from the next slow check
    assert not monitor._slow_for_long(False) and not monitor._slow_for_long(True)
    # a whole fit at one batch per millisecond never stays slow for an hour: no page
    fit(tmp_path, cfg.model_copy(update={"throughput_sustain_s": 3600.0}))
    assert sinks.alerts() == []


def test_free_disk_under_threshold_alerts(sinks: Sinks, tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    fit(tmp_path, MonitoringConfig(min_free_disk=free + 2**40, check_every_n_steps=3))
    alert = only_alert(sinks, "train_free_disk")
    details = alert["custom_details"]
    assert details["value"].endswith(f" free at {tmp_path / 'ckpt' / 'run-m'}")
    assert details["threshold"] == f">= {(free + 2**40) / 2**30:.2f} GiB"
    assert details["step"] == 3
    assert sinks.counters("rxvision.alerts.train_free_disk")["rxvision.alerts.train_free_disk"]


def test_no_improvement_alerts_and_stops_the_fit(sinks: Sinks, tmp_path: Path) -> None:
    # improving by more than 1.0 in top-1 is impossible: the 2nd evaluation has none
    cfg = MonitoringConfig(plateau_evals=1, plateau_min_delta=1.0, stop_on_plateau=True)
    run = fit(tmp_path, cfg, max_steps=10 * STEPS_PER_EPOCH)
    assert run.trainer.global_step == 2 * STEPS_PER_EPOCH  # stopped after 2 evaluations
    alert = only_alert(sinks, "train_no_improvement")
    assert alert["custom_details"]["value"].startswith("1 evaluations (val/top1 best ")
    assert alert["custom_details"]["threshold"] == "1 evaluations"
    assert sinks.counters("rxvision.alerts.train_no_improvement")


def test_no_improvement_past_the_plateau_target_is_no_plateau(sinks: Sinks, tmp_path: Path) -> None:
    # the same impossible improvement, but a best at the target (any top-1 >= 0) is the
    # metric's end (a validation top-1 of 1.0): no alert, no early stop
    cfg = MonitoringConfig(
        plateau_evals=1, plateau_min_delta=1.0, stop_on_plateau=True, plateau_target=0.0
    )
    run = fit(tmp_path, cfg, max_steps=4 * STEPS_PER_EPOCH)
    assert run.trainer.global_step == 4 * STEPS_PER_EPOCH
    assert run.monitor.evals_since_best == 0
    assert sinks.alerts() == []


def test_gpu_threshold_is_skipped_on_cpu(
    sinks: Sinks, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="rxvision.train.monitoring"):
        fit(tmp_path, MonitoringConfig(max_gpu_memory_fraction=1e-9, check_every_n_steps=1))
    assert "GPU memory threshold skipped: training on cpu" in caplog.text
    assert sinks.alerts() == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_memory_fraction_alerts_on_cuda(sinks: Sinks, tmp_path: Path) -> None:
    module = RxVisionTrainer(tiny_net(), 8, CLASSES, steps_per_epoch=6).cuda()
    monitor = TrainingMonitor(
        MonitoringConfig(max_gpu_memory_fraction=1e-9),
        run_id="run-m",
        store=CheckpointStore(str(tmp_path), "run-m", staging_root=tmp_path / "s"),
    )
    module(torch.rand(4, 3, 16, 16, device="cuda"))  # the allocator holds some memory
    (crossing,) = monitor.resource_crossings(module, step=10)
    monitor._alert(pl.Trainer(accelerator="cpu", logger=False), crossing)
    details = only_alert(sinks, "train_gpu_memory_fraction")["custom_details"]
    assert details["threshold"] == "<= 1e-09" and float(details["value"]) > 0


class NanAfter:
    """A forward hook on the head: NaN logits from optimizer step ``step`` on."""

    def __init__(self, module: RxVisionTrainer, step: int) -> None:
        self.module, self.step = module, step
        module.head.register_forward_hook(self)

    def __call__(self, layer: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if self.module.training and self.module.trainer.global_step >= self.step:
            return output * float("nan")
        return None


def test_nonfinite_loss_stops_with_the_last_good_checkpoint(sinks: Sinks, tmp_path: Path) -> None:
    module = RxVisionTrainer(tiny_net(), 8, CLASSES, steps_per_epoch=6)
    NanAfter(module, step=5)
    with pytest.raises(NonFiniteLoss) as caught:
        fit(tmp_path, MonitoringConfig(), module=module, every_n_steps=2)
    message = str(caught.value)
    assert "training loss is nan at step 5" in message
    last = tmp_path / "ckpt" / "run-m" / "step-00000004.ckpt"
    assert f"Last good checkpoint: {last}" in message
    assert caught.value.exit_code == 14
    # the NaN step never reached the weights: nothing after step 4 was written
    names = sorted(p.name for p in (tmp_path / "ckpt" / "run-m").glob("step-*.ckpt"))
    assert names == ["step-00000002.ckpt", "step-00000004.ckpt"]
    data = verify_checkpoint(last)
    assert data is not None and data["global_step"] == 4
    assert all(
        torch.isfinite(t).all() for t in data["state_dict"].values() if t.is_floating_point()
    )
    restored = RxVisionTrainer(tiny_net(), 8, CLASSES)
    restored.load_state_dict(data["state_dict"])
    assert finite_weights(restored)
    alert = only_alert(sinks, "train_nonfinite_loss")
    assert alert["severity"] == "critical"
    assert alert["summary"] == (
        "training nonfinite_loss = nan crossed its threshold finite at step 5 (run run-m)"
    )
    assert alert["custom_details"]["last_good_checkpoint"] == str(last)
    counters = sinks.counters("rxvision.alerts.train_nonfinite_loss")
    assert counters["rxvision.alerts.train_nonfinite_loss"] == 1


def test_lr_1e30_stops_and_leaves_only_finite_checkpoints(sinks: Sinks, tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLoss, match=r"training loss is (nan|inf|-inf) at step \d+"):
        fit(tmp_path, MonitoringConfig(), lr=1e30, every_n_steps=1)
    written = sorted((tmp_path / "ckpt" / "run-m").glob("*.ckpt"))
    for path in written:
        data = torch.load(path, map_location="cpu", weights_only=True)
        weights = [t for t in data["state_dict"].values() if t.is_floating_point()]
        assert all(torch.isfinite(t).all() for t in weights), path.name
    assert only_alert(sinks, "train_nonfinite_loss")["severity"] == "critical"


def test_weights_gone_non_finite_are_never_checkpointed(
    sinks: Sinks, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # exploding gradients from step 3: the loss of step 3 is finite, its update is not
    module = RxVisionTrainer(tiny_net(), 8, CLASSES, steps_per_epoch=6)
    for param in module.parameters():
        param.register_hook(lambda g: g * 1e39 if module.trainer.global_step >= 3 else g)
    with (
        caplog.at_level(logging.ERROR, logger="rxvision.train.checkpoint_callback"),
        pytest.raises(NonFiniteLoss, match="training loss is nan at step 4 "),
    ):
        fit(tmp_path, MonitoringConfig(), module=module, every_n_steps=2)
    assert "not writing checkpoint step-00000004.ckpt at step 4: the model has non-finite" in (
        caplog.text
    )
    names = sorted(p.name for p in (tmp_path / "ckpt" / "run-m").glob("*.ckpt"))
    assert names == ["step-00000002.ckpt"]
    details = only_alert(sinks, "train_nonfinite_loss")["custom_details"]
    assert details["last_good_checkpoint"] == str(tmp_path / "ckpt" / "run-m" / names[0])


def test_an_alert_remembered_in_the_checkpoint_is_not_sent_again(
    sinks: Sinks, tmp_path: Path
) -> None:
    store = CheckpointStore(str(tmp_path / "ckpt"), "run-m", staging_root=tmp_path / "staging")
    first = TrainingMonitor(MonitoringConfig(max_rss=1), run_id="run-m", store=store)
    resumed = TrainingMonitor(MonitoringConfig(max_rss=1), run_id="run-m", store=store)
    first.alerted.append("peak_rss")
    resumed.load_state_dict(first.state_dict())
    trainer = pl.Trainer(accelerator="cpu", logger=False)
    module = RxVisionTrainer(tiny_net(), 8, CLASSES)
    for crossing in resumed.resource_crossings(module, step=7):
        resumed._alert(trainer, crossing)
    assert sinks.webhook.bodies == []


def test_monitoring_config() -> None:
    cfg = MonitoringConfig(max_rss="12GiB", min_free_disk="1.5GiB")  # type: ignore[arg-type]
    assert cfg.max_rss == 12 * 2**30 and cfg.min_free_disk == int(1.5 * 2**30)
    assert MonitoringConfig().enabled_thresholds() == ["nonfinite_loss=stop"]
    with pytest.raises(ValueError, match="alerts_uri"):
        MonitoringConfig(alerts_uri="/tmp/alerts")
    root = Path(__file__).resolve().parents[3] / "configs"
    for name in ("cpu-quick.yaml", "experiment.yaml"):
        monitoring = load_train_config(root / name).monitoring
        assert monitoring.nonfinite_loss == "stop" and monitoring.max_rss
        assert monitoring.alerts_uri is None  # RXVISION_ALERTS_URI unset
    with pytest.raises(ConfigError, match="monitoring"):
        load_train_config(root / "cpu-quick.yaml", ["monitoring.max_rss=lots"])
