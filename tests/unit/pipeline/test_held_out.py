"""The registration step's held-out images: read from the runs' split records in a real
MLflow store; the champion is compared only on test images it never trained on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from rxvision.data.packed_snapshot import INDEX_FILE, SHARDS_DIR, PackedSnapshot
from rxvision.data.snapshot_shards import assign_shards, index_directory, write_index, write_shards
from rxvision.data.splits import SPLITS_ARTIFACT
from rxvision.errors import RxVisionError
from rxvision.pipeline.held_out import held_out_images
from rxvision.serving.image_folder import image_folder_files

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def own_mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A store of this test's own: other tests in the process move MLflow's global
    tracking URI and active experiment."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.end_run()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("held-out", (tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    yield
    mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def _run_with_split_record(rows: list[dict[str, str]]) -> str:
    with mlflow.start_run() as run:
        mlflow.log_text(json.dumps({"rows": rows}), SPLITS_ARTIFACT)
    return str(run.info.run_id)


def _row(split: str, sha: str, path: str) -> dict[str, str]:
    return {"split": split, "sha256": sha, "class": path.split("/")[0], "path": path}


def _snapshot(tmp_path: Path, paths: list[str]) -> tuple[PackedSnapshot, dict[str, str]]:
    """A snapshot of one small file per path, packed in shards of 2 as snapshots are;
    returns it and each file's sha256."""
    folder = tmp_path / "photos"
    for path in paths:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(f"bytes of {path}".encode())
    entries, _ = assign_shards(index_directory(folder), 2)
    write_shards(folder, entries, tmp_path / "snapshot" / SHARDS_DIR)
    write_index(entries, tmp_path / "snapshot" / INDEX_FILE)
    return PackedSnapshot(tmp_path / "snapshot"), {e.path: e.sha256 for e in entries}


def test_the_comparison_leaves_out_what_the_champion_trained_on(tmp_path: Path) -> None:
    packed, sha = _snapshot(tmp_path, ["a/1.jpg", "a/2.jpg", "b/3.jpg", "b/4.jpg"])
    new_run = _run_with_split_record(
        [
            _row("test", sha["a/1.jpg"], "a/1.jpg"),
            _row("test", sha["b/3.jpg"], "b/3.jpg"),
            _row("train", sha["a/2.jpg"], "a/2.jpg"),
            _row("val", sha["b/4.jpg"], "b/4.jpg"),
        ]
    )
    # the champion trained on b/3.jpg's content (under another name)
    champion_run = _run_with_split_record([_row("train", sha["b/3.jpg"], "b/old.jpg")])

    held = held_out_images(
        {"mlflow_run_id": new_run}, packed, tmp_path / "out", champion_run_id=champion_run
    )

    assert (held.test_images, held.compare_images, held.excluded) == (2, 1, 1)
    assert held.champion_record
    assert _contents(held.test_dir) == [b"bytes of a/1.jpg", b"bytes of b/3.jpg"]
    assert _contents(held.compare_dir) == [b"bytes of a/1.jpg"]
    assert _contents(held.train_dir) == [b"bytes of a/2.jpg"]
    assert "1 left out" in held.describe()


def _contents(folder: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in folder.rglob("*.jpg"))


def test_only_the_training_images_calibration_takes_are_written(tmp_path: Path) -> None:
    sizes = {"a": 9, "b": 2, "c": 5}
    paths = [f"{c}/{i:02d}.jpg" for c, n in sizes.items() for i in range(n)]
    packed, sha = _snapshot(tmp_path, paths)
    run = _run_with_split_record([_row("train", sha[p], p) for p in paths])
    held = held_out_images(
        {"mlflow_run_id": run}, packed, tmp_path / "out", champion_run_id=None, calibration_images=8
    )
    # rounds of one per class: a, b, c twice (6), then a and c (8): 3 rounds' worth
    assert {c: len(list((held.train_dir / c).iterdir())) for c in sizes} == {"a": 3, "b": 2, "c": 3}
    # calibration draws the very images it would from every training image (the set:
    # calibration statistics do not depend on the order)
    every = tmp_path / "every"
    for i, path in enumerate(paths):
        (every / path.split("/")[0]).mkdir(parents=True, exist_ok=True)
        (every / path.split("/")[0] / f"{i:06d}-{Path(path).name}").write_bytes(b"")
    for limit in (1, 3, 8):
        whole = image_folder_files(every, ["c", "a", "b"], limit)
        held = held_out_images(
            {"mlflow_run_id": run},
            packed,
            tmp_path / f"out-{limit}",
            champion_run_id=None,
            calibration_images=limit,
        )
        written = image_folder_files(held.train_dir, ["c", "a", "b"], limit)
        assert sorted(_originals(written)) == sorted(_originals(whole))


def _originals(files: list[tuple[Path, int]]) -> list[str]:
    """Each file's snapshot path (``<class>/<name>``; written as ``<n>-<name>``)."""
    return [f"{path.parent.name}/{path.name.split('-', 1)[1]}" for path, _ in files]


def test_a_run_split_on_another_snapshot_is_refused(tmp_path: Path) -> None:
    packed, sha = _snapshot(tmp_path, ["a/1.jpg", "a/2.jpg"])
    run = _run_with_split_record([_row("test", "0" * 64, "a/1.jpg")])
    with pytest.raises(RxVisionError, match=r"a/1\.jpg.*trained on another snapshot"):
        held_out_images({"mlflow_run_id": run}, packed, tmp_path / "out", champion_run_id=None)
    gone = _run_with_split_record([_row("test", sha["a/1.jpg"], "a/9.jpg")])
    with pytest.raises(RxVisionError, match=r"a/9\.jpg.*not there"):
        held_out_images({"mlflow_run_id": gone}, packed, tmp_path / "out2", champion_run_id=None)


def test_a_champion_without_a_split_record_is_compared_on_every_test_image(
    tmp_path: Path,
) -> None:
    packed, sha = _snapshot(tmp_path, ["a/1.jpg"])
    new_run = _run_with_split_record([_row("test", sha["a/1.jpg"], "a/1.jpg")])
    with mlflow.start_run() as bare:
        pass

    held = held_out_images(
        {"mlflow_run_id": new_run}, packed, tmp_path / "out", champion_run_id=bare.info.run_id
    )

    assert held.compare_images == 1 and not held.champion_record
    assert "no split record" in held.describe()


def test_a_run_without_a_split_record_cannot_be_judged(tmp_path: Path) -> None:
    packed, _ = _snapshot(tmp_path, ["a/1.jpg"])
    with mlflow.start_run() as bare:
        pass
    with pytest.raises(RxVisionError, match=f"training run {bare.info.run_id} logged no"):
        held_out_images(
            {"mlflow_run_id": bare.info.run_id}, packed, tmp_path / "out", champion_run_id=None
        )
