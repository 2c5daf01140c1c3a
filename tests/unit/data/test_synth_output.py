"""The synthetic dataset on disk: atomic writes, refusing a folder synth did not write,
overwriting an earlier synthetic set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rxvision.data.synth import generate_dataset, output
from rxvision.errors import ConfigError

pytestmark = pytest.mark.unit


def test_no_partial_file_when_a_write_is_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(output.os, "replace", interrupted)
    target = tmp_path / "img.jpg"
    with pytest.raises(KeyboardInterrupt):
        output.write_atomic(target, b"\xff\xd8\xff" + b"\x00" * 100)
    assert os.listdir(tmp_path) == []


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate_dataset(tmp_path, classes=2, per_class=1, size=64, seed=0)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_dataset(tmp_path, classes=2, per_class=1, size=64, seed=0, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_overwrite_replaces_an_earlier_synthetic_set(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    generate_dataset(out, classes=3, per_class=2, size=64, seed=0, workers=1)
    result = generate_dataset(
        out, classes=2, per_class=2, size=64, seed=0, workers=1, overwrite=True
    )
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted(result.labels)
