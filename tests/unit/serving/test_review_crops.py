"""Review crops made while scoring, on local folders with real pill photos: the gallery
shows them without reading an image again, they are the crops it would re-make, and a
run without them (or with an unreadable segment) still gets every picture."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from serving_fixtures import PILL_SPEC, CountingStorage, pill_model, pill_photos

from rxvision.serving import review_gallery
from rxvision.serving.review_gallery import ReviewConfig, write_review_gallery
from rxvision.serving.review_models import ModelInfo
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch
from rxvision.serving.thumbnail_cache import THUMBNAILS_DIR
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.unit

DATA_URI = re.compile(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)")
IMAGES = 6


class Catalog:
    def info(self, label: str) -> ModelInfo:
        return ModelInfo(label, PILL_SPEC, lambda _: None)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pill_photos(tmp_path_factory.mktemp("crops"))


def score(
    images: Path, output: Path, storage: Storage, *, threshold: float = 1.0
) -> dict[str, Any]:
    """Score without the inference cache; ``threshold`` 1.0 sends every row to review."""
    config = ScoringConfig(
        shard_size=4,
        batch_size=4,
        download_workers=2,
        runtimes=["eager"],
        device="cpu",
        review_threshold=threshold,
        statsd={"host": None},
        cache={"uri": None},
    )
    model = pill_model()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(review_gallery, "MlflowCatalog", lambda *a, **k: Catalog())
        return score_batch(
            "models:/tiny/1",
            str(images),
            str(output),
            config=config,
            storage=storage,
            loader=lambda _: model,
        )


def segments(output: Path) -> list[Path]:
    return sorted((output / THUMBNAILS_DIR).rglob("seg-*.parquet"))


def pictures(output: Path) -> list[str]:
    return sorted(DATA_URI.findall((output / "review" / "index.html").read_text()))


def regallery(output: Path, storage: Storage) -> Any:
    shards = [str(p) for p in sorted((output / "shards").glob("*.parquet"))]
    return write_review_gallery(
        str(output), shards, storage, config=ReviewConfig(), catalog=Catalog()
    )


def test_the_gallery_shows_the_crops_made_while_scoring_without_reading_an_image(
    photos: Path, tmp_path: Path
) -> None:
    storage = CountingStorage()
    manifest = score(photos, tmp_path / "run", storage)
    assert manifest["needs_review"] == IMAGES
    assert manifest["review"]["crops_from_scoring"] == IMAGES
    assert storage.image_reads == IMAGES  # each image read once, by the scorer
    stored = segments(tmp_path / "run")
    assert len(stored) == 2  # one per shard (4 + 2 images)
    assert sum(pq.read_table(s).num_rows for s in stored) == IMAGES
    assert len(pictures(tmp_path / "run")) == IMAGES


def test_without_the_runs_crops_the_gallery_re_makes_the_same_pictures(
    photos: Path, tmp_path: Path
) -> None:
    score(photos, tmp_path / "run", Storage())
    made_while_scoring = pictures(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / THUMBNAILS_DIR)
    storage = CountingStorage()
    result = regallery(tmp_path / "run", storage)
    assert result.crops_from_scoring == 0 and storage.image_reads == IMAGES
    assert pictures(tmp_path / "run") == made_while_scoring  # byte for byte


def test_an_unreadable_segment_costs_downloads_never_a_picture(
    photos: Path, tmp_path: Path
) -> None:
    score(photos, tmp_path / "run", Storage())
    first, second = segments(tmp_path / "run")
    first.write_bytes(b"not parquet")
    storage = CountingStorage()
    result = regallery(tmp_path / "run", storage)
    assert result.crops_from_scoring == 0  # the partition is read as a whole, or not at all
    assert storage.image_reads == IMAGES
    assert len(pictures(tmp_path / "run")) == IMAGES and second.exists()


def test_rows_the_model_is_sure_of_get_no_crop(photos: Path, tmp_path: Path) -> None:
    manifest = score(photos, tmp_path / "run", Storage(), threshold=0.0)
    assert manifest["needs_review"] == 0
    assert segments(tmp_path / "run") == []


def test_with_the_gallery_off_no_crop_is_made(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RXVISION_REVIEW_GALLERY", "false")
    manifest = score(photos, tmp_path / "run", Storage())
    assert manifest["review_uri"] is None
    assert segments(tmp_path / "run") == []
