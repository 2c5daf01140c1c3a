"""Evaluating a model on a labelled image folder through the scoring path (the
registry's regression gate compares champion and challenger this way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rxvision.serving.image_folder import load_image_folder
from rxvision.serving.model_loading import load_model
from rxvision.serving.predictors import EagerPredictor


def evaluate_model(
    uri: str,
    image_folder: Path,
    *,
    tracking_uri: str | None = None,
    batch_size: int = 32,
    prefix: str = "test_",
) -> dict[str, float]:
    """Top-1, ECE and per-class recall of a model on ``image_folder/<class>/*`` under the
    keys training logs (``test_top1``...), and ``images``: the image count. Images go
    through the scoring path (``load_image`` under the model's own contract, eager fp32):
    e.g. champion and challenger scored on the challenger's test images for the
    registry's regression gate."""
    from rxvision.registry.gates import classification_metrics
    from rxvision.serving.calibration import softmax

    loaded = load_model(uri, tracking_uri=tracking_uri)
    images, labels = load_image_folder(image_folder, loaded)
    predictor = EagerPredictor(loaded.model, torch.device("cpu"))
    logits = np.concatenate(
        [predictor.predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
    probs = softmax(logits, loaded.temperature)
    metrics = classification_metrics(probs, labels, loaded.classes, prefix=prefix)
    metrics["images"] = float(len(labels))
    return metrics
