"""A training run's held-out images, as the registration step uses them.

The run's split record (``data/splits.json`` in MLflow) names every image's split. Its
test images judge the model (export parity, INT8 acceptance, the champion comparison),
its training images calibrate INT8, and the champion is compared only on the test images
it never trained on (rule 7: a held-out image is never one a compared model trained on).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rxvision.data.packed_snapshot import PackedSnapshot
from rxvision.data.source_image import SourceImage
from rxvision.data.splits import SPLITS_ARTIFACT, TEST, TRAIN
from rxvision.errors import RxVisionError

log = logging.getLogger(__name__)

T = TypeVar("T")


def read_split_record(mlflow_run_id: str) -> dict[str, Any] | None:
    """The split record (``data/splits.json``) a training run logged, or None."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        text = mlflow.artifacts.load_text(f"runs:/{mlflow_run_id}/{SPLITS_ARTIFACT}")
    except (MlflowException, OSError) as exc:
        log.warning("run %s has no split record (%s): %s", mlflow_run_id, SPLITS_ARTIFACT, exc)
        return None
    record: dict[str, Any] = json.loads(text)
    return record


@dataclass
class HeldOutImages:
    """A training run's held-out images as ImageFolders (written from the snapshot)."""

    test_dir: Path
    train_dir: Path
    compare_dir: Path
    test_images: int
    compare_images: int
    excluded: int
    champion_record: bool

    def comparator(self) -> Callable[[str], dict[str, float]]:
        """Score a model URI on the comparison images (the scoring path, eager fp32)."""
        from rxvision.serving.evaluation import evaluate_model

        def score(uri: str) -> dict[str, float]:
            if not self.compare_images:
                raise RxVisionError(
                    "no test image is left for the champion comparison: every test image "
                    "of this run was a training image of the champion"
                )
            return evaluate_model(uri, self.compare_dir, prefix="test_")

        return score

    def describe(self) -> str:
        """One line for the log."""
        text = (
            f"champion comparison on {self.compare_images} of {self.test_images} test images "
            f"({self.excluded} left out: the champion trained on them)"
        )
        if not self.champion_record:
            text += "; the champion has no split record, so none could be left out"
        return text


def held_out_images(
    summary: dict[str, Any],
    packed: PackedSnapshot,
    out: Path,
    *,
    champion_run_id: str | None,
    calibration_images: int = 64,
) -> HeldOutImages:
    """Write the run's held-out images from the snapshot's shards into ImageFolders under
    ``out``: ``test`` (all test images: export parity and INT8 acceptance), ``compare``
    (links to the test images the champion never trained on) and ``train``: only the
    training images that INT8 calibration takes (``calibration_images``, round-robin
    across classes), not every one. Each image is checked against the snapshot's index
    and the run's split record: a run that trained on another snapshot is refused."""
    run_id = summary.get("mlflow_run_id")
    record = read_split_record(str(run_id)) if run_id else None
    if record is None:
        raise RxVisionError(
            f"training run {run_id} logged no {SPLITS_ARTIFACT}: its test images are unknown, "
            "so it cannot be judged"
        )
    champion_trained: set[str] = set()
    champion_record = champion_run_id is None
    if champion_run_id is not None:
        found = read_split_record(champion_run_id)
        if found is not None:
            champion_record = True
            champion_trained = {r["sha256"] for r in found["rows"] if r["split"] == TRAIN}
    rows = record["rows"]
    train = [row for row in rows if row["split"] == TRAIN]
    calibration = {
        id(row) for row in first_rounds(train, calibration_images, key=lambda r: r["class"])
    }
    wanted = [row for row in rows if row["split"] == TEST or id(row) in calibration]
    images = _located(packed, {row["path"] for row in wanted})
    dirs = {name: out / name for name in ("test", "train", "compare")}
    counts = dict.fromkeys(dirs, 0)
    for row in wanted:
        data = _checked_bytes(images, row, str(run_id))
        name = "test" if row["split"] == TEST else "train"
        written = dirs[name] / row["class"] / f"{counts[name]:06d}-{Path(row['path']).name}"
        written.parent.mkdir(parents=True, exist_ok=True)
        written.write_bytes(data)
        counts[name] += 1
        if name == "test" and row["sha256"] not in champion_trained:
            link = (
                dirs["compare"] / row["class"] / f"{counts['compare']:06d}-{Path(row['path']).name}"
            )
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(written)
            counts["compare"] += 1
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    return HeldOutImages(
        test_dir=dirs["test"],
        train_dir=dirs["train"],
        compare_dir=dirs["compare"],
        test_images=counts["test"],
        compare_images=counts["compare"],
        excluded=counts["test"] - counts["compare"],
        champion_record=champion_record,
    )


def first_rounds(items: list[T], limit: int, key: Callable[[T], str]) -> list[T]:
    """The items a round-robin across groups (``key``) takes to gather ``limit`` of them,
    each group in its own order: a superset of any such sample, whatever the groups'
    order (``rxvision.serving.image_folder.image_folder_files`` draws its sample so)."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    rounds = 0
    while rounds < max((len(g) for g in groups.values()), default=0):
        if sum(min(len(g), rounds) for g in groups.values()) >= limit:
            break
        rounds += 1
    return [item for group in groups.values() for item in group[:rounds]]


def _located(packed: PackedSnapshot, paths: set[str]) -> dict[str, SourceImage]:
    """The snapshot's images at ``paths``, located in their shards (only the shards that
    hold one are read)."""
    by_shard = packed.shards()
    located: dict[str, SourceImage] = {}
    for shard, expected in sorted(by_shard.items()):
        if any(path in paths for path in expected):
            located.update((i.path, i) for i in packed.shard_images(shard, expected))
    return located


def _checked_bytes(images: dict[str, SourceImage], row: dict[str, Any], run_id: str) -> bytes:
    """The bytes of the split record's ``row`` from the snapshot, which must be the very
    image the run was split on (same path, same sha256)."""
    image = images.get(row["path"])
    if image is None or image.sha256 != row["sha256"]:
        held = "not there" if image is None else f"sha256 {image.sha256[:12]}"
        raise RxVisionError(
            f"training run {run_id} split {row['path']} (sha256 {row['sha256'][:12]}), but "
            f"this snapshot has {held}: the run was trained on another snapshot"
        )
    data = image.read()
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise RxVisionError(f"{image.name}: hash differs from the snapshot's index")
    return data
