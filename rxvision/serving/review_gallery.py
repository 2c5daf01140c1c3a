"""The review gallery: one static HTML page per scoring run for the pharmacist's queue.

``finalize_scoring`` writes it beside the predictions, before ``_manifest.json``::

    <output>/review/index.html       the first ``max_items`` needs_review rows
    <output>/review/page-002.html    the next ones, ... (only when there are more)

Each item is one ``needs_review`` row with its input crop (re-made from the image with
the preprocessing contract of the model version that scored it: the localization crop at
the model's input size, before normalisation) and its top candidates beside reference
photos. Items are ordered lowest confidence first: the most doubtful photos come first.
A crop made once is kept beside the inference cache (``rxvision.serving.thumbnail_cache``,
keyed by the scored bytes' hash and the contract): a later gallery reuses it unfetched.
Error rows (unreadable images) have no prediction to review: they are counted, not listed.

This module reads the rows, re-makes the crops and writes the pages; the model versions
(contract, reference photos) are found by ``rxvision.serving.review_models`` and the
HTML is made by ``rxvision.serving.review_page``. Each page is written whole (one S3 PUT,
or a local file through a temporary name), ``index.html`` last, and the S3 object is
served as ``text/html``.

A gallery that cannot be written never costs the run its predictions: ``review_summary``
logs the failure, counts it (``rxvision.scoring.review.failed``) and says so in the
manifest, and the predictions commit stands.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from rxvision.config.load import load_config, validate_config
from rxvision.home import repo_root
from rxvision.serving.review_crops import RunCrops, input_crop
from rxvision.serving.review_models import MlflowCatalog, ModelCatalog, ModelInfo
from rxvision.serving.review_page import (
    REVIEW_DIR,
    PageContext,
    Picture,
    ReviewItem,
    page_name,
    render_page,
)
from rxvision.serving.thumbnail_cache import ThumbnailCache, open_thumbnails
from rxvision.storage.s3 import parse_s3_uri

if TYPE_CHECKING:
    from rxvision.serving.cache import CacheConfig
    from rxvision.serving.metrics import StatsdSink
    from rxvision.storage.s3 import S3Store

log = logging.getLogger(__name__)

DEFAULT_CONFIG = repo_root() / "configs" / "review.yaml"
HTML_TYPE = "text/html; charset=utf-8"
COLUMNS = [
    "key",
    "confidence",
    "topk_labels",
    "topk_probs",
    "model_version",
    "needs_review",
    "error",
    "localization",
    "content_sha256",
]


class ReviewConfig(BaseModel):
    """The review gallery (``configs/review.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # items on one page: more go to page-002.html, ... (index.html says how many)
    max_items: int = Field(1000, ge=1)
    # pages built per run: the lowest-confidence rows first; past them the predictions'
    # needs_review rows are the list (a run of 100,000 images scored by a weak model
    # flagged 68,851: 69 pages took ~12 minutes of the publish task)
    max_pages: int = Field(10, ge=1)
    # candidates shown per item (at most the top-k the scorer wrote)
    candidates: int = Field(3, ge=1, le=10)
    # the input crop's thumbnail: shrunk to fit, never enlarged
    thumb_px: int = Field(160, ge=16, le=1024)
    jpeg_quality: int = Field(80, ge=10, le=95)
    download_workers: int = Field(8, ge=1, le=64)
    # thumbnails kept per contract beside the inference cache (its ``uri``; none without
    # one): twice the most one gallery shows, so a rescore re-makes no crop
    cache_keep: int = Field(20_000, ge=1)
    # the scorer's own limits: a file replaced by a hostile one since is refused alike
    max_image_bytes: int = Field(64 * 1024 * 1024, ge=1)
    max_pixels: int = Field(50_000_000, ge=1)
    # where model versions and their reference photos are read (null: MLFLOW_TRACKING_URI)
    tracking_uri: str | None = None


def load_review_config(
    path: Path | str | None = None, overrides: list[str] | None = None
) -> ReviewConfig:
    """``configs/review.yaml`` (or ``path``) with overrides; defaults without a file."""
    if path is None and not DEFAULT_CONFIG.is_file():
        return validate_config({}, ReviewConfig, overrides, source="review defaults")
    return load_config(path or DEFAULT_CONFIG, ReviewConfig, overrides)


class GalleryStorage(Protocol):
    """The object operations the gallery needs (``rxvision.storage.uri_store.Storage``)."""

    @property
    def s3(self) -> S3Store: ...

    def read(self, uri: str) -> bytes: ...

    def write(self, uri: str, data: bytes) -> None: ...

    def list(self, root: str) -> list[str]: ...

    def delete(self, uri: str) -> None: ...


# --- rows: what the pages list -----------------------------------------------------------


@dataclass
class ReviewRows:
    """A run's needs_review rows: how many there are (``flagged``), the first ``keep`` of
    them lowest confidence first (``items``), and its error rows."""

    items: list[ReviewItem] = field(default_factory=list)
    errors: int = 0
    flagged: int = 0


def review_rows(tables: Iterable[Any], candidates: int = 3, keep: int | None = None) -> ReviewRows:
    """The review items and the error count of prediction tables (pyarrow): every
    needs_review row is counted; only the ``keep`` lowest-confidence ones (all with
    None) are held, so memory follows what the pages show, not the run's size (a weak
    model flagged 68,851 rows of a 100,000-image run)."""
    found = ReviewRows()
    for table in tables:
        for row in _review_candidates(table).to_pylist():
            if row.get("error"):
                found.errors += 1
            elif row.get("needs_review"):
                found.flagged += 1
                found.items.append(_item(row, candidates))
        if keep is not None and len(found.items) > 2 * keep:
            found.items = _lowest_first(found.items)[:keep]  # amortized: a sort per keep rows
    found.items = _lowest_first(found.items)[:keep]
    return found


def _review_candidates(table: Any) -> Any:
    """``table``'s gallery columns, only the rows flagged or in error (the confident rest
    never becomes Python objects)."""
    table = table.select([c for c in COLUMNS if c in table.column_names])
    wanted = pa.array([False] * table.num_rows)
    if "needs_review" in table.column_names:
        wanted = pc.fill_null(table.column("needs_review").cast(pa.bool_()), False)
    if "error" in table.column_names:
        text = table.column("error").cast(pa.string())
        error = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False)
        wanted = pc.or_(wanted, error)
    return table.filter(wanted)


