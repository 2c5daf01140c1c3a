"""The review gallery from a real scoring run (synthetic pill JPEGs, the scorer's Parquet):
what it lists, the crops it re-makes, the references, the pages, a failure that keeps the
predictions, and the page as headless Chromium renders it."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from headless_browser import chromium
from PIL import Image
from serving_fixtures import CLASSES, PILL_SPEC, pill_model

from rxvision.data.imaging import ImageSpec, decode_located, load_image
from rxvision.data.references import REFERENCE_PX, REFERENCE_QUALITY, thumbnail_jpeg
from rxvision.data.synth import generate_dataset
from rxvision.serving import review_gallery
from rxvision.serving.finalize import finalize_scoring
from rxvision.serving.review_gallery import ReviewConfig, review_rows, write_review_gallery
from rxvision.serving.review_models import MlflowCatalog, ModelInfo
from rxvision.serving.review_page import (
    COUNT_ID,
    SHOWN_ID,
    PageContext,
    Picture,
    ReviewItem,
    render_page,
)
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.unit

SPEC = PILL_SPEC
DATA_URI = re.compile(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)")


@dataclass
class Catalog:
    """The model that scored, with references for some classes (MLflow's part)."""

    spec: ImageSpec | None
    references: dict[str, bytes]

    def info(self, label: str) -> ModelInfo:
        return ModelInfo(label, self.spec, self.references.get)


@dataclass
class Run:
    """A scored run: its folder, manifest, rows, and the model's references."""

    input: Path
    output: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]
    catalog: Catalog

    @property
    def review(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["needs_review"] and not r["error"]]


def read_rows(output: Path) -> list[dict[str, Any]]:
    tables = [pq.read_table(p) for p in sorted((output / "shards").glob("*.parquet"))]
    return [row for table in tables for row in table.to_pylist()]


