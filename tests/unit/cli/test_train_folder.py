"""``rxvision train --data DIR`` validates the folder first, as the nightly does.

Real photographs (the synthetic pills at 224 px, the nightly policy's minimum) plus a
truncated JPEG and a too-small image; tiny training into the home's local MLflow store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from rxvision.data.synth import generate_dataset
from rxvision.home import repo_root

pytestmark = pytest.mark.unit

TINY = [
    "model.architecture=mobilenet_v3_small",
    "data.img_size=32",
    "data.localize.enabled=false",
    "data.num_workers=0",
    "data.val_fraction=0.25",
    "training.batch_size=4",
    "training.epochs=1",
    "trainer.precision=32-true",
]
CPU_QUICK = repo_root() / "configs" / "cpu-quick.yaml"


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 products x 20 photos at 224 px, one truncated JPEG and one 64 px photo."""
    out = tmp_path_factory.mktemp("train-folder") / "ds"
    generate_dataset(out, classes=3, per_class=20, size=224, seed=21, workers=1)
    classes = sorted(p for p in out.iterdir() if p.is_dir())
    good = next(iter(sorted(classes[0].glob("*.jpg"))))
    (classes[0] / "zz-truncated.jpg").write_bytes(good.read_bytes()[:300])
    with Image.open(next(iter(sorted(classes[1].glob("*.jpg"))))) as photo:
        photo.convert("RGB").resize((64, 64)).save(classes[1] / "zz-small.jpg")
    return out


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.pop("RXVISION_CHECKPOINT_ROOT", None)
    return {**env, "RXVISION_HOME": str(home), "NO_ALBUMENTATIONS_UPDATE": "1"}


def _train(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rxvision.cli", "train", "--config", str(CPU_QUICK), *args],
        capture_output=True,
        text=True,
        cwd=repo_root(),
        env=_env(home),
        timeout=600,
    )


def _runs(home: Path) -> list[object]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments)) if experiments else []


def test_a_folder_with_bad_files_is_refused_before_any_run(
    bad_folder: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    report = tmp_path / "out" / "validation.json"
    proc = _train(home, "--data", str(bad_folder), "--report", str(report), *TINY)

    assert proc.returncode == 5, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = errors[0]
    assert str(report) in line
    assert "zz-truncated.jpg" in line and "zz-small.jpg" in line
    assert "2 bad files" in line and "--skip-invalid" in line
    rejected = {
        r["path"].rsplit("/", 1)[-1]: r["code"] for r in json.loads(report.read_text())["rejected"]
    }
    assert rejected == {"zz-truncated.jpg": "corrupt", "zz-small.jpg": "too_small"}
    assert _runs(home) == []  # refused before MLflow or training


def test_skip_invalid_trains_on_the_rest_and_records_the_left_out_files(
    bad_folder: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    summary = tmp_path / "out" / "summary.json"
    proc = _train(
        home, "--data", str(bad_folder), "--skip-invalid", "--summary", str(summary), *TINY
    )

    assert proc.returncode == 0, proc.stderr[-4000:]
    report = summary.with_name("summary.validation.json")  # beside the summary
    assert json.loads(report.read_text())["mode"] == "quarantine"
    result = json.loads(summary.read_text())
    client = MlflowClient(result["tracking_uri"])
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.params["data.skipped_files"] == "2"
    assert run.data.tags["data.skipped_files"] == "2"
    assert "2 invalid files left out" in run.data.params["data.source"]
    local = Path(
        client.download_artifacts(run.info.run_id, "data/skipped_files.json", str(tmp_path))
    )
    record = json.loads(local.read_text())
    assert record["count"] == 2
    assert {Path(f["path"]).name for f in record["files"]} == {"zz-truncated.jpg", "zz-small.jpg"}
    images = (
        int(run.data.params["data.train_images"])
        + int(run.data.params["data.val_images"])
        + int(run.data.params["data.test_images"])
    )
    assert images == 60  # every good photo, neither bad file
