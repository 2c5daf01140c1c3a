"""`rxvision data` as a user runs it against the stack: synth, validate, snapshot, list,
pull, preprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from rxvision.stack.local_stack import LocalStack

pytestmark = pytest.mark.integration


def rx(args: list[str], env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "rxvision.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def env(stack: LocalStack, tmp_path: Path) -> dict[str, str]:
    import os

    return {
        **os.environ,
        **stack.client_env(),
        # A registry and DVC remote of this test's own, on the shared stack.
        "RXVISION_DATA_REGISTRY": str(tmp_path / "registry.git"),
    }


def test_synth_validate_snapshot_pull_preprocess(env: dict[str, str], tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    rx(
        [
            "data",
            "synth",
            "--out",
            str(ds),
            "--classes",
            "3",
            "--per-class",
            "8",
            "--size",
            "224",
            "--seed",
            "3",
            "--workers",
            "1",
        ],
        env,
    )
    report = tmp_path / "report.json"
    rx(["data", "validate", str(ds), "--report", str(report), "--workers", "1"], env)
    assert json.loads(report.read_text())["rejected"] == []

    first = rx(["data", "snapshot", str(ds), "--tag", "cli-v1"], env)
    assert "created" in first.stderr + first.stdout
    again = rx(["data", "snapshot", str(ds), "--tag", "cli-v1"], env)
    assert "unchanged" in again.stderr + again.stdout

    listed = json.loads(rx(["data", "list", "--json"], env).stdout)
    assert [s["tag"] for s in listed] == ["cli-v1"] and listed[0]["images"] == 24

    out = tmp_path / "pulled"
    rx(["data", "pull", "--rev", "latest", "--out", str(out)], env)
    assert len(list(out.rglob("*.jpg"))) == 24

    built = rx(["data", "preprocess", "--rev", "cli-v1", "--img-size", "48"], env)
    assert "built" in built.stderr + built.stdout
    hit = rx(["data", "preprocess", "--rev", "cli-v1", "--img-size", "48"], env)
    assert "cache hit" in hit.stderr + hit.stdout
    # by default the features follow the nightly's training config (cpu-quick: 96 px crops)
    default = rx(["data", "preprocess", "--rev", "cli-v1"], env)
    said = " ".join((default.stderr + default.stdout).split())
    assert "96 px bilinear pill crop (v2)" in said and "built" in said
    # a night later, one new photo per product: the 24 unchanged photos' rows are reused,
    # copied (their one shard holds under half of the 1,000-row shard size: it merges
    # with the new photos' rows instead of being named beside a small new shard)
    for product in sorted(p for p in ds.iterdir() if p.is_dir()):
        with Image.open(sorted(product.glob("*.jpg"))[0]) as photo:
            photo.rotate(90).save(product / "new.jpg", quality=90)
    rx(["data", "snapshot", str(ds), "--tag", "cli-v2"], env)
    cold = rx(["data", "preprocess", "--rev", "cli-v2", "--img-size", "48", "--no-reuse"], env)
    assert "built (0 rows reused, 0 of them read in place): 27 images" in " ".join(
        (cold.stderr + cold.stdout).split()
    )
    warm = rx(["data", "preprocess", "--rev", "cli-v2"], env)
    said = " ".join((warm.stderr + warm.stdout).split())
    assert "built (24 rows reused, 0 of them read in place): 27 images" in said


def test_defective_set_fails_validation_and_quarantine_snapshot_lists_them(
    env: dict[str, str], tmp_path: Path
) -> None:
    ds = tmp_path / "bad"
    rx(
        [
            "data",
            "synth",
            "--out",
            str(ds),
            "--classes",
            "3",
            "--per-class",
            "8",
            "--size",
            "224",
            "--seed",
            "4",
            "--defects",
            "--workers",
            "1",
        ],
        env,
    )
    report = tmp_path / "report.json"
    failed = rx(
        ["data", "validate", str(ds), "--report", str(report), "--workers", "1"], env, ok=False
    )
    assert failed.returncode != 0
    rejected = json.loads(report.read_text())["rejected"]
    assert {r["code"] for r in rejected} >= {"corrupt", "empty_file", "too_small"}
    snap = rx(["data", "snapshot", str(ds), "--tag", "q1", "--exclude-from", str(report)], env)
    assert f"left out {len(rejected)} rejected files" in snap.stderr + snap.stdout
    # the same files snapshotted as they are, validated in place: judged as the folder was
    rx(["data", "snapshot", str(ds), "--tag", "as-is"], env)
    in_place = tmp_path / "in-place.json"
    failed = rx(["data", "validate", "--rev", "as-is", "--report", str(in_place)], env, ok=False)
    assert failed.returncode == 5, failed.stdout + failed.stderr
    found = json.loads(in_place.read_text())
    assert found["dataset"] == "snapshot as-is"
    assert {(r["path"], r["code"]) for r in found["rejected"]} == {
        (r["path"], r["code"]) for r in rejected
    }
    # without the rejected files every image passes; two classes are short of them now
    clean = tmp_path / "clean.json"
    short = rx(["data", "validate", "--rev", "q1", "--report", str(clean)], env, ok=False)
    assert short.returncode == 5
    judged = json.loads(clean.read_text())
    assert judged["rejected"] == [] and judged["dataset"] == "snapshot q1"
    assert [c["name"] for c in judged["criteria"] if not c["passed"]] == ["class_balance"]
    both = rx(["data", "validate", str(ds), "--rev", "q1", "--report", str(clean)], env, ok=False)
    assert both.returncode == 2 and "not both" in both.stderr


def test_moved_tag_is_refused_with_exit_code(env: dict[str, str], tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    rx(
        [
            "data",
            "synth",
            "--out",
            str(ds),
            "--classes",
            "2",
            "--per-class",
            "4",
            "--size",
            "224",
            "--seed",
            "5",
            "--workers",
            "1",
        ],
        env,
    )
    rx(["data", "snapshot", str(ds), "--tag", "t1"], env)
    extra = next(ds.rglob("*.jpg"))
    extra.write_bytes(extra.read_bytes() + b"\0")
    proc = rx(["data", "snapshot", str(ds), "--tag", "t1"], env, ok=False)
    assert proc.returncode == 6
    assert "tags never move" in proc.stderr
