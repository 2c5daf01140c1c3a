"""Resource and training-health thresholds during a fit, sent as on-call alerts.

``TrainingMonitor`` watches, on global rank 0, what ``monitoring:`` in the training config
sets a threshold for: peak RSS, the GPU memory fraction, throughput against its running
median, a non-finite loss, validation without improvement, and free disk where the
checkpoints go. A crossing sends one ``Alert`` through ``rxvision.pipeline.alerts`` (log,
statsd, webhook, S3 record, incident) naming the metric, its value and the threshold;
each metric alerts once per run (remembered in the checkpoint, so a resume does not page
again). A non-finite loss, checked on every rank before the backward pass (so the weights
never take that step), alerts and stops the run with ``NonFiniteLoss``; the newest step
checkpoint stays the last good one, because ``StepCheckpoint`` never writes non-finite
weights.

The sinks come from the environment the training container gets: ``STATSD_HOST`` and
``STATSD_PORT``, ``RXVISION_ALERT_WEBHOOK_URL`` (a secret: never logged) and
``monitoring.alerts_uri`` for the S3 records and incidents.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from rxvision.errors import RxVisionError
from rxvision.pipeline.alerts import Alert, AlertSinks
from rxvision.pipeline.incidents import incidents_uri_for
from rxvision.train.checkpoints import CheckpointStore
from rxvision.train.config import MonitoringConfig
from rxvision.train.resource_probes import (
    ThroughputWatch,
    checkpoint_disk,
    free_disk_bytes,
    gib,
    peak_rss_bytes,
)

log = logging.getLogger(__name__)

ENV_WEBHOOK = "RXVISION_ALERT_WEBHOOK_URL"
# the alert's dag and task: Airflow's context when the task exports it, else the CLI's
ENV_DAG_ID = "AIRFLOW_CTX_DAG_ID"
ENV_TASK_ID = "AIRFLOW_CTX_TASK_ID"
DEFAULT_DAG_ID = "rxvision_train"
DEFAULT_TASK_ID = "train"


class NonFiniteLoss(RxVisionError):
    """The training loss became NaN or infinite: the run stopped (its last good
    checkpoint is kept)."""

    exit_code = 14  # 13: CheckpointDataMismatch


@dataclass(frozen=True)
class Crossing:
    """One threshold crossed: what, by how much, and when."""

    metric: str
    value: str
    threshold: str
    step: int
    severity: str = "warning"
    details: Mapping[str, Any] | None = None

    def summary(self, run_id: str) -> str:
        """The alert's one line: metric, value, threshold, step and run."""
        return (
            f"training {self.metric} = {self.value} crossed its threshold {self.threshold} "
            f"at step {self.step} (run {run_id})"
        )


def sinks_from_env(alerts_uri: str | None, env: Mapping[str, str] | None = None) -> AlertSinks:
    """Log, statsd (``STATSD_HOST``/``STATSD_PORT``), the webhook
    (``RXVISION_ALERT_WEBHOOK_URL``), and records plus incidents under ``alerts_uri``."""
    env = os.environ if env is None else env
    return AlertSinks(
        webhook_url=env.get(ENV_WEBHOOK) or None,
        statsd_host=env.get("STATSD_HOST") or None,
        statsd_port=int(env.get("STATSD_PORT") or 8125),
        prefix=env.get("STATSD_PREFIX") or "rxvision",
        records_uri=alerts_uri,
        incidents_uri=incidents_uri_for(alerts_uri),
    )


