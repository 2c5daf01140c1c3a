"""What a finished training run leaves in its MLflow run: final metrics, the split
record, reference photos, the confusion matrix, the most-confused pairs (JSON and PNG),
the loss curve, the best checkpoint and the model with its serving metadata."""

from __future__ import annotations

import logging

from rxvision.data.splits import SPLITS_ARTIFACT
from rxvision.train.checkpoints import BEST, CheckpointStore
from rxvision.train.config import TrainConfig
from rxvision.train.datamodule import RxVisionDataModule
from rxvision.train.evaluation import FinalEvaluation, pairs_figure
from rxvision.train.module import RxVisionTrainer, metric_name
from rxvision.train.result import TrainResult
from rxvision.train.tracking import RunTracker, confusion_figure, loss_curve_figure

log = logging.getLogger(__name__)

# the most-confused pairs of the test split, logged with each run
PAIRS_ARTIFACT = "eval/confused_pairs.json"


def log_outcome(
    tracker: RunTracker,
    cfg: TrainConfig,
    module: RxVisionTrainer,
    datamodule: RxVisionDataModule,
    store: CheckpointStore,
    result: TrainResult,
    exported: bool,
    final: FinalEvaluation,
) -> None:
    """Final metrics, plots, the split record, the best checkpoint and the model, into
    the MLflow run."""
    tracker.log_metrics(
        {f"final/{metric_name(k)}": v for k, v in result.metrics.items()}, result.global_step
    )
    tracker.log_dict(datamodule.split_record(), SPLITS_ARTIFACT)
    try:
        tracker.log_references(datamodule.references())
    except Exception as exc:  # a gallery nicety: never worth losing the trained model over
        log.warning("reference photos not logged (the review gallery shows none): %s", exc)
    if final.confusion is not None:
        tracker.log_figure(
            confusion_figure(final.confusion, module.classes), "plots/confusion_matrix.png"
        )
    tracker.log_dict(final.pairs_record(), PAIRS_ARTIFACT)
    tracker.log_figure(pairs_figure(final.pairs), "plots/confused_pairs.png")
    tracker.log_figure(
        loss_curve_figure(
            tracker.metric_history("train/loss"),
            tracker.metric_history("val/loss"),
            tracker.metric_history("val/top1"),
        ),
        "plots/loss_curve.png",
    )
    if exported:
        tracker.log_artifact(store.fetch(BEST), "checkpoints")
    result.mlflow_run_id = tracker.active_run_id
    result.tracking_uri = tracker.uri
    result.model_uri = tracker.log_model(
        module.export_model(),
        classes=module.classes,
        spec=cfg.data.image_spec,
        metadata={
            "run_id": result.run_id,
            "global_step": result.global_step,
            # temperature scaling fitted on validation: scoring divides the logits by it
            "temperature": final.temperature,
            "review_threshold": final.review_threshold,
        },
    )
