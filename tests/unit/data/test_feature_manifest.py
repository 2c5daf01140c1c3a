"""A feature set's manifest reads back as written, and a field this version does not
know is refused by name instead of being dropped."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from rxvision.data.feature_manifest import FeatureManifest, ShardRecord
from rxvision.errors import FeatureStoreError

pytestmark = pytest.mark.unit


def manifest() -> FeatureManifest:
    shards = [
        ShardRecord("shard-00000.npy", ["a/1.jpg", "b/2.jpg"], ["a", "b"], ["s1", "s2"]),
        ShardRecord("shard-00003.npy", ["a/3.jpg"], ["a"], ["s3"], set_key="older", rows=[2]),
    ]
    return FeatureManifest("set-1", "0" * 64, {"img_size": 24}, ["a", "b"], 3, shards, "", "x")


def test_a_manifest_reads_back_as_written() -> None:
    assert FeatureManifest.from_json(asdict(manifest())) == manifest()
    # what is stored: the same fields as before (older hosts read it), compact
    stored = manifest().to_bytes()
    assert json.loads(stored) == asdict(manifest()) and b"\n" not in stored
    assert FeatureManifest.from_json(json.loads(stored)) == manifest()


def test_a_shard_field_from_a_newer_version_is_refused_naming_it() -> None:
    data = asdict(manifest())
    data["shards"][1]["mask"] = [1]
    with pytest.raises(FeatureStoreError, match=r"set-1: manifest fields \['shards\[\]\.mask'\]"):
        FeatureManifest.from_json(data)


def test_a_set_field_from_a_newer_version_is_refused_naming_it() -> None:
    data = {**asdict(manifest()), "compaction": {"from": ["a", "b"]}}
    with pytest.raises(FeatureStoreError, match=r"manifest fields \['compaction'\]"):
        FeatureManifest.from_json(data)