def _lowest_first(items: list[ReviewItem]) -> list[ReviewItem]:
    return sorted(items, key=lambda item: (item.confidence, item.key))


def _item(row: dict[str, Any], candidates: int) -> ReviewItem:
    labels = list(row["topk_labels"] or [])[:candidates]
    probs = [float(p) for p in list(row["topk_probs"] or [])[:candidates]]
    return ReviewItem(
        key=str(row["key"]),
        confidence=float(row["confidence"] or 0.0),
        candidates=list(zip(labels, probs, strict=True)),
        model_version=str(row["model_version"] or ""),
        # null in shards written before these columns existed
        localization=row.get("localization"),
        content_sha256=row.get("content_sha256"),
    )


def read_shards(shard_uris: Sequence[str], storage: GalleryStorage) -> Iterable[Any]:
    """Each committed shard's table, only the columns the gallery reads that it has (one
    at a time: memory stays one shard's, however large the run)."""
    for uri in shard_uris:
        data = pq.ParquetFile(io.BytesIO(storage.read(uri)))
        yield data.read(columns=[c for c in COLUMNS if c in data.schema_arrow.names])


# --- writing -----------------------------------------------------------------------------


@dataclass
class GalleryResult:
    """What was written: the index page, every page, the counts."""

    uri: str
    pages: list[str]
    items: int
    errors: int
    # crops the scorer made (rxvision.serving.review_crops), not re-made here
    crops_from_scoring: int = 0
    # crops read from the thumbnail cache and crops stored in it (None: no cache)
    thumbnails: dict[str, int] | None = None

    def summary(self) -> dict[str, Any]:
        """The manifest's part: ``review_uri``, ``needs_review`` and the details."""
        review: dict[str, Any] = {
            "pages": self.pages,
            "error_rows": self.errors,
            "crops_from_scoring": self.crops_from_scoring,
        }
        if self.thumbnails is not None:
            review["thumbnails"] = self.thumbnails
        return {"review_uri": self.uri, "needs_review": self.items, "review": review}


def page_uri(output_uri: str, number: int = 1) -> str:
    """Where page ``number`` of a run's gallery is (1: ``review/index.html``)."""
    return f"{output_uri.rstrip('/')}/{REVIEW_DIR}/{page_name(number)}"


def write_review_gallery(
    output_uri: str,
    shard_uris: Sequence[str],
    storage: GalleryStorage,
    *,
    config: ReviewConfig | None = None,
    catalog: ModelCatalog | None = None,
    thumbnails: ThumbnailCache | None = None,
) -> GalleryResult:
    """Build and commit every page of ``output_uri``'s gallery from its committed shards
    (crops read from and kept in ``thumbnails`` when given)."""
    config = config or load_review_config()
    catalog = catalog or MlflowCatalog(config.tracking_uri)
    limit = config.max_items * config.max_pages
    found = review_rows(read_shards(shard_uris, storage), config.candidates, keep=limit)
    shown = found.items
    chunks = [
        shown[start : start + config.max_items] for start in range(0, len(shown), config.max_items)
    ] or [[]]
    context = PageContext(
        output_uri, found.flagged, found.errors, len(chunks), config.max_items, len(shown)
    )
    pages = [page_uri(output_uri, n) for n in range(1, len(chunks) + 1)]
    made = _crops_made_while_scoring(output_uri, shown, storage, catalog, config)

    def page(number: int) -> bytes:
        entries = _prepare(chunks[number - 1], storage, catalog, config, thumbnails, made)
        return render_page(number, entries, context, config.candidates).encode()

    # each page is committed while the next is made, and the crops made are stored while
    # the index commits (uploads on otherwise idle cores, at the end of a run); index.html
    # goes last: it names the other pages, so they exist once it does
    with ThreadPoolExecutor(2) as uploads:
        others = [
            uploads.submit(commit_page, storage, pages[number - 1], page(number))
            for number in range(2, len(chunks) + 1)
        ]
        index = page(1)
        stored = uploads.submit(_store, thumbnails) if thumbnails is not None else None
        for committed in others:
            committed.result()
        commit_page(storage, pages[0], index)
    log.info("review gallery: %d items on %d page(s) at %s", found.flagged, len(chunks), pages[0])
    result = GalleryResult(pages[0], pages, found.flagged, found.errors, made.hits)
    if thumbnails is not None and stored is not None:
        result.thumbnails = {"reused": thumbnails.hits, "stored": stored.result()}
    return result


