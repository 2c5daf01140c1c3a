"""generate_dataset: layout, manifest, determinism, planted defects, arguments, CLI."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from rxvision.cli.data import app
from rxvision.data.synth import MANIFEST_NAME, generate_dataset, read_manifest
from rxvision.data.validation import DataValidator, ValidationPolicy
from rxvision.data.validation.criteria import CLASS_BALANCE
from rxvision.errors import ConfigError

pytestmark = pytest.mark.unit

LABEL = re.compile(r"^ndc-\d{5}-\d{4}-[a-z0-9]+-\d+mg$")


def file_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def test_layout_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = generate_dataset(out, classes=3, per_class=4, size=64, seed=1, workers=1)
    manifest = read_manifest(out).to_pylist()
    assert result.images == len(manifest) == 12
    assert {"path", "label", "sha256", "width", "height"} <= set(manifest[0])
    assert sorted({row["label"] for row in manifest}) == sorted(result.labels)
    for row in manifest:
        path = out / row["path"]
        assert row["path"] == f"{row['label']}/{path.name}"
        assert LABEL.match(row["label"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
        with Image.open(path) as image:
            assert (image.format, image.mode) == ("JPEG", "RGB")
            assert image.size == (row["width"], row["height"]) == (64, 64)
        assert row["defect"] is None
    assert not [p for p in out.rglob("*.tmp")]


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    one = generate_dataset(tmp_path / "a", classes=2, per_class=5, size=64, seed=7, workers=1)
    two = generate_dataset(tmp_path / "b", classes=2, per_class=5, size=64, seed=7, workers=2)
    assert (one.workers, two.workers) == (1, 2)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert read_manifest(tmp_path / "a").equals(read_manifest(tmp_path / "b"))


def test_another_seed_other_photos_of_the_same_products(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", classes=2, per_class=3, size=64, seed=1, workers=1)
    b = generate_dataset(tmp_path / "b", classes=2, per_class=3, size=64, seed=2, workers=1)
    assert a.labels == b.labels
    hashes_a = set(read_manifest(tmp_path / "a").column("sha256").to_pylist())
    hashes_b = set(read_manifest(tmp_path / "b").column("sha256").to_pylist())
    assert hashes_a.isdisjoint(hashes_b)


def test_defects_are_planted_and_listed(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = generate_dataset(out, classes=3, per_class=6, size=64, seed=3, defects=True, workers=1)
    planted = {d.code: d.path for d in result.defects}
    assert set(planted) == {"corrupt", "empty_file", "not_rgb", "too_small", "label_conflict"}
    manifest = {row["path"]: row for row in read_manifest(out).to_pylist()}
    assert {p: row["defect"] for p, row in manifest.items() if row["defect"]} == {
        path: code for code, path in planted.items()
    }
    assert (out / planted["empty_file"]).stat().st_size == 0
    duplicate = (out / planted["label_conflict"]).read_bytes()
    assert any(
        (out / p).read_bytes() == duplicate
        for p, row in manifest.items()
        if row["label"] != manifest[planted["label_conflict"]]["label"]
    )
    imbalanced = [row for row in manifest.values() if row["label"] == result.imbalanced_label]
    assert len(imbalanced) == 3  # half of per_class


def test_validator_finds_every_planted_defect(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = generate_dataset(out, classes=3, per_class=6, size=64, seed=4, defects=True, workers=1)
    policy = ValidationPolicy(min_width=64, min_height=64)
    report = DataValidator(policy, workers=2).validate_dataset(out)
    found = {issue.path: issue.code for issue in report.rejected}
    for defect in result.defects:
        assert found[defect.path] == defect.code
    # the duplicate's source is rejected too: the validator cannot tell which label is right
    assert list(found.values()).count("label_conflict") == 2
    assert not report.criterion(CLASS_BALANCE).passed


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"classes": 0}, "classes"),
        ({"per_class": 0}, "per_class"),
        ({"size": 8}, "size"),
        ({"seed": -1}, "seed"),
        ({"classes": 1, "defects": True}, "defects"),
    ],
)
def test_bad_arguments_name_the_value(tmp_path: Path, kwargs: dict[str, int], named: str) -> None:
    args = {"classes": 2, "per_class": 4, "size": 64, "seed": 0} | kwargs
    with pytest.raises(ConfigError, match=named):
        generate_dataset(tmp_path / "ds", **args)  # type: ignore[arg-type]


def test_cli_synth(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ["synth", "--out", str(out), "--classes", "2", "--per-class", "3", "--size", "64"]
    result = CliRunner().invoke(app, [*args, "--seed", "9", "--defects", "--per-class", "4"])
    assert result.exit_code == 0, result.output
    assert (out / MANIFEST_NAME).is_file()
    assert "planted empty_file" in result.output
