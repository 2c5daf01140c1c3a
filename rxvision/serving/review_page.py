"""The review gallery's HTML: one self-contained page of needs_review items.

Each item is one ``needs_review`` row: the model's input crop (re-made by
``rxvision.serving.review_gallery`` with the preprocessing contract of the model version
that scored it), the top candidates (``topk_labels`` / ``topk_probs``) with their
confidences and, beside each, a reference photo of that product from the model's training
split ("no reference photo" for a model trained before they were). Error rows (unreadable
images) have no prediction to review: they are counted on the page (``#error-count``),
not listed.

A page is self-contained (every image a ``data:`` URI, small JPEG thumbnails), so it
opens from a presigned S3 URL or a local file with no other object. Each reference
photo is embedded once per page and set on its ``<img>`` elements by a few lines of
script: a candidate shown 3,000 times on a page costs its bytes once.

Rendering only: no storage, no MLflow. What a page shows (``ReviewItem``, ``Picture``)
is defined here so that the gallery imports the renderer, never the reverse.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rxvision.serving.review_models import ModelInfo

REVIEW_DIR = "review"
INDEX_PAGE = "index.html"
COUNT_ID = "review-count"
ERROR_COUNT_ID = "error-count"
SHOWN_ID = "review-shown"


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
class Picture:
    """An item's input crop as a JPEG thumbnail, or why there is none."""

    jpeg: bytes | None
    note: str = ""


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
    # items on the pages: the lowest-confidence ``max_pages * per_page`` of ``total``
    shown: int | None = None
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
    if context.shown is not None and context.shown < context.total:
        lines.append(
            f'<p class="summary">The lowest-confidence <span id="{SHOWN_ID}">{context.shown}'
            f"</span> are on these pages; every one of the {context.total} is a row with "
            "<code>needs_review = true</code> in the predictions.</p>"
        )
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
