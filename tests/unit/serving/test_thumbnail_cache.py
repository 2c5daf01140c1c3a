"""The review gallery's thumbnail cache beside the inference cache, on local folders with
real pill photos: a rescore re-makes no crop and shows the same pictures, only the
scored bytes' crop is kept, contracts and sizes miss by construction, compaction keeps
the newest, and a cache that cannot be read or written never costs the gallery."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serving_fixtures import PILL_SPEC, CountingStorage, pill_model, pill_photos

from rxvision.data.imaging import ImageSpec, decode_located
from rxvision.data.localize import CropSpec
from rxvision.serving import review_crops, review_gallery
from rxvision.serving.cache import content_hash
from rxvision.serving.review_crops import input_crop
from rxvision.serving.review_gallery import ReviewConfig
from rxvision.serving.review_models import ModelInfo
from rxvision.serving.review_page import ReviewItem
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch
from rxvision.serving.thumbnail_cache import THUMBNAILS_DIR, ThumbnailCache
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.unit

SPEC = PILL_SPEC
DATA_URI = re.compile(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)")


@dataclass
class Catalog:
    spec: ImageSpec | None

    def info(self, label: str) -> ModelInfo:
        return ModelInfo(label, self.spec, lambda _: None)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 products x 3 pill photos."""
    return pill_photos(tmp_path_factory.mktemp("thumbs"))


def score(images: Path, output: Path, cache: Path, *, reuse: bool = True) -> dict[str, Any]:
    """Score with every row sent to review (threshold 1.0) and the cache in ``cache``."""
    config = ScoringConfig(
        shard_size=4,
        batch_size=4,
        download_workers=2,
        runtimes=["eager"],
        device="cpu",
        review_threshold=1.0,
        top_k=3,
        statsd={"host": None},
        cache={"uri": str(cache), "reuse": reuse},
    )
    model = pill_model()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(review_gallery, "MlflowCatalog", lambda *a, **k: Catalog(SPEC))
        return score_batch(
            "models:/tiny/1", str(images), str(output), config=config, loader=lambda _: model
        )


def pictures(output: Path) -> list[str]:
    return DATA_URI.findall((output / "review" / "index.html").read_text())


