"""Prediction rows: the Arrow schema of a scoring shard's Parquet and the rows in it.

One row per input key: the top-1 label and confidence, the top-k, the review flag,
which model scored it and why the fallback did, where the pill was found, the content
hash of the bytes scored, and whether it came from the inference cache. An input that
could not be scored is a row too, with ``error`` set (a reason prefix below, then the
detail).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from rxvision.data.localize import DISABLED, LOCALIZED

if TYPE_CHECKING:
    from rxvision.serving.model_contract import LoadedModel

# ``scored_by``: which model of the pool scored a row
PRIMARY, FALLBACK = "primary", "fallback"
# a fallback reason repeats on every row of a shard: the exception text, cut to this
REASON_CHARS = 500
# how ``error`` starts: why an input has no prediction (the detail follows)
MISSING = "missing"
DOWNLOAD_FAILED = "download_failed"
MODEL_ERROR = "model_error"
NON_FINITE = "non_finite_logits"


PREDICTION_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float32()),
        ("topk_labels", pa.list_(pa.string())),
        ("topk_probs", pa.list_(pa.float32())),
        ("model_version", pa.string()),
        ("needs_review", pa.bool_()),
        ("error", pa.string()),
        ("scored_by", pa.string()),
        ("runtime", pa.string()),
        ("shard_id", pa.string()),
        # the model's contract crops the pill: whether one was found (False: the whole
        # frame was scored); null when the model scores whole frames by design
        ("localized", pa.bool_()),
        ("localization", pa.string()),
        # why the fallback scored this row (the primary failed to load, the breaker was
        # open, or the primary failed on this image); null when the primary scored it
        ("fallback_reason", pa.string()),
        # sha256 of the bytes scored (null when they could not be read)
        ("content_sha256", pa.string()),
        # served from the inference cache (rxvision.serving.cache), not scored this run
        ("cached", pa.bool_()),
    ]
)


def error_row(
    key: str, reason: str, shard: str, model: str | None = None, digest: str | None = None
) -> dict[str, Any]:
    """A row for an input that could not be scored."""
    return {
        "key": key,
        "label": None,
        "confidence": None,
        "topk_labels": [],
        "topk_probs": [],
        "model_version": model,
        "needs_review": False,
        "error": reason,
        "scored_by": None,
        "runtime": None,
        "shard_id": shard,
        "localized": None,
        "localization": None,
        "fallback_reason": None,
        "content_sha256": digest,
        "cached": False,
    }


def cached_row(key: str, hit: dict[str, Any], digest: str | None, shard: str) -> dict[str, Any]:
    """A row served from the inference cache (the primary scored it in an earlier run)."""
    return {
        **error_row(key, "", shard),
        **hit,
        "error": None,
        "scored_by": PRIMARY,
        "content_sha256": digest,
        "cached": True,
    }


def prediction_rows(
    keys: Sequence[str],
    probs: np.ndarray,
    loaded: LoadedModel,
    *,
    role: str,
    runtime: str,
    top_k: int,
    review_threshold: float,
    shard: str,
    located: Sequence[str] | None = None,
    fallback_reason: str | None = None,
    digests: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """One row per image: top-1 label and confidence, top-k, review flag, where the pill
    was found (``located``: each image's localization status) and, for rows the
    fallback scored, why (``fallback_reason``)."""
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = []
    statuses = list(located) if located is not None else [DISABLED] * len(keys)
    hashes = list(digests) if digests is not None else [None] * len(keys)
    for key, p, top, status, digest in zip(keys, probs, order, statuses, hashes, strict=True):
        confidence = float(p[top[0]])
        rows.append(
            {
                "key": key,
                "label": loaded.classes[int(top[0])],
                "confidence": confidence,
                "topk_labels": [loaded.classes[int(i)] for i in top],
                "topk_probs": [float(p[i]) for i in top],
                "model_version": loaded.label,
                "needs_review": confidence < review_threshold,
                "error": None,
                "scored_by": role,
                "runtime": runtime,
                "shard_id": shard,
                "localized": None if status == DISABLED else status == LOCALIZED,
                "localization": None if status == DISABLED else status,
                "fallback_reason": fallback_reason if role == FALLBACK else None,
                "content_sha256": digest,
                "cached": False,
            }
        )
    return rows
