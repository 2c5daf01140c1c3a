"""Checkpoint store: atomic publishing, pruning, and falling back from a corrupt file."""

from __future__ import annotations

import logging
from pathlib import Path

import boto3
import pytest
import torch
from moto import mock_aws

from rxvision.errors import ConfigError
from rxvision.storage.s3 import S3Config, S3Store
from rxvision.train.checkpoints import (
    DATA_RECORD,
    CheckpointDataMismatch,
    CheckpointStore,
    check_run_id,
    step_name,
    verify_checkpoint,
)

pytestmark = pytest.mark.unit


def fake_checkpoint(step: int) -> dict[str, object]:
    """The keys a Lightning checkpoint needs to resume a fit."""
    return {
        "state_dict": {"w": torch.full((2,), float(step))},
        "optimizer_states": [],
        "loops": {},
        "global_step": step,
        "epoch": 0,
    }


def save(store: CheckpointStore, step: int) -> str:
    temp = store.temp_path(step_name(step))
    torch.save(fake_checkpoint(step), temp)
    return store.publish(temp, step_name(step))


@pytest.fixture
def local(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(str(tmp_path / "ckpt"), "run-1", staging_root=tmp_path / "staging")


def test_publish_leaves_no_temp_file(local: CheckpointStore) -> None:
    uri = save(local, 4)
    assert uri.endswith("run-1/step-00000004.ckpt")
    assert [p.name for p in local.local_dir.iterdir()] == ["step-00000004.ckpt"]


def test_list_is_in_step_order_and_prune_keeps_the_newest(local: CheckpointStore) -> None:
    for step in (10, 2, 100, 30):
        save(local, step)
    assert [r.step for r in local.list_steps()] == [2, 10, 30, 100]
    local.prune(keep_last=2)
    assert [r.step for r in local.list_steps()] == [30, 100]


def test_latest_loadable_falls_back_from_a_corrupt_checkpoint(
    local: CheckpointStore, caplog: pytest.LogCaptureFixture
) -> None:
    save(local, 2)
    save(local, 4)
    newest = local.local_dir / step_name(6)
    whole = local.local_dir / step_name(4)
    newest.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a torn write
    with caplog.at_level(logging.WARNING):
        ref, path = local.latest_loadable() or (None, None)
    assert ref is not None and ref.step == 4
    assert path == whole
    assert "does not load" in caplog.text


def test_partial_files_of_a_killed_writer_are_discarded(local: CheckpointStore) -> None:
    save(local, 2)
    local.temp_path(step_name(4)).write_bytes(b"half a checkpoint")
    (local.staging_root / "proc-123").mkdir(parents=True)
    assert local.discard_partial() == 1
    assert [p.name for p in local.local_dir.iterdir()] == [step_name(2)]
    assert not (local.staging_root / "proc-123").exists()


def test_a_checkpoint_without_training_state_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, path)
    assert verify_checkpoint(path) is None
    torch.save(fake_checkpoint(3), path)
    assert verify_checkpoint(path) is not None


def test_no_checkpoint_means_no_resume(local: CheckpointStore) -> None:
    assert local.latest_loadable() is None
    (local.local_dir).mkdir(parents=True)
    (local.local_dir / step_name(1)).write_bytes(b"garbage")
    assert local.latest_loadable() is None


def test_a_run_id_is_bound_to_the_data_its_checkpoints_were_trained_on(
    local: CheckpointStore,
) -> None:
    local.claim_for_data("feature set aaa (snapshot 111)")
    save(local, 3)
    local.claim_for_data("feature set aaa (snapshot 111)")  # the retry: same data, resumes
    assert (local.local_dir / DATA_RECORD).read_text() == "feature set aaa (snapshot 111)"
    with pytest.raises(CheckpointDataMismatch) as refused:
        local.claim_for_data("feature set bbb (snapshot 222)")
    message = str(refused.value)
    assert "run-1" in message and "aaa" in message and "bbb" in message
    assert [r.step for r in local.list_steps()] == [3]  # nothing deleted
    assert refused.value.exit_code == 13


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-x", "a b"])
def test_run_ids_must_be_safe_path_parts(bad: str) -> None:
    with pytest.raises(ConfigError, match="run id"):
        check_run_id(bad)


def test_s3_store_uploads_only_complete_files_and_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1")
        s3 = S3Store(S3Config(region="us-east-1"))
        s3.ensure_bucket("rxvision-checkpoints")
        store = CheckpointStore(
            "s3://rxvision-checkpoints", "run-2", staging_root=tmp_path / "staging", s3=s3
        )
        save(store, 5)
        save(store, 10)
        staged = [p for p in (tmp_path / "staging").rglob("*") if p.is_file()]
        assert not staged  # uploaded, then removed
        s3.put_bytes("s3://rxvision-checkpoints/run-2/step-00000015.ckpt", b"PK\x03\x04 torn")
        ref, path = store.latest_loadable() or (None, None)
        assert ref is not None and ref.step == 10
        assert ref.uri == "s3://rxvision-checkpoints/run-2/step-00000010.ckpt"
        assert path is not None and torch.load(path, weights_only=True)["global_step"] == 10
        store.prune(keep_last=1)
        assert [r.step for r in store.list_steps()] == [15]
