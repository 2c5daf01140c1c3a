"""Lightning's batch-size finder before a GPU run (``training.batch_size_finder``).

``training_batch_size`` returns the per-device batch size a run trains with: the
configured ``training.batch_size``, or, with the finder enabled on one GPU, the largest
that fits found by ``Tuner.scale_batch_size`` on a throwaway copy of the model and
trainer (the run's own trainer, module and step budget are then built for that size).

The finder is skipped with a warning on CPU (a CPU batch is bounded by time, not
memory: the finder would only find the dataset size) and under DDP (Lightning's tuner
refuses distributed strategies), so one config serves laptops and GPU nodes. The size
found is recorded beside the run's checkpoints (``batch_size.json``): a resumed run
reads it instead of searching again, so its data position (counted in batches) means
the same thing.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from rxvision.train.checkpoints import CheckpointStore
from rxvision.train.config import BatchSizeFinderConfig

log = logging.getLogger(__name__)

RECORD = "batch_size.json"


def recorded_batch_size(store: CheckpointStore) -> int | None:
    """The size the finder chose for this run before (None: never ran)."""
    if not store.exists(RECORD):
        return None
    return int(json.loads(store.fetch(RECORD).read_text())["batch_size"])


def record_batch_size(store: CheckpointStore, size: int, configured: int) -> None:
    """Keep the size found beside the checkpoints (a resume reads it)."""
    temp = store.temp_path(RECORD)
    temp.write_text(json.dumps({"batch_size": size, "configured": configured}))
    store.publish(temp, RECORD)


def training_batch_size(
    finder: BatchSizeFinderConfig,
    configured: int,
    *,
    accelerator: str,
    world: int,
    store: CheckpointStore,
    datamodule: Any,
    make_module: Callable[[], pl.LightningModule],
    precision: str,
) -> int:
    """The per-device batch size to train with (see the module's docstring)."""
    if not finder.enabled:
        return configured
    if accelerator != "gpu":
        log.warning(
            "training.batch_size_finder is enabled but this run trains on %s: skipped, "
            "training.batch_size=%d is used (the finder sizes GPU memory)",
            accelerator,
            configured,
        )
        return configured
    if world > 1:
        log.warning(
            "training.batch_size_finder is enabled but this run uses %d devices (DDP, "
            "which Lightning's tuner does not support): skipped, training.batch_size=%d",
            world,
            configured,
        )
        return configured
    recorded = recorded_batch_size(store)
    if recorded is not None:
        log.info("batch size %d: found for run %s before (%s)", recorded, store.run_id, RECORD)
        return recorded
    found = find_batch_size(finder, configured, datamodule, make_module(), precision)
    record_batch_size(store, found, configured)
    return found


def find_batch_size(
    finder: BatchSizeFinderConfig,
    configured: int,
    datamodule: Any,
    module: pl.LightningModule,
    precision: str,
) -> int:
    """Run ``Tuner.scale_batch_size`` on ``module`` (a throwaway) with one GPU; the
    datamodule's ``batch_size`` is left as it was found."""
    from pytorch_lightning.tuner import Tuner

    with tempfile.TemporaryDirectory(prefix="rxv-bsfind-") as tmp:
        trainer = pl.Trainer(
            accelerator="gpu",
            devices=1,
            precision=precision,  # type: ignore[arg-type]
            max_steps=finder.steps_per_trial * (finder.max_trials + 1),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            default_root_dir=str(Path(tmp)),
        )
        found = Tuner(trainer).scale_batch_size(
            module,
            datamodule=datamodule,
            mode=finder.mode,
            steps_per_trial=finder.steps_per_trial,
            init_val=configured,
            max_trials=finder.max_trials,
            max_val=finder.max_batch_size,
        )
    del module, trainer
    torch.cuda.empty_cache()
    size = min(int(found or configured), finder.max_batch_size)
    log.info(
        "batch-size finder (%s, %d trials from %d): %d images per device",
        finder.mode,
        finder.max_trials,
        configured,
        size,
    )
    return size
