"""The review gallery: one static HTML page per scoring run for the pharmacist's queue.

``finalize_scoring`` writes it beside the predictions, before ``_manifest.json``::

    <output>/review/index.html       the first ``max_items`` needs_review rows
    <output>/review/page-002.html    the next ones, ... (only when there are more)

Each item is one ``needs_review`` row: the model's input crop (re-made from the image
with the preprocessing contract of the model version that scored it: the localization
crop at the model's input size, before normalisation), the top candidates
(``topk_labels`` / ``topk_probs``) with their confidences and, beside each, a reference
photo of that product from the model's training split (``rxvision.data.references``,
logged by the training run; "no reference photo" for a model trained before they were).
Items are ordered lowest confidence first: the most doubtful photos come first.

Error rows (unreadable images) have no prediction to review: they are counted on the
page (``#error-count``) and left to the ``error`` column, not listed.

A page is self-contained (every image a ``data:`` URI, small JPEG thumbnails), so it
opens from a presigned S3 URL or a local file with no other object. Each reference
photo is embedded once per page and set on its ``<img>`` elements by a few lines of
script: a candidate shown 3,000 times on a page costs its bytes once. Pages are written
under ``_tmp/`` and then committed (``index.html`` last): never half-written, and the
S3 object is served as ``text/html``.

A gallery that cannot be written never costs the run its predictions: ``review_summary``
logs the failure, counts it (``rxvision.scoring.review.failed``) and says so in the
manifest, and the predictions commit stands.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow.parquet as pq
import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from rxvision.config.load import load_config, validate_config
from rxvision.data.imaging import ImageSpec, decode_located
from rxvision.data.references import REFERENCES_DIR, REFERENCES_INDEX, thumbnail_jpeg
from rxvision.home import Home, repo_root
from rxvision.storage.s3 import parse_s3_uri

if TYPE_CHECKING:
    from rxvision.serving.metrics import StatsdSink
    from rxvision.storage.s3 import S3Store

log = logging.getLogger(__name__)

DEFAULT_CONFIG = repo_root() / "configs" / "review.yaml"
REVIEW_DIR = "review"
INDEX_PAGE = "index.html"
COUNT_ID = "review-count"
ERROR_COUNT_ID = "error-count"
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
    # candidates shown per item (at most the top-k the scorer wrote)
    candidates: int = Field(3, ge=1, le=10)
    # the input crop's thumbnail: shrunk to fit, never enlarged
    thumb_px: int = Field(160, ge=16, le=1024)
    jpeg_quality: int = Field(80, ge=10, le=95)
    download_workers: int = Field(8, ge=1, le=64)
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
    """The object operations the gallery needs (``rxvision.serving.batch.Storage``)."""

    @property
    def s3(self) -> S3Store: ...

    def read(self, uri: str) -> bytes: ...

    def write(self, uri: str, data: bytes) -> None: ...


# --- what the page shows -----------------------------------------------------------------


@dataclass(frozen=True)
class ReviewItem:
    """One needs_review prediction row."""

    key: str
    confidence: float
    candidates: list[tuple[str, float]]
    model_version: str
    localization: str | None = None
    content_sha256: str | None = None


@dataclass
class ReviewRows:
    """The needs_review rows of a run, lowest confidence first, and its error rows."""

    items: list[ReviewItem] = field(default_factory=list)
    errors: int = 0


def review_rows(tables: Iterable[Any], candidates: int = 3) -> ReviewRows:
    """The review items and the error count of prediction tables (pyarrow)."""
    found = ReviewRows()
    for table in tables:
        for row in table.select([c for c in COLUMNS if c in table.column_names]).to_pylist():
            if row.get("error"):
                found.errors += 1
            elif row.get("needs_review"):
                found.items.append(_item(row, candidates))
    found.items.sort(key=lambda item: (item.confidence, item.key))
    return found


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


# --- models: their preprocessing contract and reference photos ---------------------------


@dataclass
class ModelInfo:
    """What the gallery needs of one model version."""

    label: str
    spec: ImageSpec | None
    references: Callable[[str], bytes | None]
    # why the crop or the references cannot be shown (empty: nothing missing)
    note: str = ""


class ModelCatalog(Protocol):
    """Model versions by the ``model_version`` label prediction rows carry."""

    def info(self, label: str) -> ModelInfo: ...


def _no_reference(_: str) -> bytes | None:
    return None


def model_uri_of(label: str) -> str:
    """The URI of a row's ``model_version``: ``name/3`` is ``models:/name/3``; a
    label that is a URI already (``runs:/...``, ``models:/m-...``) is itself."""
    return label if ":/" in label else f"models:/{label}"


class RunReferences:
    """A training run's reference photos, each downloaded at most once: kept under
    ``cache_dir/<run id>/`` (a finished run's artifacts do not change), so later
    galleries of the same model read them from disk."""

    def __init__(self, client: Any, run_id: str, cache_dir: Path) -> None:
        self.client = client
        self.run_id = run_id
        self.folder = cache_dir / run_id
        self._index: dict[str, Any] | None = None
        self._photos: dict[str, bytes | None] = {}

    def index(self) -> dict[str, Any]:
        """``references/index.json`` of the run; empty when it logged none."""
        if self._index is None:
            data = self._artifact(REFERENCES_INDEX) if self._logged() else None
            self._index = dict(json.loads(data)) if data else {}
        return self._index

    def _logged(self) -> bool:
        """Whether the run logged references: one listing. (Asking for a missing artifact
        instead costs minutes: the proxied store answers 500, which MLflow's client
        retries with backoff.)"""
        if (self.folder / REFERENCES_INDEX).is_file():
            return True
        try:
            listed = {a.path for a in self.client.list_artifacts(self.run_id, REFERENCES_DIR)}
        except Exception as exc:  # the page shows placeholders; the log says why
            log.warning("run %s: references not listed: %s", self.run_id, exc)
            return False
        if REFERENCES_INDEX not in listed:
            log.info("run %s logged no reference photos (trained before they were)", self.run_id)
        return REFERENCES_INDEX in listed

    def get(self, class_name: str) -> bytes | None:
        """The JPEG reference of ``class_name`` (None when the run has none)."""
        if class_name not in self._photos:
            entry = self.index().get("classes", {}).get(class_name)
            path = f"{REFERENCES_DIR}/{entry['file']}" if entry else None
            self._photos[class_name] = self._artifact(path) if path else None
        return self._photos[class_name]

    def _artifact(self, path: str) -> bytes | None:
        cached = self.folder / path
        if cached.is_file():
            return cached.read_bytes()
        try:
            data = self._download(path)
        except Exception as exc:  # the page shows the placeholder; the log says why
            log.warning("run %s: %s not downloaded: %s", self.run_id, path, exc)
            return None
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:8]}")
        staging.write_bytes(data)
        staging.replace(cached)
        return data

    def _download(self, path: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="rxvision-ref-") as tmp:
            local = self.client.download_artifacts(self.run_id, path, tmp)
            return Path(local).read_bytes()


class MlflowCatalog:
    """Model versions from MLflow: the stored ``ImageSpec`` (from the version's
    ``MLmodel`` file alone, not its weights) and the training run's reference photos;
    each version is looked up once per catalog."""

    def __init__(self, tracking_uri: str | None = None, cache_dir: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.cache_dir = cache_dir or Home.from_env().cache_dir / "review"
        self._client: Any = None
        self._models: dict[str, ModelInfo] = {}

    @property
    def client(self) -> Any:
        """The MLflow client (built on first use)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def info(self, label: str) -> ModelInfo:
        """The model version named by a row's ``model_version``; a version that cannot be
        read still shows its items (the whole photo, no references) with a note why."""
        if label not in self._models:
            self._models[label] = self._lookup(label)
        return self._models[label]

    def _lookup(self, label: str) -> ModelInfo:
        if not (self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
            # no server named: MLflow would open (and create) a store in the working
            # directory, where no model of this run is
            note = "no MLflow tracking server set (MLFLOW_TRACKING_URI): the whole photo is shown"
            return ModelInfo(label, None, _no_reference, note)
        try:
            return self._load(label)
        except Exception as exc:
            log.warning("review gallery: model %s unreadable: %s", label, exc)
            note = f"model {label} unreadable ({exc}): the whole photo is shown"
            return ModelInfo(label, None, _no_reference, note)

    def _load(self, label: str) -> ModelInfo:
        from rxvision.serving.model import resolve_model

        ref = resolve_model(model_uri_of(label), self.client)
        metadata = self._metadata(ref)
        spec = ImageSpec.from_dict(metadata.get("preprocessing") or {}, source=f"model {label}")
        if not ref.run_id:
            return ModelInfo(label, spec, _no_reference, "no training run: no reference photos")
        references = RunReferences(self.client, ref.run_id, self.cache_dir)
        return ModelInfo(label, spec, references.get)

    def _metadata(self, ref: Any) -> dict[str, Any]:
        """The ``metadata`` of the version's MLmodel: the scorer's local copy when it has
        one, else that one small file downloaded."""
        import mlflow.artifacts

        from rxvision.serving.model import artifact_location, cache_key, default_cache_dir

        local = default_cache_dir() / cache_key(ref.cache_id) / "model" / "MLmodel"
        if ref.immutable and local.is_file():
            return _mlmodel_metadata(local)
        folder = Path(tempfile.mkdtemp(prefix="rxvision-mlmodel-"))
        try:
            got = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{artifact_location(ref, self.client)}/MLmodel",
                dst_path=str(folder),
                tracking_uri=self.client.tracking_uri,
            )
            return _mlmodel_metadata(Path(got))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _mlmodel_metadata(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    return dict(data.get("metadata") or {})


# --- images ------------------------------------------------------------------------------


@dataclass
class Picture:
    """An item's input crop as a JPEG thumbnail, or why there is none."""

    jpeg: bytes | None
    note: str = ""


def input_crop(
    item: ReviewItem, storage: GalleryStorage, model: ModelInfo, config: ReviewConfig
) -> Picture:
    """The model's input for ``item``, re-made from its image: the version's
    preprocessing contract (localization crop, resize; not normalised). Without a
    contract, the whole photo. A missing or undecodable image is a note, not a failure."""
    try:
        data = storage.read(item.key)
    except Exception as exc:
        return Picture(None, f"image unavailable: {exc}")
    try:
        if model.spec is not None:
            pixels, _ = decode_located(
                data,
                model.spec,
                max_pixels=config.max_pixels,
                max_bytes=config.max_image_bytes,
                name=item.key,
            )
        else:
            pixels = whole_photo(data, config)
    except Exception as exc:
        return Picture(None, f"image cannot be decoded now: {exc}")
    notes = [model.note] if model.note else []
    if item.content_sha256 and hashlib.sha256(data).hexdigest() != item.content_sha256:
        notes.append("the image changed since it was scored: this is the new one")
    return Picture(thumbnail_jpeg(pixels, config.thumb_px, config.jpeg_quality), "; ".join(notes))


def whole_photo(data: bytes, config: ReviewConfig) -> np.ndarray:
    """The whole photo, its aspect kept (a model whose contract is unknown: no crop can be
    re-made). Refused over the scorer's size limits, like any image it reads."""
    if len(data) > config.max_image_bytes:
        raise ValueError(f"{len(data)} bytes, over the limit of {config.max_image_bytes}")
    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > config.max_pixels:
            raise ValueError(f"{image.width}x{image.height} pixels, over the limit")
        image.draft("RGB", (config.thumb_px, config.thumb_px))  # JPEG: decode at a fraction
        return np.asarray(image.convert("RGB"))


def data_uri(jpeg: bytes) -> str:
    """A JPEG as a ``data:`` URI (the page needs no other object)."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


# --- pages -------------------------------------------------------------------------------


def page_name(number: int) -> str:
    """``index.html`` for page 1, then ``page-002.html``, ..."""
    return INDEX_PAGE if number == 1 else f"page-{number:03d}.html"


@dataclass
class PageContext:
    """What every page of a run says in its header."""

    output_uri: str
    total: int
    errors: int
    pages: int
    per_page: int
    generated: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    )


class _References:
    """The reference photos one page embeds, each once, by a short id."""

    def __init__(self) -> None:
        self.ids: dict[bytes, str] = {}

    def id_of(self, jpeg: bytes) -> str:
        if jpeg not in self.ids:
            self.ids[jpeg] = f"r{len(self.ids)}"
        return self.ids[jpeg]

    def script(self) -> str:
        table = {ref: data_uri(jpeg) for jpeg, ref in self.ids.items()}
        # "<" escaped: the JSON can never close the script element
        payload = json.dumps(table).replace("<", "\\u003c")
        return (
            f"<script>const REFERENCES = {payload};\n"
            'for (const img of document.querySelectorAll("img[data-ref]")) '
            "img.src = REFERENCES[img.dataset.ref];</script>"
        )


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1d1d1f}
h1{font-size:1.4rem;margin:0 0 .4rem}
h2{font-size:1rem;margin:0 0 .2rem;word-break:break-all}
code{font-size:.9em}
.summary{margin:.2rem 0}
nav a{margin-right:.5rem}
.item{display:flex;gap:1.2rem;border-top:1px solid #ccc;padding:.9rem 0}
.crop img,.missing{width:160px;height:160px;object-fit:contain;background:#eee}
.missing{display:flex;align-items:center;justify-content:center;text-align:center;
  font-size:12px;color:#666;padding:.3rem;box-sizing:border-box}
figure{margin:0} figcaption{font-size:12px;color:#555}
table{border-collapse:collapse;margin-top:.4rem}
th,td{padding:.25rem .6rem;text-align:left;vertical-align:middle}
th{font-weight:600;border-bottom:1px solid #ccc}
td.conf{font-variant-numeric:tabular-nums;text-align:right}
td img,.noref{width:96px;height:96px;object-fit:contain;background:#eee}
.noref{display:flex;align-items:center;justify-content:center;font-size:11px;color:#777;
  text-align:center}
.note{color:#9a5b00}
""".strip()


def render_page(
    number: int,
    items: Sequence[tuple[ReviewItem, Picture, ModelInfo]],
    context: PageContext,
    candidates: int,
) -> str:
    """One self-contained HTML page of the gallery."""
    refs = _References()
    first = (number - 1) * context.per_page + 1
    body = [_render_item(first + i, *entry, refs) for i, entry in enumerate(items)]
    if not items:
        body = ["<p>Nothing to review in this run.</p>"]
    title = f"RxVision review: {context.total} to review (page {number} of {context.pages})"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
            _render_header(number, len(items), context, candidates),
            "<main>",
            *body,
            "</main>",
            refs.script(),
            "<noscript><p>Reference photos need JavaScript.</p></noscript>",
            "</body></html>",
        ]
    )