def _store(thumbnails: ThumbnailCache) -> int:
    """Keep the crops made for a later gallery; a failure is logged, never raised (a
    stored crop only spares a later gallery its download)."""
    try:
        return thumbnails.flush()
    except Exception as exc:
        log.warning("thumbnail cache not updated: %s: %s", type(exc).__name__, exc)
        return 0


def _prepare(
    items: Sequence[ReviewItem],
    storage: GalleryStorage,
    catalog: ModelCatalog,
    config: ReviewConfig,
    thumbnails: ThumbnailCache | None = None,
    made: RunCrops | None = None,
) -> list[tuple[ReviewItem, Picture, ModelInfo]]:
    """Each item with its crop (made while scoring, or downloaded and decoded in
    parallel) and its model."""
    models = [catalog.info(item.model_version) for item in items]  # looked up once each

    def crop(index: int) -> Picture:
        return input_crop(items[index], storage, models[index], config, thumbnails, made)

    with ThreadPoolExecutor(config.download_workers) as pool:
        pictures = list(pool.map(crop, range(len(items))))
    return list(zip(items, pictures, models, strict=True))


def _crops_made_while_scoring(
    output_uri: str,
    shown: Sequence[ReviewItem],
    storage: GalleryStorage,
    catalog: ModelCatalog,
    config: ReviewConfig,
) -> RunCrops:
    """The crops the run's shards made of the items shown (read once for every page)."""
    made = RunCrops(output_uri, storage, thumb_px=config.thumb_px, jpeg_quality=config.jpeg_quality)
    wanted = []
    for item in shown:
        spec = catalog.info(item.model_version).spec
        if spec is not None and item.content_sha256:
            wanted.append((spec, item.content_sha256))
    made.load(wanted)
    return made


def commit_page(storage: GalleryStorage, uri: str, data: bytes) -> None:
    """Write ``data`` at ``uri`` whole: readers see the old page or the new one. On S3 one
    PUT (S3 never shows part of an object; a temporary object copied over the page cost a
    COPY and a DELETE more of a ~4 MB page: 1.5x the time, measured) of ``text/html``, so
    a presigned link opens in the browser; a local file through a temporary name."""
    if not uri.startswith("s3://"):
        storage.write(uri, data)  # a temporary file renamed over the page
        return
    bucket, key = parse_s3_uri(uri)
    storage.s3.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=HTML_TYPE)


def review_summary(
    output_uri: str,
    shard_uris: Sequence[str],
    storage: GalleryStorage,
    sink: StatsdSink | None = None,
    *,
    config: ReviewConfig | None = None,
    catalog: ModelCatalog | None = None,
    cache: CacheConfig | None = None,
) -> dict[str, Any]:
    """``write_review_gallery``, for the manifest: its summary, or on any failure
    ``review_uri: null`` with the error (logged and counted as ``review.failed``): the
    predictions are committed already and stay so. ``enabled: false``: nothing written.
    ``cache``: the run's inference cache, beside which the crops are kept."""
    try:
        config = config or load_review_config()
        if not config.enabled:
            return {"review_uri": None, "needs_review": None, "review": {"enabled": False}}
        thumbnails = open_thumbnails(
            cache,
            storage,
            thumb_px=config.thumb_px,
            jpeg_quality=config.jpeg_quality,
            keep=config.cache_keep,
        )
        result = write_review_gallery(
            output_uri, shard_uris, storage, config=config, catalog=catalog, thumbnails=thumbnails
        )
    except Exception as exc:
        log.exception("review gallery of %s not written (the predictions stand)", output_uri)
        if sink is not None:
            sink.event("review.failed")
        return {
            "review_uri": None,
            "needs_review": None,
            "review": {"error": f"{type(exc).__name__}: {exc}"},
        }
    if sink is not None:
        sink.event("review.items", result.items)
        if result.thumbnails is not None:
            sink.event("review.thumbnails_reused", result.thumbnails["reused"])
    return result.summary()
