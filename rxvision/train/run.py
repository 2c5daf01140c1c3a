"""``train(cfg, data)``: one training run from top to bottom; the CLI and the DAG call it.

In order: hardware, data, model, tracking, checkpoints and resume, fit, evaluate, log.
The run's length is a budget of optimizer steps, so a run killed at any point and
started again with the same run id resumes from its newest loadable checkpoint and
stops at the same global step as a run that was never interrupted.

Under DDP, Lightning starts the other ranks by running the same command again; they go
through ``train`` too, read the run id and the checkpoint to resume from the
environment that rank 0 sets, and leave tracking to rank 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, RichProgressBar
from pytorch_lightning.strategies import DDPStrategy, Strategy

from rxvision.config.load import to_flat_dict, validate_config
from rxvision.home import Home
from rxvision.train.backbones import backbone_blocks, build_backbone, load_pretrained
from rxvision.train.batch_finder import training_batch_size
from rxvision.train.callbacks import BackboneFreezer, LogProgress, TrainingTelemetry
from rxvision.train.checkpoint_callback import StepCheckpoint
from rxvision.train.checkpoints import BEST, CheckpointStore, check_run_id
from rxvision.train.config import TrainConfig
from rxvision.train.data_source import DataSource, resolve_data
from rxvision.train.datamodule import RxVisionDataModule
from rxvision.train.evaluation import final_evaluation
from rxvision.train.hardware import (
    choose_precision,
    launch_rank_is_zero,
    resolve_accelerator,
    world_size,
)
from rxvision.train.module import RxVisionTrainer
from rxvision.train.monitoring import TrainingMonitor
from rxvision.train.outcome import log_outcome
from rxvision.train.result import TrainResult, new_run_id
from rxvision.train.resume import (
    ENV_RESUME,
    checkpoint_store,
    data_identity,
    resume_point,
    resume_progress,
)
from rxvision.train.tracking import (
    RunTracker,
    lineage_tags,
)

log = logging.getLogger(__name__)

ENV_RUN_ID = "RXVISION_TRAIN_RUN_ID"


@contextlib.contextmanager
def _exported(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the DDP ranks that ``fit`` starts; restore after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# --- the run -----------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    data: str | Path | DataSource,
    overrides: Sequence[str] = (),
    *,
    run_id: str | None = None,
    snapshot_rev: str | None = None,
    snapshot_hash: str | None = None,
    home: Home | None = None,
    progress_bar: bool | None = None,
) -> TrainResult:
    """Train a classifier on ``data`` (an image folder, a shard set's manifest or S3
    prefix, or a ``DataSource``) as ``cfg`` with ``overrides`` (``training.epochs=3``)
    says; resume ``run_id`` if it has checkpoints.

    ``snapshot_rev``/``snapshot_hash`` are the dataset lineage tagged on the MLflow run
    (the hash defaults to the shard set's snapshot hash).
    """
    began = time.monotonic()
    if overrides:
        cfg = validate_config(cfg.model_dump(), TrainConfig, list(overrides), source="overrides")
    home = home or Home.from_env()
    zero = launch_rank_is_zero()
    if zero:
        run_id = check_run_id(run_id or new_run_id())
    else:
        run_id = check_run_id(run_id or os.environ[ENV_RUN_ID])
    pl.seed_everything(cfg.training.seed, workers=True, verbose=False)

    # hardware
    accelerator = resolve_accelerator(cfg.trainer.accelerator)
    cuda_bf16 = accelerator == "gpu" and torch.cuda.is_bf16_supported()
    precision = choose_precision(cfg.trainer.precision, accelerator, cuda_bf16=cuda_bf16)
    world = world_size(cfg.trainer, accelerator)
    if accelerator == "gpu":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and later

    # data
    source = (
        data
        if isinstance(data, DataSource)
        else resolve_data(data, home.cache_dir / "features", keep_sets=cfg.data.local_feature_sets)
    )
    datamodule = RxVisionDataModule(
        source,
        cfg.data,
        batch_size=cfg.training.batch_size,
        world_size=world,
        pin_memory=accelerator == "gpu",
        seed=cfg.training.seed,
    )
    if zero:
        # A run id is bound to its data before anything is logged: checkpoints trained
        # on other data are refused, never resumed under this run's lineage.
        checkpoint_store(cfg, home, run_id).claim_for_data(data_identity(datamodule))
    # training.batch_size_finder (rxvision.train.batch_finder): before the step budget,
    # which counts batches of the size found
    datamodule.batch_size = training_batch_size(
        cfg.training.batch_size_finder,
        cfg.training.batch_size,
        accelerator=accelerator,
        world=world,
        store=checkpoint_store(cfg, home, run_id),
        datamodule=datamodule,
        make_module=lambda: build_module(cfg, source.classes, 1, home),
        precision=precision,
    )
    steps_per_epoch = datamodule.steps_per_epoch(cfg.training.accumulate_grad_batches)
    max_steps = cfg.training.max_steps or cfg.training.epochs * steps_per_epoch

    # model
    module = build_module(cfg, source.classes, steps_per_epoch, home)

    # tracking (rank 0 only)
    tracker = RunTracker(cfg.tracking.mlflow, home) if zero else None
    if tracker is not None:
        tags = lineage_tags(
            run_id, snapshot_rev=snapshot_rev, snapshot_hash=snapshot_hash or source.snapshot_hash
        )
        tracker.start(run_id, tags)
        tracker.log_params(
            {
                **to_flat_dict(cfg),
                "data.source": source.description,
                "data.classes": len(source.classes),
                "data.train_images": len(datamodule.train_indices),
                "data.val_images": len(datamodule.val_indices),
                "data.test_images": len(datamodule.test_indices),
                "run.max_steps": max_steps,
                "run.steps_per_epoch": steps_per_epoch,
                "run.precision": precision,
                "run.world_size": world,
                "run.batch_size": datamodule.batch_size,
            }
        )

    try:
        result = _fit_and_evaluate(
            cfg,
            module,
            datamodule,
            run_id=run_id,
            home=home,
            tracker=tracker,
            accelerator=accelerator,
            precision=precision,
            world=world,
            max_steps=max_steps,
            progress_bar=progress_bar,
        )
    except BaseException as exc:
        if tracker is not None:
            tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    result.seconds = round(time.monotonic() - began, 2)
    result.data = source.description
    if tracker is None:
        return result  # another DDP rank: rank 0 reports
    result.extra["steps_per_epoch"] = steps_per_epoch
    tracker.end("FINISHED")
    log.info(
        "run %s: step %d/%d, val top-1 %.4f, test top-1 %.4f on %d images, %.0f s",
        run_id,
        result.global_step,
        max_steps,
        result.metrics.get("val_top1", float("nan")),
        result.metrics.get("test_top1", float("nan")),
        int(result.metrics.get("test_images", 0)),
        result.seconds,
    )
    return result


def build_module(
    cfg: TrainConfig, classes: list[str], steps_per_epoch: int, home: Home
) -> RxVisionTrainer:
    """Backbone (with pretrained weights when asked) plus head, as a LightningModule."""
    backbone = build_backbone(cfg.model.architecture)
    if cfg.model.pretrained:
        load_pretrained(
            backbone,
            cfg.model.weights_uri,
            allow_random_init=cfg.model.allow_random_init,
            cache_dir=home.cache_dir / "weights",
        )
    module = RxVisionTrainer(
        backbone.net,
        backbone.num_features,
        classes,
        architecture=cfg.model.architecture,
        optimizer=cfg.training.optimizer,
        scheduler=cfg.training.scheduler,
        fine_tuning=cfg.model.fine_tuning,
        dropout=cfg.model.dropout,
        label_smoothing=cfg.training.label_smoothing,
        steps_per_epoch=steps_per_epoch,
        channels_last=cfg.trainer.channels_last,
    )
    if cfg.trainer.compile:
        # in place: the state_dict keys stay the same, so checkpoints do not depend on it
        module.backbone.compile()
    return module


def _strategy(cfg: TrainConfig, module: RxVisionTrainer, world: int) -> str | Strategy:
    if cfg.trainer.strategy == "ddp" or world > 1:
        return DDPStrategy(**module.configure_ddp())
    return "auto"


def _callbacks(
    cfg: TrainConfig,
    module: RxVisionTrainer,
    *fixed: Callback,
    max_steps: int,
    rich: bool,
) -> list[Callback]:
    callbacks: list[Callback] = list(fixed)
    if cfg.model.fine_tuning.any_frozen:
        blocks = backbone_blocks(module.backbone)
        callbacks.append(BackboneFreezer(blocks, cfg.model.fine_tuning))
    if rich:
        callbacks.append(RichProgressBar())
    else:
        callbacks.append(LogProgress(cfg.trainer.progress_every_n_steps, max_steps))
    return callbacks


def _fit_and_evaluate(
    cfg: TrainConfig,
    module: RxVisionTrainer,
    datamodule: RxVisionDataModule,
    *,
    run_id: str,
    home: Home,
    tracker: RunTracker | None,
    accelerator: str,
    precision: str,
    world: int,
    max_steps: int,
    progress_bar: bool | None,
) -> TrainResult:
    zero = tracker is not None or launch_rank_is_zero()
    store = checkpoint_store(cfg, home, run_id)
    resume_name, resume_path = resume_point(store, cfg, zero)
    if resume_path is not None:
        datamodule.resume_at(*resume_progress(resume_path))
    checkpoints = StepCheckpoint(
        store, every_n_steps=cfg.checkpoint.every_n_steps, keep_last=cfg.checkpoint.keep_last
    )
    telemetry = TrainingTelemetry(world, cfg.training.log_every_n_steps)
    monitor = TrainingMonitor(cfg.monitoring, run_id=run_id, store=store, world_size=world)
    rich = progress_bar if progress_bar is not None else sys.stderr.isatty()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=_strategy(cfg, module, world),
        precision=precision,  # type: ignore[arg-type]
        max_steps=max_steps,
        max_epochs=-1,
        accumulate_grad_batches=cfg.training.accumulate_grad_batches,
        gradient_clip_val=cfg.training.gradient_clip_val,
        check_val_every_n_epoch=cfg.training.val_every_n_epochs,
        log_every_n_steps=cfg.training.log_every_n_steps,
        num_sanity_val_steps=0,
        enable_checkpointing=False,  # StepCheckpoint does it, atomically and to S3
        enable_progress_bar=rich,
        enable_model_summary=zero,
        enable_autolog_hparams=False,  # the flattened config is logged as params instead
        logger=tracker.lightning_logger() if tracker is not None else False,
        callbacks=_callbacks(
            cfg, module, checkpoints, telemetry, monitor, max_steps=max_steps, rich=rich
        ),
        deterministic=cfg.trainer.deterministic,
        # the datamodule's ResumableSampler splits ranks itself; evaluation loaders are not
        # split (a DistributedSampler pads, so some images would count twice)
        use_distributed_sampler=False,
        benchmark=accelerator == "gpu",
        default_root_dir=str(home.cache_dir / "lightning" / run_id),
    )
    with warnings.catch_warnings():
        # resuming mid-epoch restarts the loader; the step count is what the budget needs
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended")
        fit_began = time.monotonic()
        with _exported({ENV_RUN_ID: run_id, ENV_RESUME: resume_name or ""}):
            trainer.fit(
                module,
                datamodule=datamodule,
                ckpt_path=str(resume_path) if resume_path else None,
                weights_only=True,
            )
    fit_seconds = time.monotonic() - fit_began
    global_step = trainer.global_step
    exported = _load_best(module, store)
    metrics: dict[str, float] = {}
    final = None
    if zero:
        # rank 0 alone, on every image once (a DistributedSampler would pad and count
        # some twice); the test split was never seen by training or checkpoint choice
        final = final_evaluation(
            module,
            module.classes,
            datamodule.val_dataloader(),
            datamodule.test_dataloader(),
            calibrate=cfg.evaluation.calibrate,
            review_precision=cfg.evaluation.review_precision,
        )
        metrics = dict(final.metrics)
        if checkpoints.best_score is not None:
            metrics["best_val_top1"] = checkpoints.best_score
    result = TrainResult(
        run_id=run_id,
        global_step=global_step,
        max_steps=max_steps,
        metrics=metrics,
        checkpoint_uri=checkpoints.last_uri
        or (f"{store.uri}/{resume_name}" if resume_name else None),
        best_checkpoint_uri=f"{store.uri}/{BEST}" if exported else None,
        resumed_from=f"{store.uri}/{resume_name}" if resume_name else None,
        precision=precision,
        classes=list(datamodule.classes),
        seconds=0.0,
        is_global_zero=trainer.is_global_zero,
        extra={
            "fit_seconds": round(fit_seconds, 2),
            "samples_per_s": telemetry.samples_per_second(),
            "world_size": world,
            "alerts": list(monitor.alerted),
            "confused_pairs": final.pairs_record()["pairs"] if final else [],
        },
    )
    if tracker is not None and final is not None:
        log_outcome(tracker, cfg, module, datamodule, store, result, exported, final)
    store.clear_staging()
    return result


def _load_best(module: RxVisionTrainer, store: CheckpointStore) -> bool:
    """Put the best checkpoint's weights into ``module``; False when there is none."""
    if not store.exists(BEST):
        return False
    data = torch.load(store.fetch(BEST), map_location="cpu", weights_only=True)
    module.load_state_dict(data["state_dict"])
    log.info("evaluating the best checkpoint (step %s)", data.get("global_step"))
    return True