def _render_header(number: int, shown: int, context: PageContext, candidates: int) -> str:
    first = (number - 1) * context.per_page + 1
    where = html.escape(context.output_uri)
    lines = [
        "<header><h1>Pharmacist review</h1>",
        f'<p class="summary"><span id="{COUNT_ID}">{context.total}</span> '
        f"{_plural(context.total, 'prediction needs', 'predictions need')} review in "
        f"<code>{where}</code> (confidence under the model's review threshold); lowest "
        f"confidence first, with the top {candidates} candidates.</p>",
        f'<p class="summary"><span id="{ERROR_COUNT_ID}">{context.errors}</span> '
        f"{_plural(context.errors, 'image', 'images')} could not be read (error rows): not "
        "listed here, see the predictions' <code>error</code> column.</p>",
    ]
    if context.pages > 1:
        last = first + shown - 1
        links = " ".join(
            f'<a href="{page_name(n)}">{n}</a>' if n != number else f"<strong>{n}</strong>"
            for n in range(1, context.pages + 1)
        )
        lines.append(
            f'<p class="summary">Page {number} of {context.pages}: items {first}-{last} of '
            f"{context.total}, at most {context.per_page} a page. The other pages are "
            f"<code>{REVIEW_DIR}/page-NNN.html</code> beside this one.</p><nav>Pages: {links}</nav>"
        )
    lines.append(f'<p class="summary">Generated {context.generated}.</p></header>')
    return "\n".join(lines)


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _render_item(
    position: int, item: ReviewItem, picture: Picture, model: ModelInfo, refs: _References
) -> str:
    key = html.escape(item.key)
    name = html.escape(item.key.rstrip("/").rsplit("/", 1)[-1])
    if picture.jpeg is not None:
        crop = f'<img src="{data_uri(picture.jpeg)}" alt="model input of {name}">'
    else:
        crop = '<div class="missing">no image</div>'
    rows = "".join(
        _render_candidate(rank, label, prob, model, refs)
        for rank, (label, prob) in enumerate(item.candidates, start=1)
    )
    note = f'<p class="note">{html.escape(picture.note)}</p>' if picture.note else ""
    facts = (
        f"model <code>{html.escape(item.model_version)}</code>"
        f" · pill {html.escape(item.localization or 'not localized by this model')}"
    )
    return (
        f'<article class="item" id="item-{position}">'
        f'<figure class="crop">{crop}<figcaption>model input</figcaption></figure>'
        f"<div><h2>{position}. {name}</h2><p><code>{key}</code></p><p>{facts}</p>{note}"
        "<table><thead><tr><th>#</th><th>candidate</th><th>confidence</th>"
        f"<th>reference photo</th></tr></thead><tbody>{rows}</tbody></table></div></article>"
    )


