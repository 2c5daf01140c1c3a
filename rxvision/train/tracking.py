"""MLflow tracking of a training run: params, lineage tags, metrics, plots, the model.

The tracking URI comes from the config, else ``MLFLOW_TRACKING_URI``, else a local SQLite
store under ``$RXVISION_HOME/mlflow`` (training works with no servers). One RxVision run
id maps to one MLflow run (tag ``rxvision.run_id``): a resumed run logs into the same
MLflow run.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn

from rxvision.config.schema import MlflowTracking
from rxvision.data.imaging import ImageSpec
from rxvision.data.references import (
    REFERENCE_PX,
    REFERENCE_QUALITY,
    REFERENCES_DIR,
    REFERENCES_INDEX,
    reference_index,
    thumbnail_jpeg,
)
from rxvision.home import Home, repo_root

log = logging.getLogger(__name__)

RUN_ID_TAG = "rxvision.run_id"
PACKAGES = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "mlflow", "rxvision")
MAX_PARAM_LENGTH = 6000  # MLflow 3 refuses longer param values
BATCH = 100  # MLflow's limit of params/tags per log_batch call


def resolve_tracking_uri(config: MlflowTracking, home: Home) -> tuple[str, bool]:
    """The tracking URI and whether it is the local fallback store."""
    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, False
    return home.local_mlflow_uri(), True


def git_commit() -> str | None:
    """The commit of the code: ``RXVISION_GIT_COMMIT`` (set in images), else ``git``."""
    if os.environ.get("RXVISION_GIT_COMMIT"):
        return os.environ["RXVISION_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide what a model is; torch's and
    torchvision's with their build tag (e.g. ``2.14.1+cu130``: the CUDA they were built for)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions["torch"] = torch.__version__
    versions["torchvision"] = torchvision.__version__
    return versions


def lineage_tags(
    run_id: str, *, snapshot_rev: str | None, snapshot_hash: str | None
) -> dict[str, str]:
    """Tags that say what data and code made the run."""
    tags = {RUN_ID_TAG: run_id}
    if snapshot_rev:
        tags["dataset.snapshot_rev"] = snapshot_rev
    if snapshot_hash:
        tags["dataset.content_hash"] = snapshot_hash
    commit = git_commit()
    if commit:
        tags["git.commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    for name, version in package_versions().items():
        tags[f"version.{name}"] = version
    return tags


def pip_requirements() -> list[str]:
    """What the logged model needs to load (public versions, without ``+cu130`` suffixes)."""
    versions = package_versions()
    return [
        f"{name}=={versions[name].split('+')[0]}"
        for name in ("torch", "torchvision")
        if name in versions
    ]


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger that leaves the run open at the end of ``fit``: the run
    goes on with evaluation and artifacts, and ``RunTracker.end`` closes it."""

    def finalize(self, status: str = "success") -> None:
        """Keep the run open (see the class docstring)."""


