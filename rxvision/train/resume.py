"""Where a run's checkpoints live and which one it resumes from: rank 0 picks the newest
loadable checkpoint of the run id and tells the other DDP ranks through the environment;
a checkpoint is bound to its data (``data_identity``) and to its place in an epoch
(``resume_progress``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from rxvision.home import Home
from rxvision.train.checkpoints import CheckpointStore
from rxvision.train.config import TrainConfig
from rxvision.train.datamodule import RxVisionDataModule

log = logging.getLogger(__name__)

# rank 0's choice of checkpoint, for the ranks that Lightning starts after it
ENV_RESUME = "RXVISION_TRAIN_RESUME"


def checkpoint_root(cfg: TrainConfig, home: Home) -> str:
    """``checkpoint.root``, or ``$RXVISION_HOME/checkpoints``."""
    return cfg.checkpoint.root or str(home.root / "checkpoints")


def checkpoint_store(cfg: TrainConfig, home: Home, run_id: str) -> CheckpointStore:
    """Where run ``run_id`` keeps its checkpoints (S3 ones staged under the home's cache)."""
    return CheckpointStore(
        checkpoint_root(cfg, home), run_id, staging_root=home.cache_dir / "checkpoints" / run_id
    )


def resume_point(
    store: CheckpointStore, cfg: TrainConfig, zero: bool
) -> tuple[str | None, Path | None]:
    """(name, local path) of the checkpoint to resume from. Rank 0 picks it; the other
    ranks take rank 0's choice from the environment, so all resume from the same one."""
    if not zero:
        name = os.environ.get(ENV_RESUME, "")
        return (name, store.fetch(name)) if name else (None, None)
    if not cfg.checkpoint.resume:
        return None, None
    if store.discard_partial():
        log.info("removed partial checkpoint files of an interrupted run")
    found = store.latest_loadable()
    if found is None:
        return None, None
    ref, path = found
    log.info("resuming run %s from %s (step %d)", store.run_id, ref.uri, ref.step)
    return ref.name, path


def data_identity(datamodule: RxVisionDataModule) -> str:
    """What a run's checkpoints are bound to: the data source and its snapshot hash."""
    source = datamodule.source
    if source.manifest is not None:  # content-addressed: the same wherever it was copied
        return f"feature set {source.manifest.key} (snapshot {source.snapshot_hash})"
    return source.description


def resume_progress(path: Path) -> tuple[int, int]:
    """(epoch, batches done in it) of a checkpoint: a run resumed from the middle of an
    epoch continues that epoch's order after those batches, instead of starting it over."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    batches = data.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    epoch = int(data.get("epoch", 0))
    if batches.get("is_last_batch"):
        return epoch + 1, 0
    return epoch, int(batches.get("current", {}).get("processed", 0))