def _render_candidate(
    rank: int, label: str, prob: float, model: ModelInfo, refs: _References
) -> str:
    text = html.escape(label)
    jpeg = model.references(label)
    if jpeg is None:
        photo = '<div class="noref">no reference photo</div>'
    else:
        photo = f'<img data-ref="{refs.id_of(jpeg)}" alt="reference photo of {text}">'
    return (
        f"<tr><td>{rank}</td><td><code>{text}</code></td>"
        f'<td class="conf">{prob * 100:.1f}%</td><td>{photo}</td></tr>'
    )


# --- writing -----------------------------------------------------------------------------


@dataclass
class GalleryResult:
    """What was written: the index page, every page, the counts."""

    uri: str
    pages: list[str]
    items: int
    errors: int

    def summary(self) -> dict[str, Any]:
        """The manifest's part: ``review_uri``, ``needs_review`` and the details."""
        return {
            "review_uri": self.uri,
            "needs_review": self.items,
            "review": {"pages": self.pages, "error_rows": self.errors},
        }


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
) -> GalleryResult:
    """Build and commit every page of ``output_uri``'s gallery from its committed shards."""
    config = config or load_review_config()
    catalog = catalog or MlflowCatalog(config.tracking_uri)
    found = review_rows(read_shards(shard_uris, storage), config.candidates)
    chunks = [
        found.items[start : start + config.max_items]
        for start in range(0, len(found.items), config.max_items)
    ] or [[]]
    context = PageContext(output_uri, len(found.items), found.errors, len(chunks), config.max_items)
    pages = [page_uri(output_uri, n) for n in range(1, len(chunks) + 1)]
    # index.html last: it names the other pages, so they exist once it does
    for number in [*range(2, len(chunks) + 1), 1]:
        entries = _prepare(chunks[number - 1], storage, catalog, config)
        page = render_page(number, entries, context, config.candidates)
        commit_page(storage, output_uri, pages[number - 1], page.encode())
    log.info(
        "review gallery: %d items on %d page(s) at %s", len(found.items), len(chunks), pages[0]
    )
    return GalleryResult(pages[0], pages, len(found.items), found.errors)


