"""The registration step's held-out images: read from the runs' split records in a real
MLflow store; the champion is compared only on test images it never trained on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from rxvision.data.splits import SPLITS_ARTIFACT
from rxvision.errors import RxVisionError
from rxvision.pipeline.held_out import held_out_images

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


def test_the_comparison_leaves_out_what_the_champion_trained_on(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    for path in ("a/1.jpg", "a/2.jpg", "b/3.jpg", "b/4.jpg"):
        (snapshot / path).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / path).write_bytes(path.encode())
    new_run = _run_with_split_record(
        [
            _row("test", "s1", "a/1.jpg"),
            _row("test", "s3", "b/3.jpg"),
            _row("train", "s2", "a/2.jpg"),
            _row("val", "s4", "b/4.jpg"),
        ]
    )
    # the champion trained on b/3.jpg's content (under another name)
    champion_run = _run_with_split_record([_row("train", "s3", "b/old.jpg")])

    held = held_out_images(
        {"mlflow_run_id": new_run}, snapshot, tmp_path / "out", champion_run_id=champion_run
    )

    assert (held.test_images, held.compare_images, held.excluded) == (2, 1, 1)
    assert held.champion_record
    compared = sorted(p.resolve() for p in held.compare_dir.rglob("*.jpg"))
    assert compared == [(snapshot / "a/1.jpg").resolve()]
    assert [p.resolve() for p in held.train_dir.rglob("*.jpg")] == [
        (snapshot / "a/2.jpg").resolve()
    ]
    assert "1 left out" in held.describe()


def test_a_champion_without_a_split_record_is_compared_on_every_test_image(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(b"x")
    new_run = _run_with_split_record([_row("test", "s1", "a/1.jpg")])
    with mlflow.start_run() as bare:
        pass

    held = held_out_images(
        {"mlflow_run_id": new_run}, tmp_path, tmp_path / "out", champion_run_id=bare.info.run_id
    )

    assert held.compare_images == 1 and not held.champion_record
    assert "no split record" in held.describe()


def test_a_run_without_a_split_record_cannot_be_judged(tmp_path: Path) -> None:
    with mlflow.start_run() as bare:
        pass
    with pytest.raises(RxVisionError, match=f"training run {bare.info.run_id} logged no"):
        held_out_images(
            {"mlflow_run_id": bare.info.run_id}, tmp_path, tmp_path / "out", champion_run_id=None
        )