def score(images: Path, output: Path, threshold: float, catalog: Catalog) -> dict[str, Any]:
    config = ScoringConfig(
        shard_size=4,
        batch_size=4,
        download_workers=2,
        runtimes=["eager"],
        device="cpu",
        review_threshold=threshold,
        top_k=3,
        statsd={"host": None},
    )
    model = pill_model()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(review_gallery, "MlflowCatalog", lambda *a, **k: catalog)
        return score_batch(
            "models:/tiny/1", str(images), str(output), config=config, loader=lambda _: model
        )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """3 products x 3 photos and a truncated JPEG, scored at a threshold that sends about
    half the photos to review."""
    root = tmp_path_factory.mktemp("review")
    generate_dataset(root / "pills", classes=3, per_class=3, size=96, seed=5, workers=1)
    images = root / "incoming"
    shutil.copytree(root / "pills", images, ignore=shutil.ignore_patterns("*.parquet"))
    (images / "zz-bad.jpg").write_bytes(sorted(images.glob("*/*.jpg"))[0].read_bytes()[:300])
    # references of the model's first two classes: the third shows the placeholder
    folders = sorted(p for p in (root / "pills").iterdir() if p.is_dir())
    references = {
        name: thumbnail_jpeg(
            load_image(sorted(folder.glob("*.jpg"))[-1], SPEC), REFERENCE_PX, REFERENCE_QUALITY
        )
        for name, folder in zip(CLASSES[:2], folders, strict=False)
    }
    catalog = Catalog(SPEC, references)
    probe = score(images, root / "probe", 0.0, catalog)  # confidences, nothing to review
    scored = read_rows(Path(probe["output_uri"]))
    confidences = sorted(r["confidence"] for r in scored if not r["error"])
    output = root / "run"
    manifest = score(images, output, confidences[len(confidences) // 2], catalog)
    return Run(images, output, manifest, read_rows(output), catalog)


def page_of(output: Path, name: str = "index.html") -> str:
    return (output / "review" / name).read_text()


def test_the_run_records_its_gallery_and_lists_every_needs_review_row(run: Run) -> None:
    review = run.review
    assert 0 < len(review) < len([r for r in run.rows if not r["error"]])
    assert run.manifest["review_uri"] == str(run.output / "review" / "index.html")
    assert run.manifest["needs_review"] == len(review)
    assert run.manifest["review"] == {
        "pages": [run.manifest["review_uri"]],
        "error_rows": 1,
        "crops_from_scoring": len(review),  # no item downloaded and cropped a second time
    }
    saved = json.loads((run.output / "_manifest.json").read_text())
    assert saved["review_uri"] == run.manifest["review_uri"]
    page = page_of(run.output)
    assert f'<span id="{COUNT_ID}">{len(review)}</span>' in page
    assert '<span id="error-count">1</span>' in page
    assert page.count('<article class="item"') == len(review)
    # lowest confidence first, every key shown once (escaped: the file name is HTML)
    order = sorted(review, key=lambda r: (r["confidence"], r["key"]))
    shown = [page.index(f"<code>{html.escape(r['key'])}</code>") for r in order]
    assert shown == sorted(shown)
    assert "zz-bad.jpg" not in page  # an error row is counted, not listed


def test_text_from_the_data_is_escaped() -> None:
    item = ReviewItem("s3://b/in/a<b>&'c.jpg", 0.4, [("<i>x</i>", 0.4)], "m/1", "localized")
    context = PageContext("s3://b/<out>", 1, 0, 1, 10)
    page = render_page(
        1, [(item, Picture(None, "<note>"), Catalog(None, {}).info("m/1"))], context, 3
    )
    assert "<i>" not in page and "<note>" not in page and "a<b>" not in page and "<out>" not in page
    assert "a&lt;b&gt;&amp;&#x27;c.jpg" in page and "&lt;i&gt;x&lt;/i&gt;" in page


def test_each_item_shows_the_model_input_crop_and_its_top_candidates(run: Run) -> None:
    page = page_of(run.output)
    items = page.split('<article class="item"')[1:]
    by_key = {r["key"]: r for r in run.review}
    for item in items:
        key = next(k for k in by_key if f"<code>{html.escape(k)}</code>" in item)
        row = by_key[key]
        crop = Image.open(io.BytesIO(base64.b64decode(DATA_URI.search(item).group(1))))
        assert crop.format == "JPEG" and crop.size == (SPEC.img_size, SPEC.img_size)
        pixels, _ = decode_located(Path(key).read_bytes(), SPEC)
        assert (
            DATA_URI.search(item).group(1)
            == base64.b64encode(thumbnail_jpeg(pixels, 160, 80)).decode()
        )  # the scorer's crop: the model's contract, not the whole photo
        for label, prob in zip(row["topk_labels"], row["topk_probs"], strict=True):
            assert f"<code>{label}</code>" in item and f"{prob * 100:.1f}%" in item
        refs = item.count("data-ref=")
        placeholders = item.count("no reference photo")
        assert refs + placeholders == 3
        assert placeholders == sum(
            label not in run.catalog.references for label in row["topk_labels"]
        )


def test_each_reference_photo_is_embedded_once_per_page(run: Run) -> None:
    page = page_of(run.output)
    payload = json.loads(page.split("const REFERENCES = ", 1)[1].split(";\n", 1)[0])
    used = set(re.findall(r'data-ref="(r\d+)"', page))
    assert used == set(payload) and len(payload) <= len(run.catalog.references)
    embedded = {base64.b64decode(uri.split(",", 1)[1]) for uri in payload.values()}
    assert embedded <= set(run.catalog.references.values())


def test_more_items_than_a_page_holds_go_to_further_pages(run: Run, tmp_path: Path) -> None:
    output = tmp_path / "paged"
    shutil.copytree(run.output / "shards", output / "shards")
    shards = [str(p) for p in sorted((output / "shards").glob("*.parquet"))]
    result = write_review_gallery(
        str(output), shards, Storage(), config=ReviewConfig(max_items=2), catalog=run.catalog
    )
    total = len(run.review)
    names = ["index.html"] + [f"page-{n:03d}.html" for n in range(2, (total + 1) // 2 + 1)]
    assert result.pages == [str(output / "review" / n) for n in names]
    assert sorted(p.name for p in (output / "review").iterdir()) == sorted(names)
    counts = [page_of(output, n).count('<article class="item"') for n in names]
    assert sum(counts) == total and max(counts) == 2
    index = page_of(output)
    assert f'<span id="{COUNT_ID}">{total}</span>' in index
    assert f"Page 1 of {len(names)}" in index and 'href="page-002.html"' in index
    assert f'<span id="{COUNT_ID}">{total}</span>' in page_of(output, names[-1])


class SlowPages(Storage):
    """Local storage whose further pages commit slowly (or fail), recording the order in
    which pages were committed."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.committed: list[str] = []

    def write(self, uri: str, data: bytes) -> None:
        name = Path(uri).name
        if name.startswith("page-"):
            time.sleep(0.2)  # the index is ready long before
            if self.fail:
                raise OSError(f"{name}: disk full")
        super().write(uri, data)
        if name.endswith(".html"):
            self.committed.append(name)


def test_the_index_is_committed_after_every_other_page(run: Run, tmp_path: Path) -> None:
    output = tmp_path / "ordered"
    shutil.copytree(run.output / "shards", output / "shards")
    shards = [str(p) for p in sorted((output / "shards").glob("*.parquet"))]
    storage = SlowPages()
    result = write_review_gallery(
        str(output), shards, storage, config=ReviewConfig(max_items=1), catalog=run.catalog
    )
    assert len(result.pages) > 2
    assert storage.committed[-1] == "index.html"
    assert sorted(storage.committed) == sorted(Path(p).name for p in result.pages)


def test_a_page_that_cannot_be_committed_leaves_no_index(run: Run, tmp_path: Path) -> None:
    output = tmp_path / "unindexed"
    shutil.copytree(run.output / "shards", output / "shards")
    shards = [str(p) for p in sorted((output / "shards").glob("*.parquet"))]
    with pytest.raises(OSError, match=r"page-002\.html: disk full"):
        write_review_gallery(
            str(output),
            shards,
            SlowPages(fail=True),
            config=ReviewConfig(max_items=2),
            catalog=run.catalog,
        )
    assert not (output / "review" / "index.html").exists()


def test_pages_stop_at_max_pages_and_say_where_the_rest_are(run: Run, tmp_path: Path) -> None:
    output = tmp_path / "capped"
    shutil.copytree(run.output / "shards", output / "shards")
    shards = [str(p) for p in sorted((output / "shards").glob("*.parquet"))]
    config = ReviewConfig(max_items=1, max_pages=2)
    result = write_review_gallery(
        str(output), shards, Storage(), config=config, catalog=run.catalog
    )
    total = len(run.review)
    assert total > 2
    assert [Path(p).name for p in result.pages] == ["index.html", "page-002.html"]
    index = page_of(output)
    assert f'<span id="{COUNT_ID}">{total}</span>' in index
    assert f'<span id="{SHOWN_ID}">2</span>' in index and "needs_review = true" in index
    assert "Page 1 of 2" in index
    # the two lowest-confidence rows, as the uncapped gallery orders them
    uncapped = tmp_path / "uncapped"
    shutil.copytree(run.output / "shards", uncapped / "shards")
    write_review_gallery(
        str(uncapped),
        [str(p) for p in sorted((uncapped / "shards").glob("*.parquet"))],
        Storage(),
        config=ReviewConfig(max_items=1, max_pages=total),
        catalog=run.catalog,
    )
    keys = re.compile(r"<h2>\d+\. ([^<]+)</h2>")
    assert keys.findall(index) == keys.findall(page_of(uncapped))
    assert SHOWN_ID not in page_of(uncapped)


def test_without_a_tracking_server_the_whole_photo_is_shown_with_a_note(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    output = tmp_path / "plain"
    shutil.copytree(run.output / "shards", output / "shards")
    shards = [str(p) for p in sorted((output / "shards").glob("*.parquet"))]
    write_review_gallery(str(output), shards, Storage(), catalog=MlflowCatalog(None, tmp_path))
    page = page_of(output)
    assert "no MLflow tracking server set" in page and "data-ref=" not in page
    crop = Image.open(io.BytesIO(base64.b64decode(DATA_URI.search(page).group(1))))
    assert crop.size == (96, 96)  # the whole 96 px photo, not a 48 px crop


def test_a_gallery_that_fails_keeps_the_predictions(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Sink:
        def __init__(self) -> None:
            self.events: list[tuple[str, int]] = []

        def event(self, name: str, count: int = 1) -> None:
            self.events.append((name, count))

        def summary(self, *_: Any, **__: Any) -> None:
            return None

    def broken(*_: Any, **__: Any) -> None:
        raise OSError("disk full")

    output = tmp_path / "failing"
    shutil.copytree(run.output / "shards", output / "shards")
    shutil.copytree(run.output / "_summary", output / "_summary")
    monkeypatch.setattr(review_gallery, "write_review_gallery", broken)
    sink = Sink()
    shard_ids = [p.stem for p in sorted((output / "shards").glob("*.parquet"))]
    manifest = finalize_scoring(str(output), shard_ids, sink=sink)  # type: ignore[arg-type]
    assert (output / "_SUCCESS").exists() and manifest["rows"] == len(run.rows)
    assert manifest["review_uri"] is None and manifest["review"]["error"] == "OSError: disk full"
    assert ("review.failed", 1) in sink.events
    assert not (output / "review").exists()


def test_review_rows_count_errors_and_skip_confident_rows(run: Run) -> None:
    tables = [pq.read_table(p) for p in sorted((run.output / "shards").glob("*.parquet"))]
    found = review_rows(tables, candidates=2)
    assert found.errors == 1 and len(found.items) == len(run.review)
    assert all(len(item.candidates) == 2 for item in found.items)


def test_review_rows_hold_only_the_lowest_confidence_rows_kept_but_count_all() -> None:
    # 5 shards of 40 rows: every 3rd flagged, every 7th an error, confidences unique
    tables, flagged = [], []
    for shard in range(5):
        rows = []
        for i in range(40):
            n = shard * 40 + i
            error = "corrupt: cannot decode" if n % 7 == 0 else None
            review = n % 3 == 0 and error is None
            confidence = ((n * 37) % 200) / 200
            if review:
                flagged.append((confidence, f"img/{n:04d}.jpg"))
            rows.append(
                {
                    "key": f"img/{n:04d}.jpg",
                    "confidence": confidence,
                    "topk_labels": ["a", "b"],
                    "topk_probs": [confidence, 1 - confidence],
                    "model_version": "1",
                    "needs_review": review,
                    "error": error,
                }
            )
        tables.append(pa.Table.from_pylist(rows))
    everything = review_rows(tables)
    kept = review_rows(tables, keep=5)
    errors = len([n for n in range(200) if n % 7 == 0])
    assert everything.flagged == kept.flagged == len(flagged) == len(everything.items)
    assert everything.errors == kept.errors == errors
    # the 5 most doubtful rows, lowest confidence first, though each shard had more
    assert [(i.confidence, i.key) for i in kept.items] == sorted(flagged)[:5]
    assert kept.items == everything.items[:5]


# --- in a browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_the_page_renders_in_chromium_with_every_image_loaded(run: Run, browser: Any) -> None:
    page = browser.new_page()
    try:
        page.goto((run.output / "review" / "index.html").as_uri(), wait_until="load")
        assert page.title().startswith("RxVision review")
        assert int(page.inner_text(f"#{COUNT_ID}")) == len(run.review)
        assert page.locator("article.item").count() == len(run.review)
        images = page.evaluate("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth])")
        assert len(images) >= len(run.review) * 2  # each crop, and references
        assert all(complete and width > 0 for _, complete, width in images), images
        assert page.locator("img[data-ref]").count() > 0
    finally:
        page.close()