def test_a_rescore_reuses_every_crop_and_shows_the_same_pictures(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = score(photos, tmp_path / "run1", tmp_path / "cache")
    assert first["needs_review"] == 6
    assert first["review"]["thumbnails"] == {"reused": 0, "stored": 6}
    assert len(list((tmp_path / "cache" / THUMBNAILS_DIR).rglob("seg-*.parquet"))) == 1

    decodes: list[str] = []

    def counted(data: bytes, spec: ImageSpec, **kw: Any) -> Any:
        decodes.append(kw.get("name", ""))
        return decode_located(data, spec, **kw)

    monkeypatch.setattr(review_crops, "decode_located", counted)
    second = score(photos, tmp_path / "run2", tmp_path / "cache")
    assert second["cached"] == 6  # the rows came from the inference cache too
    assert second["review"]["thumbnails"] == {"reused": 6, "stored": 0}
    assert decodes == []  # no crop re-made
    assert sorted(pictures(tmp_path / "run2")) == sorted(pictures(tmp_path / "run1"))


def test_without_reuse_crops_are_made_afresh_and_stored(photos: Path, tmp_path: Path) -> None:
    score(photos, tmp_path / "run1", tmp_path / "cache")
    again = score(photos, tmp_path / "run2", tmp_path / "cache", reuse=False)
    assert again["review"]["thumbnails"] == {"reused": 0, "stored": 6}


def item_of(path: Path) -> ReviewItem:
    return ReviewItem(
        key=str(path),
        confidence=0.4,
        candidates=[("ndc-a", 0.4)],
        model_version="tiny/1",
        localization="localized",
        content_sha256=content_hash(path.read_bytes()),
    )


def test_a_cached_crop_is_served_without_reading_the_image(photos: Path, tmp_path: Path) -> None:
    storage = CountingStorage()
    cache = ThumbnailCache(str(tmp_path / "cache"), storage, thumb_px=160, jpeg_quality=80)
    item = item_of(sorted(photos.glob("*/*.jpg"))[0])
    model = ModelInfo("tiny/1", SPEC, lambda _: None)
    made = input_crop(item, storage, model, ReviewConfig(), cache)
    assert storage.image_reads == 1 and made.jpeg
    assert cache.flush() == 1

    later = ThumbnailCache(str(tmp_path / "cache"), storage, thumb_px=160, jpeg_quality=80)
    served = input_crop(item, storage, model, ReviewConfig(), later)
    assert storage.image_reads == 1  # no second read
    assert served.jpeg == made.jpeg and later.hits == 1


def test_an_image_changed_since_scoring_is_shown_but_never_cached(
    photos: Path, tmp_path: Path
) -> None:
    first, other = sorted(photos.glob("*/*.jpg"))[:2]
    changed = tmp_path / "changed.jpg"
    changed.write_bytes(first.read_bytes())
    item = item_of(changed)
    changed.write_bytes(other.read_bytes())  # overwritten after it was scored
    storage = Storage()
    cache = ThumbnailCache(str(tmp_path / "cache"), storage, thumb_px=160, jpeg_quality=80)
    picture = input_crop(
        item, storage, ModelInfo("tiny/1", SPEC, lambda _: None), ReviewConfig(), cache
    )
    assert picture.jpeg and "changed since it was scored" in picture.note
    assert cache.flush() == 0
    assert not (tmp_path / "cache").exists()


def test_another_contract_or_thumbnail_size_misses(photos: Path, tmp_path: Path) -> None:
    storage = Storage()
    root = str(tmp_path / "cache")
    cache = ThumbnailCache(root, storage, thumb_px=160, jpeg_quality=80)
    cache.put(SPEC, "a" * 64, b"jpeg-bytes")
    cache.flush()
    assert ThumbnailCache(root, storage, thumb_px=160, jpeg_quality=80).get(SPEC, "a" * 64)
    other_spec = ImageSpec(img_size=64, crop=CropSpec(mask_background=True))
    assert (
        ThumbnailCache(root, storage, thumb_px=160, jpeg_quality=80).get(other_spec, "a" * 64)
        is None
    )
    assert ThumbnailCache(root, storage, thumb_px=96, jpeg_quality=80).get(SPEC, "a" * 64) is None
    assert ThumbnailCache(root, storage, thumb_px=160, jpeg_quality=60).get(SPEC, "a" * 64) is None


def test_past_max_segments_they_merge_into_the_newest_kept(tmp_path: Path) -> None:
    storage = Storage()
    root = str(tmp_path / "cache")
    for batch in range(3):
        cache = ThumbnailCache(root, storage, thumb_px=160, jpeg_quality=80, max_segments=2, keep=3)
        for n in range(2):
            cache.put(SPEC, f"{batch}{n}".ljust(64, "0"), f"jpeg-{batch}{n}".encode())
        cache.flush()
    assert len(list((tmp_path / "cache").rglob("seg-*.parquet"))) == 1
    reader = ThumbnailCache(root, storage, thumb_px=160, jpeg_quality=80)
    kept = [d for d in ("00", "01", "10", "11", "20", "21") if reader.get(SPEC, d.ljust(64, "0"))]
    assert kept == ["11", "20", "21"]


def test_an_unreadable_or_unwritable_cache_never_costs_the_gallery(
    photos: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    score(photos, tmp_path / "run1", cache)
    for segment in (cache / THUMBNAILS_DIR).rglob("seg-*.parquet"):
        segment.write_bytes(b"not parquet")
    unreadable = score(photos, tmp_path / "run2", cache)
    assert unreadable["review_uri"] and len(pictures(tmp_path / "run2")) == 6
    assert unreadable["review"]["thumbnails"]["reused"] == 0

    shutil.rmtree(cache / THUMBNAILS_DIR)
    (cache / THUMBNAILS_DIR).write_text("a file where the folder should be")
    unwritable = score(photos, tmp_path / "run3", cache)
    assert unwritable["review_uri"] and len(pictures(tmp_path / "run3")) == 6
    assert unwritable["review"]["thumbnails"] == {"reused": 0, "stored": 0}


def test_each_contract_size_and_quality_has_its_own_partition(tmp_path: Path) -> None:
    cache = ThumbnailCache(str(tmp_path), Storage(), thumb_px=160, jpeg_quality=80)
    pill = ImageSpec(img_size=96, crop=CropSpec())
    whole = ImageSpec(img_size=96)
    assert cache.partition_uri(pill) == cache.partition_uri(ImageSpec(img_size=96, crop=CropSpec()))
    assert cache.partition_uri(pill) != cache.partition_uri(whole)
    assert cache.partition_uri(whole) == cache.partition_uri(whole)  # asked again
    smaller = ThumbnailCache(str(tmp_path), Storage(), thumb_px=120, jpeg_quality=80)
    coarser = ThumbnailCache(str(tmp_path), Storage(), thumb_px=160, jpeg_quality=60)
    assert len({c.partition_uri(pill) for c in (cache, smaller, coarser)}) == 3
