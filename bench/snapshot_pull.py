"""Snapshot pull: 10,000 images as the project packs them (tar shards tracked by DVC)
vs the same images tracked file by file in DVC (``dvc add`` of the folder), both pulled
from the local S3 server into an empty cache, as a fresh training host would; the packed
snapshot fetched and read in place (each image's bytes from its shard, hash-checked: what
``data preprocess`` reads, no file per image); and the floor: the packed snapshot's
objects fetched by concurrent boto3 GETs, nothing else.

    .venv/bin/python bench/snapshot_pull.py [--images 10000] [--repeats 3]

Uses the S3 of ``eval "$(rxvision stack env)"`` when set, else starts a throwaway stack.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import harness
from stack import bench_stack

from rxvision.data.snapshot import SnapshotSettings, SnapshotStore
from rxvision.data.synth import generate_dataset
from rxvision.storage.s3 import S3Store


def dvc(cwd: Path, *args: str) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, check=True, capture_output=True
    )


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def file_by_file_repo(work: Path, data: Path, remote: str) -> Path:
    """A git+DVC repo tracking ``data`` as one DVC directory of files, pushed to S3."""
    repo = work / "dvc-files"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "bench@rxvision.local")
    git(repo, "config", "user.name", "bench")
    dvc(repo, "init", "-q")
    shutil.copytree(data, repo / "pills")
    dvc(repo, "remote", "add", "-d", "storage", remote)
    dvc(
        repo,
        "remote",
        "modify",
        "--local",
        "storage",
        "endpointurl",
        os.environ["AWS_ENDPOINT_URL_S3"],
    )
    dvc(repo, "add", "pills")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "pills")
    dvc(repo, "push", "-j", "8")
    return repo


def pull_file_by_file(repo: Path, work: Path, images: int) -> tuple[float, float]:
    """A fresh clone and ``dvc pull``, timed; counting and deleting the files are not
    (each case times its pull only, not the benchmark's cleanup)."""
    began = time.perf_counter()
    clone = work / f"clone-{uuid.uuid4().hex[:6]}"
    git(work, "clone", "-q", str(repo), str(clone))
    dvc(
        clone,
        "remote",
        "modify",
        "--local",
        "storage",
        "endpointurl",
        os.environ["AWS_ENDPOINT_URL_S3"],
    )
    dvc(clone, "pull", "-j", "8")
    seconds = time.perf_counter() - began
    count = sum(1 for p in (clone / "pills").rglob("*.jpg"))
    assert count == images, (count, images)
    shutil.rmtree(clone)
    return float(count), seconds


def pull_packed(
    settings: SnapshotSettings, tag: str, work: Path, images: int
) -> tuple[float, float]:
    """``SnapshotStore.pull`` into an empty cache (what a new training host downloads),
    timed; the cleanup is not."""
    fresh = SnapshotSettings(
        **{**vars(settings), "cache_dir": work / f"cache-{uuid.uuid4().hex[:6]}"}
    )
    out = work / f"pull-{uuid.uuid4().hex[:6]}"
    began = time.perf_counter()
    info = SnapshotStore(fresh).pull(tag, out)
    seconds = time.perf_counter() - began
    assert info.images == images
    shutil.rmtree(out)
    shutil.rmtree(fresh.cache_dir)
    return float(info.images), seconds


def fetch_in_place(
    settings: SnapshotSettings, tag: str, work: Path, images: int
) -> tuple[float, float]:
    """``SnapshotStore.fetched`` into an empty cache, then every image's bytes read from
    its shard and checked against the index's sha256: what ``data preprocess`` consumes,
    with no file per image (not a pull: nothing is left on disk as an ImageFolder)."""
    fresh = SnapshotSettings(
        **{**vars(settings), "cache_dir": work / f"cache-{uuid.uuid4().hex[:6]}"}
    )
    began = time.perf_counter()
    with SnapshotStore(fresh).fetched(tag) as packed:
        located = packed.images()
        for image in located:
            if hashlib.sha256(image.read()).hexdigest() != image.sha256:
                raise AssertionError(f"{image.path}: hash differs")
    seconds = time.perf_counter() - began
    assert len(located) == images
    shutil.rmtree(fresh.cache_dir)
    return float(len(located)), seconds


def raw_parallel_get(prefix: str, work: Path, images: int, threads: int = 8) -> tuple[float, float]:
    """The floor of any pull: every object under the snapshot's DVC remote prefix (its
    shards, index and DVC's directory listing) downloaded concurrently with boto3 to
    local files; nothing else (no git, no DVC, no hashing, no unpacking)."""
    began = time.perf_counter()
    store = S3Store()
    bucket = prefix.removeprefix("s3://").split("/", 1)[0]
    keys = [f"s3://{bucket}/{key}" for key in store.list_keys(prefix)]
    out = work / f"raw-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda uri: store.download_file(uri, out / uuid.uuid4().hex), keys))
    seconds = time.perf_counter() - began
    shutil.rmtree(out)
    return float(images), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=64, help="JPEG size (px)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with bench_stack(), tempfile.TemporaryDirectory(prefix="rxv-bench-pull-") as tmp:
        work = Path(tmp)
        classes = 10
        data = work / "pills"
        generate_dataset(
            data, classes=classes, per_class=args.images // classes, size=args.size, seed=0
        )
        (data / "manifest.parquet").unlink(missing_ok=True)
        images = classes * (args.images // classes)
        run = uuid.uuid4().hex[:8]
        registry = work / "registry.git"
        settings = SnapshotSettings(
            registry_url=str(registry),
            remote_url=f"s3://rxvision-data/bench/{run}/packed",
            cache_dir=work / "cache-create",
        )
        SnapshotStore(settings).create(data, "bench-v1")
        repo = file_by_file_repo(work, data, f"s3://rxvision-data/bench/{run}/files")
        cases = [
            harness.Case("DVC file by file", lambda: pull_file_by_file(repo, work, images)),
            harness.Case(
                "packed shards (rxvision)", lambda: pull_packed(settings, "bench-v1", work, images)
            ),
            harness.Case(
                "packed shards fetched, read in place + sha256 (what preprocess reads)",
                lambda: fetch_in_place(settings, "bench-v1", work, images),
            ),
            harness.Case(
                "raw parallel S3 GET of the shard objects",
                lambda: raw_parallel_get(settings.remote_url, work, images),
            ),
        ]
        harness.measure(cases, repeats=args.repeats, warmup=0)
        rows = harness.summarize(cases, baseline=cases[0].name)
        harness.report(
            "snapshot_pull",
            rows,
            unit="images/s",
            baseline=cases[0].name,
            params={**vars(args), "images": images, "objects_packed": (images + 999) // 1000},
        )


if __name__ == "__main__":
    main()
