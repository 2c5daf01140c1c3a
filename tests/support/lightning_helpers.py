"""Lightning pieces shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


def cpu_trainer(callbacks: list[pl.Callback], max_steps: int, root: Path) -> pl.Trainer:
    """A quiet one-process CPU trainer bounded by steps: no sanity check, no logger, no
    Lightning checkpointing (the callbacks under test do their own)."""
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        callbacks=callbacks,
        default_root_dir=str(root),
    )
