"""Planning: the input cut into deterministic shards, the plan saved and reused."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_fixtures import write_images

from rxvision.errors import ConfigError
from rxvision.serving.plan import list_input_shards, plan_shards

pytestmark = pytest.mark.unit


def test_shards_are_deterministic_and_skip_non_images(image_dir: Path) -> None:
    first = list_input_shards(str(image_dir), 5)
    again = list_input_shards(str(image_dir) + "/", 5)
    assert first == again
    keys = [k for s in first for k in s.keys]
    assert keys == sorted(keys)
    assert len(keys) == 13  # 10 good, truncated, empty, notes.png
    assert not any(k.endswith((".txt", ".hidden.jpg")) for k in keys)
    assert [s.shard_id for s in first] == ["shard-00000", "shard-00001", "shard-00002"]
    assert [len(s.keys) for s in first] == [5, 5, 3]


def test_shard_size_must_be_positive(image_dir: Path) -> None:
    with pytest.raises(ConfigError, match="shard_size"):
        list_input_shards(str(image_dir), 0)


def test_plan_is_reused_when_input_grows(image_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    planned = plan_shards(str(image_dir), str(output), 5)
    write_images(image_dir / "a", 1, size=41)  # overwrites img-000: no new key
    write_images(image_dir / "c", 3)  # new keys after the plan
    assert plan_shards(str(image_dir), str(output), 5) == planned
    # another size asked of a planned run (a rerun after the config changed): its shards
    # win, as its pinned models do, so the shards it committed stay its own
    assert plan_shards(str(image_dir), str(output), 7) == planned
