"""Planning: the input cut into deterministic shards, the plan saved and reused."""

from __future__ import annotations

import logging
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


def test_files_left_out_by_their_names_are_said_hidden_ones_are_not(
    image_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (image_dir / "b" / "IMG_0042.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (image_dir / "_tmp").mkdir()
    (image_dir / "_tmp" / "part.bin").write_bytes(b"scoring's own")
    with caplog.at_level(logging.WARNING, logger="rxvision.serving.plan"):
        shards = list_input_shards(str(image_dir), 5)
    assert sum(len(s.keys) for s in shards) == 13
    [said] = [r.getMessage() for r in caplog.records]
    assert f"{image_dir}: 2 file(s) left out" in said
    assert "(.heic: 1, .txt: 1)" in said or "(.txt: 1, .heic: 1)" in said
    assert "b/IMG_0042.HEIC" in said and "b/readme.txt" in said
    assert "hidden" not in said and "_tmp" not in said


def test_an_input_of_images_only_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_images(tmp_path / "in" / "a", 3)
    with caplog.at_level(logging.WARNING, logger="rxvision.serving.plan"):
        list_input_shards(str(tmp_path / "in"), 5)
    assert not caplog.records


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
