"""Resolving model URIs without the registry, and refusing unknown ones."""

from __future__ import annotations

import pytest

from rxvision.errors import ConfigError
from rxvision.serving.model_loading import resolve_model

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("uri", ["s3://bucket/model", "pills@champion", "models"])
def test_resolve_model_refuses_unknown_uris(uri: str) -> None:
    with pytest.raises(ConfigError, match="model URI"):
        resolve_model(uri, client=object())


def test_runs_uri_resolves_without_the_registry() -> None:
    ref = resolve_model("runs:/abc123/model", client=object())
    assert ref.run_id == "abc123" and ref.label == "runs:/abc123/model" and ref.immutable
