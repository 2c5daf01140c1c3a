"""A training run's held-out images, as the registration step uses them.

The run's split record (``data/splits.json`` in MLflow) names every image's split. Its
test images judge the model (export parity, INT8 acceptance, the champion comparison),
its training images calibrate INT8, and the champion is compared only on the test images
it never trained on (rule 7: a held-out image is never one a compared model trained on).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rxvision.data.splits import SPLITS_ARTIFACT, TEST, TRAIN
from rxvision.errors import RxVisionError

log = logging.getLogger(__name__)


def read_split_record(mlflow_run_id: str) -> dict[str, Any] | None:
    """The split record (``data/splits.json``) a training run logged, or None."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        text = mlflow.artifacts.load_text(f"runs:/{mlflow_run_id}/{SPLITS_ARTIFACT}")
    except (MlflowException, OSError) as exc:
        log.warning("run %s has no split record (%s): %s", mlflow_run_id, SPLITS_ARTIFACT, exc)
        return None
    record: dict[str, Any] = json.loads(text)
    return record


@dataclass
class HeldOutImages:
    """A training run's held-out images as ImageFolders (links into the snapshot)."""

    test_dir: Path
    train_dir: Path
    compare_dir: Path
    test_images: int
    compare_images: int
    excluded: int
    champion_record: bool

    def comparator(self) -> Callable[[str], dict[str, float]]:
        """Score a model URI on the comparison images (the scoring path, eager fp32)."""
        from rxvision.serving.evaluation import evaluate_model

        def score(uri: str) -> dict[str, float]:
            if not self.compare_images:
                raise RxVisionError(
                    "no test image is left for the champion comparison: every test image "
                    "of this run was a training image of the champion"
                )
            return evaluate_model(uri, self.compare_dir, prefix="test_")

        return score

    def describe(self) -> str:
        """One line for the log."""
        text = (
            f"champion comparison on {self.compare_images} of {self.test_images} test images "
            f"({self.excluded} left out: the champion trained on them)"
        )
        if not self.champion_record:
            text += "; the champion has no split record, so none could be left out"
        return text


def held_out_images(
    summary: dict[str, Any], snapshot_dir: Path, out: Path, *, champion_run_id: str | None
) -> HeldOutImages:
    """Link the run's test and train images from ``snapshot_dir`` into ImageFolders under
    ``out``: ``test`` (all test images: export parity and INT8 acceptance), ``train``
    (INT8 calibration), ``compare`` (the test images the champion never trained on)."""
    run_id = summary.get("mlflow_run_id")
    record = read_split_record(str(run_id)) if run_id else None
    if record is None:
        raise RxVisionError(
            f"training run {run_id} logged no {SPLITS_ARTIFACT}: its test images are unknown, "
            "so it cannot be judged"
        )
    champion_trained: set[str] = set()
    champion_record = champion_run_id is None
    if champion_run_id is not None:
        found = read_split_record(champion_run_id)
        if found is not None:
            champion_record = True
            champion_trained = {r["sha256"] for r in found["rows"] if r["split"] == TRAIN}
    dirs = {name: out / name for name in ("test", "train", "compare")}
    counts = dict.fromkeys(dirs, 0)
    for row in record["rows"]:
        targets = []
        if row["split"] == TEST:
            targets.append("test")
            if row["sha256"] not in champion_trained:
                targets.append("compare")
        elif row["split"] == TRAIN:
            targets.append("train")
        for name in targets:
            link = dirs[name] / row["class"] / f"{counts[name]:06d}-{Path(row['path']).name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(snapshot_dir / row["path"])
            counts[name] += 1
    return HeldOutImages(
        test_dir=dirs["test"],
        train_dir=dirs["train"],
        compare_dir=dirs["compare"],
        test_images=counts["test"],
        compare_images=counts["compare"],
        excluded=counts["test"] - counts["compare"],
        champion_record=champion_record,
    )
