"""Lineage of a model version: given metadata and gaps, config hash, evaluation split id."""

from __future__ import annotations

import pytest

from rxvision.registry.lineage import VersionMetadata, config_hash, eval_split_id

pytestmark = pytest.mark.unit


def test_given_metadata_wins_and_gaps_are_filled() -> None:
    found = VersionMetadata(
        training_run_id="r1",
        snapshot_rev="pills-v1",
        git_commit="abc",
        packages={"torch": "2.14.1"},
    )
    given = VersionMetadata(snapshot_rev="pills-v2", dag_run_id="manual__1")
    tags = given.filled_from(found).tags()
    assert tags == {
        "rxvision.training.run_id": "r1",
        "rxvision.dataset.snapshot_rev": "pills-v2",
        "rxvision.git.commit": "abc",
        "rxvision.airflow.dag_run_id": "manual__1",
        "rxvision.version.torch": "2.14.1",
    }


def test_config_hash_ignores_what_the_data_decided() -> None:
    params = {"model.architecture": "resnet18", "training.optimizer.lr": "0.003"}
    same = {**params, "data.train_images": "900", "run.max_steps": "40", "data.source": "x"}
    assert config_hash(params) == config_hash(same)
    assert config_hash(params) != config_hash({**params, "training.optimizer.lr": "0.001"})
    assert config_hash({"run.max_steps": "1"}) is None


def test_eval_split_depends_on_data_fraction_and_seed() -> None:
    params = {"data.val_fraction": "0.2", "data.split_seed": "0"}
    split = eval_split_id(params, "c0ffee")
    assert split == eval_split_id(params, "c0ffee")
    assert split != eval_split_id({**params, "data.split_seed": "1"}, "c0ffee")
    assert split != eval_split_id(params, "beef")
    assert eval_split_id(params, None) is None
    assert split != eval_split_id({**params, "data.test_fraction": "0.1"}, "c0ffee")
