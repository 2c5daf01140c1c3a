"""Reference photos logged with a training run (train split only) and read back by the
review gallery: the writer's layout is the reader's."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from rxvision.config.schema import MlflowTracking
from rxvision.data.imaging import load_image
from rxvision.data.references import REFERENCE_PX, REFERENCES_INDEX, reference_file
from rxvision.data.splits import TRAIN
from rxvision.home import Home
from rxvision.serving.review_models import RunReferences
from rxvision.train.config import DataLoadingConfig
from rxvision.train.data_source import resolve_data
from rxvision.train.datamodule import RxVisionDataModule
from rxvision.train.tracking import RunTracker

pytestmark = pytest.mark.unit


class ArtifactStore:
    """The two MlflowClient calls involved, on a folder: ``log_artifacts`` and
    ``download_artifacts`` (counted: each reference is downloaded once)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.downloads: list[str] = []

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        shutil.copytree(local_dir, self.root / run_id / artifact_path, dirs_exist_ok=True)

    def list_artifacts(self, run_id: str, path: str) -> list[SimpleNamespace]:
        folder = self.root / run_id / path
        found = sorted(folder.iterdir()) if folder.is_dir() else []
        return [SimpleNamespace(path=f"{path}/{p.name}") for p in found]

    def download_artifacts(self, run_id: str, path: str, dst_path: str) -> str:
        self.downloads.append(path)
        source = self.root / run_id / path
        if not source.is_file():
            raise OSError(f"no artifact {path}")
        return shutil.copy(source, Path(dst_path) / source.name)


@pytest.fixture
def datamodule(image_folder: Path) -> RxVisionDataModule:
    config = DataLoadingConfig(img_size=16, val_fraction=0.25, test_fraction=0.25, num_workers=0)
    return RxVisionDataModule(resolve_data(image_folder), config, batch_size=4)


def test_each_class_gets_its_first_training_image_as_the_model_sees_it(
    datamodule: RxVisionDataModule, image_folder: Path
) -> None:
    references = datamodule.references()
    assert sorted(references) == datamodule.classes
    paths = datamodule.source.row_paths()
    for name, (pixels, source) in references.items():
        row = paths.index(source["path"])
        assert datamodule.assignment.splits[row] == TRAIN  # never a val or test image
        first = min(
            i
            for i in datamodule.train_indices
            if datamodule.classes[datamodule.source.labels[i]] == name
        )
        assert row == first
        assert source["sha256"] == datamodule.assignment.keys[row].sha256
        expected = load_image(image_folder / source["path"], datamodule.spec)
        assert np.array_equal(pixels, expected)  # the model's input, not normalised


def test_logged_references_are_read_back_once_each(
    datamodule: RxVisionDataModule, tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    tracker = RunTracker(MlflowTracking(tracking_uri="http://127.0.0.1:9"), Home(tmp_path / "h"))
    tracker.client, tracker.run_id = store, "run-1"  # type: ignore[assignment]
    tracker.log_references(datamodule.references())

    index = json.loads((store.root / "run-1" / REFERENCES_INDEX).read_text())
    assert index["split"] == "train" and sorted(index["classes"]) == datamodule.classes
    reader = RunReferences(store, "run-1", tmp_path / "cache")
    for name in datamodule.classes:
        photo = reader.get(name)
        assert photo is not None
        assert Image.open(io.BytesIO(photo)).format == "JPEG"
        assert index["classes"][name]["file"] == reference_file(name)
    assert reader.get("not-a-class") is None
    assert reader.get(datamodule.classes[0]) is not None
    assert store.downloads.count(REFERENCES_INDEX) == 1
    assert len(store.downloads) == 1 + len(datamodule.classes)  # one per class, no repeat

    # a second gallery of the same model reads them from the local cache
    again = RunReferences(store, "run-1", tmp_path / "cache")
    assert again.get(datamodule.classes[1]) == reader.get(datamodule.classes[1])
    assert len(store.downloads) == 1 + len(datamodule.classes)


def test_a_run_without_references_reads_as_none(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    reader = RunReferences(store, "old-run", tmp_path / "cache")
    assert reader.get("ndc-a") is None and reader.index() == {}
    assert store.downloads == []  # listed, not asked for: a missing artifact costs retries


def test_reference_names_are_safe_and_distinct() -> None:
    names = ["ndc 1/2", "ndc 1:2", "../../etc", ""]
    files = [reference_file(n) for n in names]
    assert len(set(files)) == len(files)
    assert all(f.endswith(".jpg") and "/" not in f and not f.startswith(".") for f in files)
    assert REFERENCE_PX <= 160