def _prepare(
    items: Sequence[ReviewItem],
    storage: GalleryStorage,
    catalog: ModelCatalog,
    config: ReviewConfig,
) -> list[tuple[ReviewItem, Picture, ModelInfo]]:
    """Each item with its crop (downloaded and decoded in parallel) and its model."""
    models = [catalog.info(item.model_version) for item in items]  # looked up once each

    def crop(index: int) -> Picture:
        return input_crop(items[index], storage, models[index], config)

    with ThreadPoolExecutor(config.download_workers) as pool:
        pictures = list(pool.map(crop, range(len(items))))
    return list(zip(items, pictures, models, strict=True))


def commit_page(storage: GalleryStorage, output_uri: str, uri: str, data: bytes) -> None:
    """Write ``data`` at ``uri`` through a temporary object under the run's ``_tmp/``
    (cleaned by ``finalize_scoring``): readers see the old page or the new one. On S3
    the object is ``text/html``, so a presigned link opens in the browser."""
    if not uri.startswith("s3://"):
        storage.write(uri, data)  # a temporary file renamed over the page
        return
    client = storage.s3.client
    tmp_bucket, tmp_key = parse_s3_uri(
        f"{output_uri.rstrip('/')}/_tmp/review.{uuid.uuid4().hex[:12]}.html"
    )
    bucket, key = parse_s3_uri(uri)
    client.put_object(Bucket=tmp_bucket, Key=tmp_key, Body=data, ContentType=HTML_TYPE)
    client.copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": tmp_bucket, "Key": tmp_key},
        MetadataDirective="REPLACE",
        ContentType=HTML_TYPE,
    )
    client.delete_object(Bucket=tmp_bucket, Key=tmp_key)


def review_summary(
    output_uri: str,
    shard_uris: Sequence[str],
    storage: GalleryStorage,
    sink: StatsdSink | None = None,
    *,
    config: ReviewConfig | None = None,
    catalog: ModelCatalog | None = None,
) -> dict[str, Any]:
    """``write_review_gallery``, for the manifest: its summary, or on any failure
    ``review_uri: null`` with the error (logged and counted as ``review.failed``): the
    predictions are committed already and stay so. ``enabled: false``: nothing written."""
    try:
        config = config or load_review_config()
        if not config.enabled:
            return {"review_uri": None, "needs_review": None, "review": {"enabled": False}}
        result = write_review_gallery(
            output_uri, shard_uris, storage, config=config, catalog=catalog
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
    return result.summary()
