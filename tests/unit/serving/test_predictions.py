"""The prediction rows' schema."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rxvision.serving.predictions import PREDICTION_SCHEMA

pytestmark = pytest.mark.unit


def test_schema_has_the_required_columns() -> None:
    names = set(PREDICTION_SCHEMA.names)
    assert {
        "key",
        "label",
        "confidence",
        "topk_labels",
        "topk_probs",
        "model_version",
        "needs_review",
        "error",
        "scored_by",
    } <= names
    assert PREDICTION_SCHEMA.field("topk_probs").type == pa.list_(pa.float32())
