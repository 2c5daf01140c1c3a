"""Fixtures of the serving integration tests: pills in S3, registered models."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from serving_helpers import register, upload_folder

from rxvision.data.synth import generate_dataset, read_manifest
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Config, S3Store


@pytest.fixture(scope="module")
def pills(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 products x 6 photos at 48 px, plus a truncated JPEG and an empty file."""
    out = tmp_path_factory.mktemp("score-pills") / "ds"
    generate_dataset(out, classes=3, per_class=6, size=48, seed=3, workers=1)
    return out


@pytest.fixture(scope="module")
def classes(pills: Path) -> list[str]:
    return sorted(set(read_manifest(pills).column("label").to_pylist()))


@pytest.fixture(scope="module")
def input_uri(stack: LocalStack, pills: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The pills and two bad files under s3://rxvision-data/<unique>/incoming."""
    env = stack.client_env()
    store = S3Store(
        S3Config(
            endpoint_url=env["AWS_ENDPOINT_URL_S3"],
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=env["AWS_SECRET_ACCESS_KEY"],
        )
    )
    staging = tmp_path_factory.mktemp("incoming")
    for path in pills.glob("*/*.jpg"):
        target = staging / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    good = next(iter(pills.glob("*/*.jpg"))).read_bytes()
    (staging / "zz-bad").mkdir()
    (staging / "zz-bad" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (staging / "zz-bad" / "empty.jpg").write_bytes(b"")
    uri = f"s3://rxvision-data/it-score-{uuid.uuid4().hex[:6]}/incoming"
    upload_folder(store, staging, uri)
    return uri


@pytest.fixture(scope="module")
def models(stack: LocalStack, classes: list[str]) -> dict[str, str]:
    """A registered model: a good version (champion and fallback) and one whose logits
    are NaN. Returns {"name", "good", "nan"} (versions)."""
    uri = stack.client_env()["MLFLOW_TRACKING_URI"]
    name = f"it-score-{uuid.uuid4().hex[:6]}"
    good = register(stack.home, uri, name, classes, seed=0)
    broken = register(stack.home, uri, name, classes, seed=1, nan=True)
    client = MlflowClient(uri)
    client.set_registered_model_alias(name, "champion", good)
    client.set_registered_model_alias(name, "fallback", good)
    return {"name": name, "good": good, "nan": broken}
