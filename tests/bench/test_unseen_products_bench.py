"""bench/unseen_products.py measures what it says: on a network that reads colour, a
product of a known colour that the model never trained on passes the review queue under
the known product's name and is not caught by the feature distances, and a product of a
new colour is held for review and caught by both."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rxvision.data.imaging import ImageSpec
from rxvision.serving.model_contract import LoadedModel, ModelRef, ServingModel

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from unseen_products import auroc, measure  # noqa: E402

pytestmark = pytest.mark.unit

RED, GREEN, BLUE = (200, 40, 40), (40, 200, 40), (40, 40, 200)
PHOTOS = 20


def colour_model() -> LoadedModel:
    """Features: the mean of each input channel. Classes red and green, told apart by the
    red channel against the green one; blue is near a tie (under the 0.9 threshold)."""
    backbone = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[8.0, -8.0, 0.0], [-8.0, 8.0, 0.0]]))
        head.bias.zero_()
    network = ServingModel(backbone, head).eval()
    ref = ModelRef(uri="colour", pinned_uri="colour", label="colour/1")
    return LoadedModel(network, ["red", "green"], ImageSpec(img_size=32), ref, review_threshold=0.9)


def draw(folder: Path, product: str, colour: tuple[int, int, int], seed: int) -> None:
    """``PHOTOS`` noisy photos of one colour under ``folder/product/``."""
    rng = np.random.default_rng(seed)
    (folder / product).mkdir(parents=True)
    for i in range(PHOTOS):
        pixels = np.clip(np.array(colour) + rng.normal(0, 12, (48, 48, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / product / f"{i:02d}.png")


def test_a_known_colours_new_product_passes_review_and_a_new_colour_is_caught(
    tmp_path: Path,
) -> None:
    train, photos = tmp_path / "train", tmp_path / "photos"
    draw(train, "red", RED, 0)
    draw(train, "green", GREEN, 1)
    draw(photos, "red", RED, 2)
    draw(photos, "green", GREEN, 3)
    draw(photos, "red-stronger", RED, 4)  # another strength: the same look
    draw(photos, "blue", BLUE, 5)

    result = measure(colour_model(), train, photos)

    assert result["known"] == {
        "photos": 2 * PHOTOS,
        "top1": 1.0,
        "pass_review": 1.0,
        "wrong_and_pass": 0.0,
    }
    twin, blue = result["unseen"]["red-stronger"], result["unseen"]["blue"]
    assert set(result["unseen"]) == {"red-stronger", "blue"}
    assert (twin["photos"], twin["labelled_as"], twin["pass_review"]) == (PHOTOS, "red", 1.0)
    assert blue["pass_review"] == 0.0 and blue["mean_confidence"] < 0.9
    for score, caught in blue["caught"].items():
        assert caught == 1.0, score
    for score, caught in twin["caught"].items():
        assert caught <= 0.3, score  # the known photos' own 5% tail, give or take the draw


def test_photos_of_known_products_only_are_refused(tmp_path: Path) -> None:
    draw(tmp_path / "train", "red", RED, 0)
    draw(tmp_path / "train", "green", GREEN, 1)
    with pytest.raises(SystemExit, match="products the model knows and products it does not"):
        measure(colour_model(), tmp_path / "train", tmp_path / "train")


def test_auroc_is_the_chance_that_an_unseen_photo_scores_above_a_known_one() -> None:
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 0.5
    assert auroc(np.array([2.0]), np.array([2.0])) == 0.5
