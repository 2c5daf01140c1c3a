"""The scoring DAG's steps against the real MLflow server and SeaweedFS: pinned versions
survive a promotion between tries, a champion whose files cannot be downloaded is retried
before the fallback scores, ``latest.json`` moves forward only (S3 conditional writes),
and an S3 prefix with no image is an error."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from serving_helpers import register

from rxvision.pipeline import scoring
from rxvision.serving.errors import PrimaryUnavailable
from rxvision.serving.model_loading import artifact_location, resolve_model
from rxvision.serving.plan import read_plan
from rxvision.serving.predictions import PREDICTION_SCHEMA
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.shard import shard_uri
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.integration

FAST = {"shard_size": 8, "batch_size": 4, "download_workers": 4, "device": "cpu"}


def output_uri() -> str:
    return f"s3://rxvision-predictions/it-steps-{uuid.uuid4().hex[:8]}"


def rows_of(uri: str) -> list[dict]:  # type: ignore[type-arg]
    return list(pq.read_table(io.BytesIO(Storage().read(uri))).to_pylist())


@pytest.fixture(scope="module")
def pair(stack: LocalStack, classes: list[str]) -> dict[str, str]:
    """A registered model of its own (no other test has loaded, so cached, its files):
    version ``a`` is the champion, ``b`` (other weights) the fallback."""
    uri = stack.client_env()["MLFLOW_TRACKING_URI"]
    name = f"it-steps-{uuid.uuid4().hex[:6]}"
    a = register(stack.home, uri, name, classes, seed=0)
    b = register(stack.home, uri, name, classes, seed=2)
    client = MlflowClient(uri)
    client.set_registered_model_alias(name, "champion", a)
    client.set_registered_model_alias(name, "fallback", b)
    return {"name": name, "a": a, "b": b}


def config_for(name: str, tracking_uri: str) -> ScoringConfig:
    return ScoringConfig(
        **FAST,
        model_uri=f"models:/{name}@champion",
        tracking_uri=tracking_uri,
        runtimes=["eager"],
    )


def test_plan_pins_both_versions_and_a_rerun_keeps_them_after_a_promotion(
    stack_env: dict[str, str], pair: dict[str, str], input_uri: str
) -> None:
    name, a, b = pair["name"], pair["a"], pair["b"]
    tracking = stack_env["MLFLOW_TRACKING_URI"]
    config = config_for(name, tracking)
    out = output_uri()
    first = scoring.plan(input_uri, out, config)
    assert len(first) == 3  # 20 objects in shards of 8
    assert {(i["model_uri"], i["fallback_uri"]) for i in first} == {
        (f"models:/{name}/{a}", f"models:/{name}/{b}")
    }
    saved = read_plan(out)
    assert saved is not None
    assert saved["models"] == {"primary": f"models:/{name}/{a}", "fallback": f"models:/{name}/{b}"}

    client = MlflowClient(tracking)
    client.set_registered_model_alias(name, "champion", b)  # a promotion between tries
    client.set_registered_model_alias(name, "fallback", a)
    try:
        again = scoring.plan(input_uri, out, config)
        assert again == first  # the rerun of the DAG run: the same versions on every shard
        fresh = scoring.plan(input_uri, output_uri(), config)  # the next DAG run
        assert fresh[0]["model_uri"] == f"models:/{name}/{b}"
        assert fresh[0]["fallback_uri"] == f"models:/{name}/{a}"
    finally:
        client.set_registered_model_alias(name, "champion", a)
        client.set_registered_model_alias(name, "fallback", b)


@contextmanager
def files_unavailable(
    stack: LocalStack, tracking_uri: str, name: str, version: str
) -> Iterator[int]:
    """The version's model files taken out of the artifact store (SeaweedFS, behind the
    MLflow server's artifact proxy) for the block, then put back: its download fails as
    it does when the store loses or cannot serve them. Yields how many objects."""
    client = MlflowClient(tracking_uri)
    location = artifact_location(resolve_model(f"models:/{name}/{version}", client), client)
    assert location.startswith("mlflow-artifacts:/"), location
    bucket = stack.config.mlflow.artifacts_bucket
    prefix = f"s3://{bucket}/{location.removeprefix('mlflow-artifacts:').lstrip('/')}/"
    store = S3Store()
    keys = [f"s3://{bucket}/{key}" for key in store.list_keys(prefix)]
    assert keys, f"no model files under {prefix}"
    aside = f"s3://{bucket}/it-aside-{uuid.uuid4().hex[:6]}/"
    moved = [(key, aside + key.removeprefix(prefix)) for key in keys]
    for key, parked in moved:
        store.put_bytes(parked, store.get_bytes(key))
        store.client.delete_object(Bucket=bucket, Key=key.removeprefix(f"s3://{bucket}/"))
    try:
        yield len(moved)
    finally:
        for key, parked in moved:
            store.put_bytes(key, store.get_bytes(parked))


def test_a_champion_that_fails_to_load_is_retried_and_ends_with_its_predictions(
    stack: LocalStack, stack_env: dict[str, str], pair: dict[str, str], input_uri: str
) -> None:
    name, a, b = pair["name"], pair["a"], pair["b"]
    tracking = stack_env["MLFLOW_TRACKING_URI"]
    config = config_for(name, tracking)
    out = output_uri()
    items = scoring.plan(input_uri, out, config)
    first, other = items[0], items[1]
    with files_unavailable(stack, tracking, name, a):
        # try 1 of 3: the champion's download fails; the try fails, nothing committed
        with pytest.raises(PrimaryUnavailable, match=f"models:/{name}/{a}"):
            scoring.score(first, config, last_try=False)
        assert not Storage().exists(shard_uri(out, first["shard"]["shard_id"]))
        # a last try that still cannot load it: the fallback, and every row says why
        last = scoring.score(other, config, last_try=True)
        fallback_rows = [r for r in rows_of(last["uri"]) if not r["error"]]
        assert fallback_rows
        assert {(r["scored_by"], r["model_version"]) for r in fallback_rows} == {
            ("fallback", f"{name}/{b}")
        }
        assert all(r["fallback_reason"].startswith("primary_load_failed: ") for r in fallback_rows)
    # try 2: the store serves the files again; the shard gets the champion's predictions
    retried = scoring.score(first, config, last_try=False)
    assert retried["skipped"] is False and retried["rows"] == 8
    rows = rows_of(retried["uri"])
    assert {(r["scored_by"], r["model_version"], r["fallback_reason"]) for r in rows} == {
        ("primary", f"{name}/{a}", None)
    }


def committed_run(input_uri: str, output: str) -> list[dict]:  # type: ignore[type-arg]
    """A planned run whose shards are committed (empty Parquet: publish only checks);
    versions given pinned, so the plan asks MLflow nothing."""
    config = ScoringConfig(**FAST, model_uri="models:/any/1", fallback_uri="models:/any/2")
    items = scoring.plan(input_uri, output, config)
    buffer = io.BytesIO()
    pq.write_table(PREDICTION_SCHEMA.empty_table(), buffer)
    for item in items:
        Storage().write(shard_uri(output, item["shard"]["shard_id"]), buffer.getvalue())
    return items


def test_latest_moves_forward_only_with_conditional_writes_on_seaweedfs(
    stack_env: dict[str, str], input_uri: str
) -> None:
    storage = Storage()
    # the store enforces the conditions (else the fallback would be a lock: see publish)
    probe = f"s3://rxvision-predictions/it-cas-{uuid.uuid4().hex[:6]}/x.json"
    assert storage.write_if(probe, b"1", None) is True
    assert storage.write_if(probe, b"2", None) is False  # If-None-Match: it exists
    found = storage.read_tagged(probe)
    assert found is not None and found[0] == b"1"
    assert storage.write_if(probe, b"3", '"0123456789abcdef0123456789abcdef"') is False
    assert storage.write_if(probe, b"4", found[1]) is True
    assert storage.write_if(probe, b"5", found[1]) is False  # stale ETag
    assert storage.read(probe) == b"4"

    latest = f"s3://rxvision-predictions/it-latest-{uuid.uuid4().hex[:6]}/latest.json"
    old_out, new_out = output_uri(), output_uri()
    old = committed_run(input_uri, old_out)
    new = committed_run(input_uri, new_out)
    assert scoring.publish(new, latest, dag_run_id="new")["latest_moved"] is True
    refused = scoring.publish(old, latest, dag_run_id="old")  # a cleared old run
    assert refused["latest_moved"] is False and new_out in refused["latest_reason"]
    pointer = json.loads(storage.read(latest))
    assert (pointer["uri"], pointer["dag_run_id"]) == (new_out, "new")
    assert pointer["planned_at"] == read_plan(new_out)["planned_at"]  # type: ignore[index]
    assert storage.exists(f"{old_out}/_SUCCESS")  # its own output is final all the same


def test_an_s3_prefix_without_images_is_an_error_unless_allowed(
    stack_env: dict[str, str], tmp_path: object
) -> None:
    prefix = f"s3://rxvision-data/it-empty-{uuid.uuid4().hex[:6]}/incoming"
    Storage().write(f"{prefix}/readme.txt", b"no images here")
    out = output_uri()
    env = {**os.environ, **stack_env, "NO_ALBUMENTATIONS_UPDATE": "1"}
    argv = [sys.executable, "-m", "rxvision.cli.score", "--input", prefix, "--output", out]
    failed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 4, failed.stderr[-3000:]
    assert f"error: no images under {prefix}" in failed.stderr
    assert list(S3Store().list_keys(f"{out}/")) == []  # no plan, no Parquet, no _SUCCESS
    allowed = subprocess.run(
        [*argv, "--allow-empty"], env=env, capture_output=True, text=True, timeout=300
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert Storage().exists(f"{out}/_SUCCESS")
    assert json.loads(Storage().read(f"{out}/_manifest.json"))["rows"] == 0
