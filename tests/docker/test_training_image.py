"""The training images on the real Docker engine: the dev image runs `rxvision train`
as a non-root user from the mounted venv; the production Dockerfile's system stage
builds on the locally assembled base (no registry), and so do infra/compose's Airflow
and scoring images'."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from rxvision.home import repo_root

pytestmark = pytest.mark.docker

pytest.importorskip("airflow.providers.docker")
from rxvision_airflow.operators import dev_mounts  # noqa: E402


@pytest.fixture(scope="module")
def images() -> docker.DockerClient:
    proc = subprocess.run(
        [str(repo_root() / "scripts" / "build-images.sh"), "--production"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return docker.from_env()


def test_dev_image_runs_rxvision_train_as_non_root(images: docker.DockerClient) -> None:
    rxvision = str(Path(sys.prefix) / "bin" / "rxvision")
    out = images.containers.run(
        "rxvision-train:dev",
        entrypoint=["/bin/sh", "-c", f'id -u; "{rxvision}" train --help'],
        mounts=dev_mounts(),
        remove=True,
        network_mode="none",
    ).decode()
    uid, _, help_text = out.partition("\n")
    assert uid.strip() == "10001"
    assert "--config" in help_text and "--run-id" in help_text


def test_dev_image_cannot_write_the_mounted_checkout(images: docker.DockerClient) -> None:
    target = repo_root() / "should-not-exist.txt"
    with pytest.raises(docker.errors.ContainerError):
        images.containers.run(
            "rxvision-train:dev",
            entrypoint=["/bin/sh", "-c", f"touch {target}"],
            mounts=dev_mounts(),
            remove=True,
            network_mode="none",
        )
    assert not target.exists()


@pytest.mark.parametrize("image", ["train", "airflow", "score"])
def test_production_system_stage_builds_on_the_local_base(
    images: docker.DockerClient, image: str
) -> None:
    out = images.containers.run(
        f"rxvision-{image}:system",
        entrypoint=["/opt/venv/bin/python", "-c", "import sys; print(sys.version_info[:2])"],
        remove=True,
        network_mode="none",
    ).decode()
    assert out.strip() == "(3, 11)"
    config = images.images.get(f"rxvision-{image}:system").attrs["Config"]
    assert "RXVISION_HOME=/var/lib/rxvision" in config["Env"]


def test_a_retry_removes_the_container_its_killed_try_left_running(
    images: docker.DockerClient,
) -> None:
    from rxvision.pipeline.config import load_pipeline_config
    from rxvision_airflow.operators import RxVisionTrainOperator, container_name

    name = container_name("it-orphan")
    # what a SIGKILLed worker leaves: its training container, still running
    orphan = images.containers.run(
        "rxvision-train:dev", entrypoint=["sleep", "300"], name=name, detach=True
    )
    try:
        op = RxVisionTrainOperator(
            task_id="train",
            data_uri="s3://rxvision-data/features/abc",
            train_run_id="it-orphan",
            summary_uri="s3://rxvision-artifacts/runs/it-orphan/train_summary.json",
            pipeline_config=load_pipeline_config(overrides=["train_launcher.gpus=0"]),
        )
        op._prepare_container("docker", op.train_args(), {})
        assert op.container_name == name
        op.remove_orphan(op.container_name)
        with pytest.raises(docker.errors.NotFound):
            images.containers.get(orphan.id)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            orphan.remove(force=True)
