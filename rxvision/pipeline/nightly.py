"""The nightly retraining steps, one function per Airflow task.

Each takes and returns plain JSON-ready values (they travel as XComs), reads its
endpoints from the standard variables (``AWS_ENDPOINT_URL_S3``, ``MLFLOW_TRACKING_URI``)
and is safe to retry: a second call finds the work done and returns the same answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from rxvision.config.schema import DataConfig
from rxvision.data.feature_store import PreprocessConfig, feature_key
from rxvision.data.imaging import ImageSpec
from rxvision.data.packed_snapshot import PackedSnapshot
from rxvision.data.pulled_snapshots import prune_pulled
from rxvision.data.settings import (
    feature_store,
    load_data_config,
    preprocess_config,
    snapshot_store,
    validation_policy,
)
from rxvision.data.validation import DataValidator
from rxvision.errors import DataValidationError, RxVisionError
from rxvision.home import Home
from rxvision.pipeline.facts_store import known_facts_uri, read_known_facts
from rxvision.pipeline.held_out import held_out_images
from rxvision.pipeline.task_gauges import send_gauges
from rxvision.storage.s3 import S3Store

log = logging.getLogger(__name__)

# INT8 calibration images, taken round-robin across classes from the training split
CALIBRATION_IMAGES = 64


# the gate that compares with the champion (run in register, not in evaluate)
CHAMPION_CRITERION = "max_top1_regression"


class NotPromoted(RxVisionError):
    """The production gates refused the new model: the champion stays."""

    exit_code = 7


def local_snapshot_dir(content_hash: str, home: Home | None = None) -> Path:
    """This worker's verified checkout of a snapshot: its shards and index, read in place
    by the tasks that run here (``SnapshotStore.checkout``; never unpacked)."""
    home = home or Home.from_env()
    # "-packed": a folder an earlier version unpacked under the bare hash is another layout
    return home.cache_dir / "snapshots" / f"{content_hash[:16]}-packed"


# --- tasks -------------------------------------------------------------------------------


def resolve_snapshot(rev: str | None = None, data_cfg: DataConfig | None = None) -> dict[str, Any]:
    """The snapshot to train on: ``rev`` when given, else the newest tag."""
    cfg = data_cfg or load_data_config()
    store = snapshot_store(cfg)
    tag = rev or store.latest()
    info = store.info(tag)
    log.info("snapshot %s: %d images, content %s", tag, info.images, info.content_hash[:12])
    return {
        "rev": tag,
        "content_hash": info.content_hash,
        "images": info.images,
        "classes": list(info.classes),
    }


def pull_snapshot(rev: str, data_cfg: DataConfig | None = None) -> dict[str, Any]:
    """Fetch snapshot ``rev`` into this worker's cache and verify every image's hash, to
    be read in place (a no-op when there): no file per image is written."""
    cfg = data_cfg or load_data_config()
    store = snapshot_store(cfg)
    info = store.info(rev)
    out = local_snapshot_dir(info.content_hash)
    out.parent.mkdir(parents=True, exist_ok=True)
    store.checkout(rev, out)
    log.info("snapshot %s verified at %s", rev, out)
    if cfg.registry.local_snapshots:
        # a new snapshot every night: the worker's disk keeps the few used last
        prune_pulled(out.parent, cfg.registry.local_snapshots, out)
    return {"rev": rev, "content_hash": info.content_hash, "path": str(out)}


def validate_snapshot(
    rev: str, report_uri: str, data_cfg: DataConfig | None = None, workers: int | None = None
) -> dict[str, Any]:
    """Validate the snapshot, store the JSON report at ``report_uri`` (always, pass or
    fail), and raise ``DataValidationError`` naming the report when it fails."""
    cfg = data_cfg or load_data_config()
    packed = PackedSnapshot(Path(pull_snapshot(rev, cfg)["path"]))
    policy = validation_policy(cfg)
    # the files of last night's snapshot were inspected then: their facts are kept by
    # sha256 beside the reports, and only new files are decoded
    digests = {entry.path: entry.sha256 for entry in packed.entries}
    facts_uri = known_facts_uri(report_uri, policy)
    s3 = S3Store()  # one client for the task (each costs ~0.13 s to make)
    known = read_known_facts(facts_uri, s3)
    result = DataValidator(policy, workers=workers).validate_packed(packed, known)
    report = result.to_report()
    report["snapshot_rev"] = rev
    report["facts_reused"] = known.reused
    s3.put_bytes(report_uri, json.dumps(report, indent=2).encode())
    if digests:
        s3.put_bytes(facts_uri, known.kept(digests.values()).to_parquet())
    s = result.summary
    log.info(
        "validation of %s: %d files (%d known by content), %d ok, %d rejected, "
        "%d quarantined; report %s",
        rev,
        s.files,
        known.reused,
        s.images_ok,
        s.rejected,
        s.quarantined,
        report_uri,
    )
    send_gauges(
        "validation",
        {
            "files": s.files,
            "images_ok": s.images_ok,
            "rejected": s.rejected,
            "quarantined": s.quarantined,
            "images_per_s": s.images_per_second,
        },
    )
    if not result.ok:
        try:
            result.raise_for_failure()
        except DataValidationError as exc:
            raise DataValidationError(f"{exc} (report: {report_uri})") from exc
    return {
        "report_uri": report_uri,
        "ok": result.ok,
        "files": s.files,
        "images_ok": s.images_ok,
        "rejected": s.rejected,
        "quarantined": s.quarantined,
        "images_per_second": round(s.images_per_second, 1),
    }


def training_spec() -> ImageSpec:
    """The preprocessing contract of the nightly's training config (``nightly.train_config``):
    the feature store must hold exactly the pixels that training and scoring decode."""
    from rxvision.pipeline.config import load_pipeline_config
    from rxvision.train.config import load_train_config

    path = load_pipeline_config().nightly.train_config_path()
    return load_train_config(path).data.image_spec


def preprocess(
    rev: str,
    report_uri: str,
    data_cfg: DataConfig | None = None,
    spec: ImageSpec | None = None,
) -> dict[str, Any]:
    """Materialise the snapshot's features (only the files validation accepted) under the
    training config's image spec; a feature set already in the store is a cache hit and
    nothing is computed."""
    cfg = data_cfg or load_data_config()
    spec = spec or training_spec()
    pre = PreprocessConfig.for_spec(spec, shard_size=preprocess_config(cfg).shard_size)
    store, features = snapshot_store(cfg), feature_store(cfg)
    info = store.info(rev)
    # the feature store's client: each one costs ~0.1 s to make
    report = json.loads(features.s3.get_bytes(report_uri))
    accepted = report.get("accepted")
    snapshot_hash = info.content_hash
    if accepted is not None and report.get("quarantined"):
        # a quarantined subset is another dataset: its features get their own key
        subset = hashlib.sha256("\n".join(sorted(accepted)).encode()).hexdigest()[:16]
        snapshot_hash = f"{info.content_hash}-q{subset}"
    key = feature_key(snapshot_hash, pre)
    found = features.manifest(key)
    if found is not None:
        log.info("feature store hit for %s: %s", rev, features.prefix(key))
        return {
            "features_uri": features.prefix(key),
            "cache_hit": True,
            "images": found.images,
            "reused": 0,
            "read_in_place": 0,
            "spec": spec.to_dict(),
        }
    # each image read from its shard with the index's sha256: a worker refuses bytes that
    # differ, and an image unchanged since the last set of this spec is copied, not decoded
    images = PackedSnapshot(Path(pull_snapshot(rev, cfg)["path"])).images()
    if accepted is not None:
        keep = set(accepted)
        images = [image for image in images if image.path in keep]
    manifest, built = features.materialize_images(
        images, snapshot_hash, pre, workers=cfg.feature_store.workers
    )
    reused = int(manifest.extra.get("reused", 0)) if built else 0
    in_place = int(manifest.extra.get("read_in_place", 0)) if built else 0
    log.info(
        "features of %s at %s (%d images, %d reused from %s, %d of them read in place)",
        rev,
        features.prefix(manifest.key),
        manifest.images,
        reused,
        manifest.extra.get("reused_from") or "no earlier set",
        in_place,
    )
    return {
        "features_uri": features.prefix(manifest.key),
        "cache_hit": not built,
        "images": manifest.images,
        "reused": reused,
        "read_in_place": in_place,
        "spec": spec.to_dict(),
    }


def read_train_summary(uri: str) -> dict[str, Any]:
    """The summary the train task wrote (``rxvision train --summary s3://...``)."""
    summary: dict[str, Any] = json.loads(S3Store().get_bytes(uri))
    if not summary.get("model_uri"):
        raise RxVisionError(f"{uri}: the training run logged no model (no model_uri)")
    return summary


def evaluate(summary_uri_: str) -> dict[str, Any]:
    """The trained model's test metrics and what the absolute gates say of them (the
    comparison with the champion runs in ``register_and_promote``, on the same images
    for both models)."""
    from rxvision.registry.config import load_registry_config
    from rxvision.registry.lineage import summary_pairs
    from rxvision.registry.model_registry import ModelRegistry

    summary = read_train_summary(summary_uri_)
    metrics = {k: float(v) for k, v in dict(summary.get("metrics") or {}).items()}
    registry = ModelRegistry(load_registry_config())
    report = registry.check_gates(
        str(summary["model_uri"]),
        metrics,
        classes=list(summary.get("classes") or []),
        pairs=summary_pairs(summary),
    )
    gates = [c for c in report.criteria if c.name != CHAMPION_CRITERION]
    for criterion in gates:
        log.info("gate %s", criterion.describe())
    extra = dict(summary.get("extra") or {})
    send_gauges(
        "train",
        {
            "val_top1": metrics.get("val_top1"),
            "test_top1": metrics.get("test_top1"),
            "test_ece": metrics.get("test_ece"),
            "samples_per_s": extra.get("samples_per_s"),
            "fit_seconds": extra.get("fit_seconds"),
        },
    )
    return {
        "run_id": summary.get("run_id"),
        "model_uri": summary["model_uri"],
        "val_top1": metrics.get("val_top1"),
        "test_top1": metrics.get("test_top1"),
        "test_images": metrics.get("test_images"),
        "samples_per_s": extra.get("samples_per_s"),
        "gates_pass": all(c.passed for c in gates),
        "gates": [c.describe() for c in gates],
    }


def register_and_promote(
    summary_uri_: str,
    snapshot: dict[str, Any],
    *,
    dag_run_id: str | None = None,
    container_image: str | None = None,
) -> dict[str, Any]:
    """Register the model behind the gates, export and parity-check its serving formats,
    then make it the champion (the old champion becomes the fallback).

    The gates read the run's test metrics; the champion and this model are both scored,
    through the scoring path, on this run's test images that the champion never trained
    on. Promotion is compare-and-set: it fails if the champion moved since the gate
    compared against it. Raises ``NotPromoted`` when the gates refuse the model (nothing
    registered). Retry-safe: the same training run maps to the same version, and
    promoting the champion again changes nothing.
    """
    from rxvision.registry.config import load_registry_config
    from rxvision.registry.gates import ModelQualityError
    from rxvision.registry.lineage import VersionMetadata
    from rxvision.registry.model_registry import ModelRegistry
    from rxvision.serving.version_export import export_version

    summary = read_train_summary(summary_uri_)
    registry = ModelRegistry(load_registry_config())
    meta = VersionMetadata(
        snapshot_rev=snapshot.get("rev"),
        snapshot_hash=snapshot.get("content_hash"),
        dag_run_id=dag_run_id,
        container_image=container_image,
    )
    packed = PackedSnapshot(Path(pull_snapshot(str(snapshot["rev"]))["path"]))
    champion = registry.get_alias(registry.config.aliases.champion)
    with tempfile.TemporaryDirectory(prefix="rxv-register-") as tmp:
        held_out = held_out_images(
            summary,
            packed,
            Path(tmp),
            champion_run_id=_run_of(champion),
            calibration_images=CALIBRATION_IMAGES,
        )
        log.info("%s", held_out.describe())
        try:
            version = registry.register_summary(summary, meta, comparator=held_out.comparator())
        except ModelQualityError as exc:
            raise NotPromoted(str(exc)) from exc
        uri = f"models:/{registry.name}/{version}"
        exports = export_version(
            uri,
            image_folder=held_out.test_dir,
            calibration_folder=held_out.train_dir,
            calibration_images=CALIBRATION_IMAGES,
            work_dir=Path(tmp),
        )
    judged = registry.last_report is not None
    if judged:
        change = registry.promote(version, expected_champion=registry.last_champion_version)
    else:  # a retry of a run registered before: its gates were judged then
        change = registry.promote(version)
    log.info("%s is the champion (fallback %s)", uri, change.fallback)
    metrics = summary.get("metrics") or {}
    return {
        "name": registry.name,
        "version": version,
        "model_uri": uri,
        "fallback_version": change.fallback,
        "changed": change.changed,
        "test_top1": metrics.get("test_top1"),
        "val_top1": metrics.get("val_top1"),
        "exports": [e.runtime for e in exports.exports],
    }


def _run_of(version: Any) -> str | None:
    return None if version is None else version.run_id


def champion_trained_on(content_hash: str) -> str | None:
    """The champion's version when it was trained on this very snapshot content."""
    from rxvision.registry.config import load_registry_config
    from rxvision.registry.lineage import TAG_PREFIX
    from rxvision.registry.model_registry import ModelRegistry

    registry = ModelRegistry(load_registry_config())
    champion = registry.get_alias(registry.config.aliases.champion)
    if champion and champion.tags.get(f"{TAG_PREFIX}dataset.content_hash") == content_hash:
        return champion.version
    return None