class TrainingMonitor(Callback):
    """Thresholds of ``MonitoringConfig`` checked during a fit; one alert per metric per run.

    Always in the callbacks (cheap when every threshold is off), so a checkpoint's state of
    this callback always has a home when a run resumes.
    """

    def __init__(
        self,
        cfg: MonitoringConfig,
        *,
        run_id: str,
        store: CheckpointStore,
        world_size: int = 1,
        sinks: AlertSinks | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.store = store
        self.world_size = world_size
        self._sinks = sinks
        self.alerted: list[str] = []  # metrics alerted in this run (kept across resumes)
        self.best: float | None = None
        self.evals_since_best = 0
        self.throughput = ThroughputWatch(cfg.throughput_warmup_steps, cfg.throughput_window)
        # when the throughput first fell under its floor (None: not under it now)
        self._slow_since: float | None = None
        self.clock = time.monotonic

    @property
    def sinks(self) -> AlertSinks:
        """The alert sinks (built from the environment on first use)."""
        if self._sinks is None:
            self._sinks = sinks_from_env(self.cfg.alerts_uri)
        return self._sinks

    # --- state kept in checkpoints ---------------------------------------------------

    @property
    def state_key(self) -> str:
        """One key: the monitor's state (stable across resumes)."""
        return "TrainingMonitor"

    def state_dict(self) -> dict[str, Any]:
        """Metrics alerted and the plateau count: a resumed run does not page again."""
        return {"alerted": list(self.alerted), "best": self.best, "evals": self.evals_since_best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` kept."""
        self.alerted = list(state_dict.get("alerted", []))
        self.best = state_dict.get("best")
        self.evals_since_best = int(state_dict.get("evals", 0))

    # --- hooks -----------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Say which thresholds are on; the GPU one is skipped without CUDA."""
        if not trainer.is_global_zero:
            return
        if self.cfg.max_gpu_memory_fraction is not None and pl_module.device.type != "cuda":
            log.info("monitoring: GPU memory threshold skipped: training on %s", pl_module.device)
        on = self.cfg.enabled_thresholds()
        log.info("monitoring: thresholds %s", ", ".join(on) if on else "none")

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        """Stop on a non-finite loss before its gradients reach the weights.

        Every rank checks and they agree (any rank's NaN stops all), so no rank is left
        waiting in a collective.
        """
        if self.cfg.nonfinite_loss == "off":
            return
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        step = trainer.global_step
        value = f"{float(loss.detach().float().reshape(-1)[0])}"
        if self.cfg.nonfinite_loss == "alert":
            self._alert(trainer, Crossing("nonfinite_loss", value, "finite", step))
            return
        last_good = self._last_good_checkpoint(trainer)
        crossing = Crossing(
            "nonfinite_loss",
            value,
            "finite",
            step,
            severity="critical",
            details={"last_good_checkpoint": last_good},
        )
        self._alert(trainer, crossing)
        raise NonFiniteLoss(
            f"run {self.run_id}: training loss is {value} at step {step} (train/loss); "
            f"training stopped. Last good checkpoint: {last_good or 'none written yet'}"
        )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start the throughput clock."""
        self.throughput.start()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Count the batch; every ``check_every_n_steps`` steps, check the thresholds."""
        self.throughput.batch_done(int(batch[1].shape[0]) * self.world_size)
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.cfg.check_every_n_steps:
            return
        for crossing in self.resource_crossings(pl_module, step):
            self._alert(trainer, crossing)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop the throughput clock (checkpoints and validation follow)."""
        self.throughput.pause()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop the throughput clock: an evaluation is no slow batch."""
        self.throughput.pause()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Count evaluations without improvement of the monitored metric."""
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.cfg.plateau_metric)
        if self.cfg.plateau_evals is None or value is None:
            return
        score = float(value)
        sign = 1.0 if self.cfg.plateau_mode == "max" else -1.0
        if self.best is None or sign * (score - self.best) > self.cfg.plateau_min_delta:
            self.best, self.evals_since_best = score, 0
            return
        target = self.cfg.plateau_target
        if target is not None and sign * (self.best - target) >= 0:
            return  # at its target: nothing left to improve, no plateau
        self.evals_since_best += 1
        if self.evals_since_best < self.cfg.plateau_evals:
            return
        if trainer.is_global_zero:
            best = f"{self.cfg.plateau_metric} best {self.best:.4f}"
            crossing = Crossing(
                "no_improvement",
                f"{self.evals_since_best} evaluations ({best})",
                f"{self.cfg.plateau_evals} evaluations",
                trainer.global_step,
            )
            self._alert(trainer, crossing)
        if self.cfg.stop_on_plateau:
            log.warning(
                "stopping at step %d: %s did not improve for %d evaluations",
                trainer.global_step,
                self.cfg.plateau_metric,
                self.evals_since_best,
            )
            trainer.should_stop = True

    # --- checks ----------------------------------------------------------------------

    def resource_crossings(self, pl_module: pl.LightningModule, step: int) -> list[Crossing]:
        """The resource thresholds crossed now (RSS, GPU memory, throughput, free disk)."""
        cfg, found = self.cfg, []
        if cfg.max_rss is not None:
            rss = peak_rss_bytes()
            if rss > cfg.max_rss:
                found.append(Crossing("peak_rss", gib(rss), f"<= {gib(cfg.max_rss)}", step))
        if cfg.max_gpu_memory_fraction is not None and pl_module.device.type == "cuda":
            device = pl_module.device
            total = torch.cuda.get_device_properties(device).total_memory
            fraction = torch.cuda.max_memory_reserved(device) / total
            if fraction > cfg.max_gpu_memory_fraction:
                found.append(
                    Crossing(
                        "gpu_memory_fraction",
                        f"{fraction:.3g}",
                        f"<= {cfg.max_gpu_memory_fraction}",
                        step,
                    )
                )
        medians = self.throughput.medians() if cfg.min_throughput_fraction else None
        if medians is not None and cfg.min_throughput_fraction is not None:
            recent, running = medians
            floor = cfg.min_throughput_fraction * running
            if self._slow_for_long(recent < floor):
                found.append(
                    Crossing(
                        "throughput",
                        f"{recent:.1f} images/s",
                        f">= {floor:.1f} images/s ({cfg.min_throughput_fraction:g} x running "
                        f"median {running:.1f})",
                        step,
                    )
                )
        if cfg.min_free_disk is not None:
            folder, free = free_disk_bytes(checkpoint_disk(self.store))
            if free < cfg.min_free_disk:
                found.append(
                    Crossing(
                        "free_disk",
                        f"{gib(free)} free at {folder}",
                        f">= {gib(cfg.min_free_disk)}",
                        step,
                    )
                )
        return found

    def _slow_for_long(self, slow: bool) -> bool:
        """Whether throughput has been under its floor at every check for
        ``throughput_sustain_s`` (a minute of a shared machine's other work is no page)."""
        if not slow:
            self._slow_since = None
            return False
        now = self.clock()
        if self._slow_since is None:
            self._slow_since = now
        return now - self._slow_since >= self.cfg.throughput_sustain_s

    def _last_good_checkpoint(self, trainer: pl.Trainer) -> str | None:
        """The newest step checkpoint (all are finite: ``StepCheckpoint`` refuses others)."""
        if not trainer.is_global_zero:
            return None
        try:
            steps = self.store.list_steps()
        except Exception as exc:  # the error must still name the step and the loss
            log.error("cannot list checkpoints at %s: %s", self.store.uri, type(exc).__name__)
            return None
        return steps[-1].uri if steps else None

    def _alert(self, trainer: pl.Trainer, crossing: Crossing) -> None:
        """Send ``crossing`` once per metric per run (rank 0 only; never raises)."""
        if not trainer.is_global_zero or crossing.metric in self.alerted:
            return
        self.alerted.append(crossing.metric)
        alert = Alert(
            kind=f"train_{crossing.metric}",
            dag_id=os.environ.get(ENV_DAG_ID) or DEFAULT_DAG_ID,
            run_id=self.run_id,
            task_id=os.environ.get(ENV_TASK_ID) or DEFAULT_TASK_ID,
            summary=crossing.summary(self.run_id),
            severity=crossing.severity,
            details={
                "metric": crossing.metric,
                "value": crossing.value,
                "threshold": crossing.threshold,
                "step": crossing.step,
                "checkpoints": self.store.uri,
                **(crossing.details or {}),
            },
        )
        try:
            outcome = self.sinks.send(alert)
        except Exception:  # alerting must never break training
            log.exception("could not deliver training alert %s", alert.dedupe_key)
            return
        log.info("training alert %s delivered: %s", alert.kind, outcome)
