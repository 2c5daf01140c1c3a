"""The nightly DAG's steps as plain functions against the real stack: snapshot ->
validate (report in S3, pass or fail) -> preprocess (a cache hit the second time; the
next night's snapshot reuses what is unchanged), and
a challenger worse than the champion on the same test images ends as NotPromoted with
nothing registered."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import pytest
from PIL import Image

from rxvision.data.settings import load_data_config, snapshot_store
from rxvision.data.synth import generate_dataset
from rxvision.errors import DataValidationError
from rxvision.home import repo_root
from rxvision.pipeline import nightly
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store

pytestmark = pytest.mark.integration

CPU_QUICK = repo_root() / "configs" / "cpu-quick.yaml"


def _snapshot(tmp_path: Path, tag: str, *, small_image: bool = False) -> None:
    data = tmp_path / tag
    generate_dataset(data, classes=3, per_class=10, size=224, seed=3, lookalikes=False)
    if small_image:
        label = sorted(p.name for p in data.iterdir() if p.is_dir())[0]
        Image.new("RGB", (100, 100), "white").save(data / label / "tiny.jpg")
    snapshot_store(load_data_config()).create(data, tag)


def test_validate_then_preprocess_with_a_cache_hit(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    tag = f"it-nightly-{uuid.uuid4().hex[:6]}"
    _snapshot(tmp_path, tag)
    snap = nightly.resolve_snapshot(tag)
    assert snap["rev"] == tag and snap["images"] == 30 and len(snap["classes"]) == 3
    pulled = nightly.pull_snapshot(tag)
    assert Path(pulled["path"]).is_dir()
    report_uri = f"s3://rxvision-artifacts/validation/it/{tag}.json"
    result = nightly.validate_snapshot(tag, report_uri, workers=1)
    assert result["ok"] and result["images_ok"] == 30 and result["rejected"] == 0
    report = json.loads(S3Store().get_bytes(report_uri))
    assert report["snapshot_rev"] == tag and report["ok"] is True
    first = nightly.preprocess(tag, report_uri)
    assert first["cache_hit"] is False and first["images"] == 30
    assert first["features_uri"].startswith("s3://rxvision-data/features/")
    again = nightly.preprocess(tag, report_uri)
    assert again == {**first, "cache_hit": True, "reused": 0, "read_in_place": 0}
    # the next night: the same 30 photos and a new one per product; only the new are decoded
    tag2, data2 = f"{tag}-next", tmp_path / f"{tag}-next"
    shutil.copytree(tmp_path / tag, data2)
    for product in sorted(p for p in data2.iterdir() if p.is_dir()):
        with Image.open(sorted(product.glob("*.jpg"))[0]) as photo:
            photo.rotate(90).save(product / "new.jpg", quality=90)
    snapshot_store(load_data_config()).create(data2, tag2)
    report2 = f"s3://rxvision-artifacts/validation/it/{tag2}.json"
    assert nightly.validate_snapshot(tag2, report2, workers=1)["images_ok"] == 33
    # the 30 photos inspected last night are known by content: only the 3 new are decoded
    assert json.loads(S3Store().get_bytes(report2))["facts_reused"] == 30
    second = nightly.preprocess(tag2, report2)
    assert second["cache_hit"] is False and second["images"] == 33 and second["reused"] == 30
    # last night's one shard of 30 rows is under half a shard (1,000): its rows are
    # copied with the 3 new into one shard, not named beside a new small one
    assert second["read_in_place"] == 0
    # the worker's disk: both nights pulled (2 kept by default); bounded to one, going back
    # to the first night deletes the second night's folder, never the one in use
    first_dir, second_dir = Path(pulled["path"]), Path(nightly.pull_snapshot(tag2)["path"])
    assert first_dir.is_dir() and second_dir.is_dir()
    one = load_data_config()
    one = one.model_copy(
        update={"registry": one.registry.model_copy(update={"local_snapshots": 1})}
    )
    assert nightly.pull_snapshot(tag, one)["path"] == str(first_dir)
    assert first_dir.is_dir() and not second_dir.exists()


def test_a_failing_snapshot_keeps_its_report_and_names_it(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    tag = f"it-bad-{uuid.uuid4().hex[:6]}"
    _snapshot(tmp_path, tag, small_image=True)
    report_uri = f"s3://rxvision-artifacts/validation/it/{tag}.json"
    with pytest.raises(DataValidationError, match=report_uri.replace(".", r"\.")):
        nightly.validate_snapshot(tag, report_uri, workers=1)
    report = json.loads(S3Store().get_bytes(report_uri))
    assert report["ok"] is False
    assert any(r["path"].endswith("tiny.jpg") for r in report["rejected"])


def _train(tag: str, run_id: str, *overrides: str) -> str:
    """Train cpu-quick on the nightly's feature set of ``tag``; the summary's S3 URI."""
    from rxvision.train.config import load_train_config
    from rxvision.train.run import train

    snap = nightly.resolve_snapshot(tag)
    report_uri = f"s3://rxvision-artifacts/validation/it/{tag}.json"
    nightly.validate_snapshot(tag, report_uri, workers=1)
    features = nightly.preprocess(tag, report_uri)
    cfg = load_train_config(CPU_QUICK, ["data.num_workers=0", *overrides])
    result = train(
        cfg,
        features["features_uri"],
        run_id=run_id,
        snapshot_rev=tag,
        snapshot_hash=snap["content_hash"],
        progress_bar=False,
    )
    uri = f"s3://rxvision-artifacts/runs/{run_id}/train_summary.json"
    S3Store().put_bytes(uri, json.dumps(result.summary()).encode())
    return uri


def test_a_challenger_worse_than_the_champion_is_refused_on_the_same_images(
    stack: LocalStack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The champion is re-scored every night, on the challenger's test images, through
    the scoring path: a worse challenger is refused with both numbers, nothing is
    registered and the champion stays."""
    from mlflow.tracking import MlflowClient

    from rxvision.registry.config import load_registry_config
    from rxvision.registry.gates import GateConfig
    from rxvision.registry.model_registry import ModelRegistry

    suffix = uuid.uuid4().hex[:6]
    old, new = tmp_path / "old", tmp_path / "new"
    generate_dataset(old, classes=4, per_class=36, size=240, seed=21, lookalikes=False)
    shutil.copytree(old, new)
    # the next snapshot: the same photos plus new ones (another seed: other poses)
    extra = tmp_path / "extra"
    generate_dataset(extra, classes=4, per_class=8, size=240, seed=22, lookalikes=False)
    for folder in extra.iterdir():
        if folder.is_dir():
            for photo in folder.iterdir():
                shutil.copy(photo, new / folder.name / f"new-{photo.name}")
    store = snapshot_store(load_data_config())
    store.create(old, f"it-champ-{suffix}")
    store.create(new, f"it-chall-{suffix}")

    # the champion: trained for real, registered with lenient gates (every floor off: this
    # test is about the comparison), promoted. 8 epochs reached top-1 0.54-0.58 on a slow
    # AVX2-only machine, no better than the challenger below: 20 epochs.
    champion_summary = _train(f"it-champ-{suffix}", f"it-champ-{suffix}", "training.epochs=20")
    lenient = load_registry_config().model_copy(
        update={"gates": GateConfig(min_top1=0, min_class_recall=0, max_ece=1, min_pair_recall=0)}
    )
    registry = ModelRegistry(lenient)
    champion = registry.register_summary(nightly.read_train_summary(champion_summary))
    registry.promote(champion)

    # the challenger: two optimizer steps at a negligible learning rate, measurably worse
    summary_uri = _train(
        f"it-chall-{suffix}",
        f"it-chall-{suffix}",
        "training.max_steps=2",
        "training.optimizer.lr=1e-7",
    )
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    before = len(client.search_model_versions(f"name='{registry.name}'"))
    snapshot = nightly.resolve_snapshot(f"it-chall-{suffix}")
    with pytest.raises(nightly.NotPromoted) as refused:
        nightly.register_and_promote(summary_uri, snapshot)
    message = str(refused.value)
    found = re.search(
        rf"max_top1_regression: [0-9.]+ .*FAILED \(champion v{champion} top-1 ([0-9.]+) "
        r"vs this model ([0-9.]+) on (\d+) test images",
        message,
    )
    assert found, message
    champion_top1, challenger_top1, images = map(float, found.groups())
    assert champion_top1 - challenger_top1 > 0.01 and images >= 10
    assert len(client.search_model_versions(f"name='{registry.name}'")) == before
    current = registry.get_alias("champion")
    assert current is not None and current.version == champion
