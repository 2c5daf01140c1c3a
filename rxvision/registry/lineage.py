"""Lineage of a model version, kept as its MLflow tags: dataset snapshot and content
hash, git commit, config hash, test split id, package versions, training run, Airflow
dag run and container image; gaps are filled from the training run and the environment.
Also the confused pairs of the test split, as a tag.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mlflow.tracking import MlflowClient

# params of a training run that describe the data it saw, not its config
RUNTIME_PARAMS = frozenset(
    {"data.source", "data.classes", "data.train_images", "data.val_images", "data.test_images"}
)
ENV_DAG_RUN_ID = "AIRFLOW_CTX_DAG_RUN_ID"  # set by Airflow in every task's environment
ENV_IMAGE = "RXVISION_IMAGE"  # set in the training and scoring images
TAG_PREFIX = "rxvision."
# the confused pairs of the test split and each one's recall (``describe_pairs``)
PAIRS_TAG = f"{TAG_PREFIX}eval.pairs"


@dataclass(frozen=True)
class VersionMetadata:
    """Lineage of a model version; ``None`` fields are looked up from the training run."""

    training_run_id: str | None = None
    mlflow_run_id: str | None = None
    snapshot_rev: str | None = None
    snapshot_hash: str | None = None
    git_commit: str | None = None
    config_hash: str | None = None
    eval_split: str | None = None
    dag_run_id: str | None = None
    container_image: str | None = None
    packages: Mapping[str, str] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        """The model version's tags (unset fields are left out)."""
        named = {
            "training.run_id": self.training_run_id,
            "training.mlflow_run_id": self.mlflow_run_id,
            "dataset.snapshot_rev": self.snapshot_rev,
            "dataset.content_hash": self.snapshot_hash,
            "git.commit": self.git_commit,
            "config.hash": self.config_hash,
            "eval.split": self.eval_split,
            "airflow.dag_run_id": self.dag_run_id,
            "container.image": self.container_image,
        }
        tags = {TAG_PREFIX + k: v for k, v in named.items() if v}
        tags.update({f"{TAG_PREFIX}version.{k}": v for k, v in self.packages.items()})
        return tags

    def filled_from(self, found: VersionMetadata) -> VersionMetadata:
        """These values, with the gaps filled from ``found``."""
        given = {k: v for k, v in asdict(self).items() if v}
        return replace(found, **given)


def discover_metadata(client: MlflowClient, run_id: str) -> VersionMetadata:
    """Lineage read from the training run's tags and params, and the environment."""
    run = client.get_run(run_id)
    tags, params = run.data.tags, run.data.params
    packages = {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")}
    return VersionMetadata(
        training_run_id=tags.get("rxvision.run_id"),
        mlflow_run_id=run_id,
        snapshot_rev=tags.get("dataset.snapshot_rev"),
        snapshot_hash=tags.get("dataset.content_hash"),
        git_commit=tags.get("git.commit") or tags.get("mlflow.source.git.commit"),
        config_hash=config_hash(params),
        eval_split=eval_split_id(params, tags.get("dataset.content_hash")),
        dag_run_id=os.environ.get(ENV_DAG_RUN_ID),
        container_image=os.environ.get(ENV_IMAGE),
        packages=packages,
    )


def describe_pairs(recall: Mapping[str, float], partner: Mapping[str, str]) -> str:
    """``A>B 0.83; C>D 0.90``: each confused class, the class it is taken for and its
    recall, worst first (MLflow tags hold 5,000 characters: enough for ~60 pairs)."""
    worst_first = sorted(recall, key=lambda k: (recall[k], k))
    return "; ".join(f"{k}>{partner.get(k, '?')} {recall[k]:.2f}" for k in worst_first)[:5000]


def summary_pairs(summary: Mapping[str, Any]) -> dict[str, str]:
    """A training summary's confused pairs: class -> the class it is taken for."""
    found = dict(summary.get("extra") or {}).get("confused_pairs") or []
    return {str(p["true_class"]): str(p["predicted"]) for p in found}


def config_hash(params: Mapping[str, str]) -> str | None:
    """sha256 (16 hex) of a training run's config params (the flattened ``TrainConfig``)."""
    config = {
        k: v for k, v in params.items() if k not in RUNTIME_PARAMS and not k.startswith("run.")
    }
    if not config:
        return None
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def eval_split_id(params: Mapping[str, str], content_hash: str | None) -> str | None:
    """An id of the test split the gates read: the data, the split fractions and seed, and
    the near-duplicate distance (content groups are split whole).

    ``test`` is part of the id, so that a champion registered with validation metrics
    (before the test split existed) never compares as "same split" with a test score."""
    data = content_hash or params.get("data.source")
    if not data:
        return None
    parts = [
        data,
        "test",
        params.get("data.test_fraction", ""),
        params.get("data.val_fraction", ""),
        params.get("data.split_seed", ""),
        params.get("data.near_duplicate_distance", ""),  # groups what splits together
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