class RunTracker:
    """One MLflow run: created, or found again by its RxVision run id."""

    def __init__(self, config: MlflowTracking, home: Home) -> None:
        self.config = config
        self.uri, self.local = resolve_tracking_uri(config, home)
        self.artifact_root = (home.root / "mlflow" / "artifacts").as_uri() if self.local else None
        self.client = MlflowClient(self.uri)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.resumed = False

    def _experiment(self) -> str:
        name = self.config.experiment_name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=self.artifact_root))
        except Exception:  # another process created it first
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    def start(self, run_name: str, tags: Mapping[str, str]) -> str:
        """Create the MLflow run of ``run_name``, or reopen it; set ``tags``; return its id."""
        self.experiment_id = self._experiment()
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_ID_TAG}` = '{run_name}'",
            max_results=1,
        )
        all_tags = {**self.config.tags, **tags}
        if runs:
            self.run_id = runs[0].info.run_id
            self.resumed = True
            self.client.update_run(self.run_id, status="RUNNING")
            log.info("resuming MLflow run %s (%s)", self.run_id, run_name)
        else:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
            self.run_id = run.info.run_id
            log.info("MLflow run %s (%s) at %s", self.run_id, run_name, self.uri)
        items = [RunTag(k, str(v)) for k, v in all_tags.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, tags=items[start : start + BATCH])
        return self.run_id

    @property
    def active_run_id(self) -> str:
        """The run id (``start`` must have been called)."""
        if self.run_id is None:
            raise RuntimeError("RunTracker.start() was not called")
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; on a resumed run, only new keys (MLflow params cannot change)."""
        run_id = self.active_run_id
        existing = self.client.get_run(run_id).data.params
        new = []
        for key, value in params.items():
            text = str(value)[:MAX_PARAM_LENGTH]
            if key in existing:
                if existing[key] != text:
                    log.warning(
                        "param %s changed on resume (%s -> %s): kept the first",
                        key,
                        existing[key],
                        text,
                    )
                continue
            new.append(Param(key, text))
        for start in range(0, len(new), BATCH):
            self.client.log_batch(run_id, params=new[start : start + BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log a set of metrics at ``step``."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.active_run_id, metrics=items[start : start + 1000])

    def lightning_logger(self) -> RunLogger:
        """A Lightning logger writing into this run."""
        return RunLogger(
            experiment_name=self.config.experiment_name,
            tracking_uri=self.uri,
            run_id=self.active_run_id,
        )

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a local file."""
        self.client.log_artifact(self.active_run_id, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Upload ``data`` as a JSON artifact."""
        self.client.log_dict(self.active_run_id, dict(data), artifact_file)

    def log_references(
        self, references: Mapping[str, tuple[np.ndarray, Mapping[str, str]]]
    ) -> None:
        """Log each class's reference photo as a JPEG thumbnail under ``references/``, with
        ``references/index.json`` (``rxvision.data.references``; one upload for all)."""
        with tempfile.TemporaryDirectory(prefix="rxvision-references-") as tmp:
            folder = Path(tmp)
            index = reference_index({name: source for name, (_, source) in references.items()})
            for name, (pixels, _) in references.items():
                data = thumbnail_jpeg(pixels, REFERENCE_PX, REFERENCE_QUALITY)
                (folder / index["classes"][name]["file"]).write_bytes(data)
            (folder / Path(REFERENCES_INDEX).name).write_text(json.dumps(index, indent=2))
            self.client.log_artifacts(self.active_run_id, str(folder), REFERENCES_DIR)

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        """Upload a matplotlib figure as a PNG."""
        self.client.log_figure(self.active_run_id, figure, artifact_file)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of every logged value of ``key``, in step order."""
        history = self.client.get_metric_history(self.active_run_id, key)
        return sorted((m.step, m.value) for m in history)

    def log_model(
        self,
        net: nn.Module,
        *,
        classes: Sequence[str],
        spec: ImageSpec,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Log the inference model with ``mlflow.pytorch`` under ``model``, with its classes
        and its preprocessing contract (``spec``, checked when it is loaded); return its URI."""
        img_size = spec.img_size
        import mlflow
        import mlflow.pytorch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, img_size, img_size))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(classes)))]),
        )
        mlflow.set_tracking_uri(self.uri)
        # The fluent API refuses to resume a run of another experiment than the process's
        # active one (set_experiment elsewhere in the process): make ours the active one.
        run = self.client.get_run(self.active_run_id)
        mlflow.set_experiment(experiment_id=run.info.experiment_id)
        with mlflow.start_run(run_id=self.active_run_id):
            info = mlflow.pytorch.log_model(
                pytorch_model=net,
                name="model",
                pip_requirements=pip_requirements(),
                # pickle, not MLflow 3's default pt2: a pt2 graph is traced with one example
                # batch and needs it; the net is torchvision and torch.nn classes only
                serialization_format="pickle",
                signature=signature,
                metadata={
                    "classes": list(classes),
                    "img_size": img_size,
                    "preprocessing": spec.to_dict(),
                    **(metadata or {}),
                },
            )
        return str(info.model_uri)

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with ``status`` (FINISHED, FAILED or KILLED)."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)


def confusion_figure(matrix: np.ndarray, classes: Sequence[str]) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted) with counts."""
    size = max(4.0, 0.5 * len(classes) + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=list(classes), rotation=90, fontsize=7)
    ax.set_yticks(ticks, labels=list(classes), fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        colour = "white" if value > threshold else "black"
        ax.text(col, row, str(int(value)), ha="center", va="center", color=colour, fontsize=7)
    fig.tight_layout()
    return fig


def loss_curve_figure(
    train: Sequence[tuple[int, float]],
    val: Sequence[tuple[int, float]],
    top1: Sequence[tuple[int, float]] = (),
) -> Figure:
    """Training loss per step, validation loss (and top-1) per validation."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train, strict=True), label="train/loss", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="val/loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if top1:
        acc = ax.twinx()
        acc.plot(*zip(*top1, strict=True), marker="s", color="tab:green", label="val/top1")
        acc.set_ylabel("val top-1")
        acc.set_ylim(0, 1.02)
        acc.legend(loc="center right")
    if train or val:  # a legend with nothing in it is a matplotlib warning
        ax.legend(loc="upper right")
    fig.tight_layout()
    return fig
