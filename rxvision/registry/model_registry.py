"""The model registry: MLflow registered models, production gates and aliases.

A trained model enters the registry only through ``ModelRegistry.register_model``, which
checks the production gates (``rxvision.registry.gates``) first: a model that fails
them raises ``ModelQualityError`` and nothing is registered. Every version carries its
lineage as tags (dataset snapshot and content hash, git commit, config hash, package
versions, training run, Airflow dag run, container image).

Roles are MLflow aliases, never the deprecated stages:

- a new version becomes ``challenger``;
- ``promote`` makes it ``champion`` and the previous champion ``fallback``;
- ``rollback`` makes the ``fallback`` the ``champion`` again.

Registering the same training run twice returns the same version: versions are found
by their run id before one is created, and a race between two registrations is
resolved after the fact (the lowest version wins; the other is deleted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from rxvision.config.load import load_config, validate_config
from rxvision.errors import ConfigError, NotFound
from rxvision.home import repo_root
from rxvision.registry.gates import (
    ChampionBaseline,
    EvalSummary,
    GateConfig,
    GateReport,
    evaluate_gates,
)

log = logging.getLogger(__name__)

DEFAULT_CONFIG = repo_root() / "configs" / "registry.yaml"
# params of a training run that describe the data it saw, not its config
RUNTIME_PARAMS = frozenset({"data.source", "data.classes", "data.train_images", "data.val_images"})
ENV_DAG_RUN_ID = "AIRFLOW_CTX_DAG_RUN_ID"  # set by Airflow in every task's environment
ENV_IMAGE = "RXVISION_IMAGE"  # set in the training and scoring images
TAG_PREFIX = "rxvision."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AliasNames(_Strict):
    """The aliases of the three roles."""

    challenger: str = "challenger"
    champion: str = "champion"
    fallback: str = "fallback"


class RegistryConfig(_Strict):
    """The registry (``configs/registry.yaml``): model name, tracking server, gates."""

    model_name: str = Field("rxvision-pill-classifier", min_length=1)
    tracking_uri: str | None = None
    gates: GateConfig = Field(default_factory=GateConfig)
    aliases: AliasNames = Field(default_factory=AliasNames)


def load_registry_config(
    path: Path | str | None = None, overrides: list[str] | None = None
) -> RegistryConfig:
    """``configs/registry.yaml`` (or ``path``) with overrides; the defaults when there is no
    file and no path was given (e.g. in a container without the repository)."""
    if path is None and not DEFAULT_CONFIG.is_file():
        return validate_config({}, RegistryConfig, overrides, source="registry defaults")
    return load_config(path or DEFAULT_CONFIG, RegistryConfig, overrides)


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


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as ``list`` shows it."""

    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    source: str
    created_ms: int
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        """``models:/name/version``."""
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "aliases": list(self.aliases), "uri": self.uri}


@dataclass(frozen=True)
class AliasChange:
    """What ``promote`` or ``rollback`` did."""

    champion: str
    previous_champion: str | None
    fallback: str | None
    changed: bool


ChampionEvaluator = Callable[[VersionInfo], Mapping[str, float]]


class ModelRegistry:
    """Gated registration and alias moves of one registered model."""

    def __init__(self, config: RegistryConfig | None = None, client: MlflowClient | None = None):
        self.config = config or RegistryConfig()
        self._client = client
        self.last_report: GateReport | None = None

    @cached_property
    def client(self) -> MlflowClient:
        """The MLflow client (``tracking_uri`` from config, else ``MLFLOW_TRACKING_URI``)."""
        return self._client or MlflowClient(self.config.tracking_uri)

    @property
    def name(self) -> str:
        """The registered model's name."""
        return self.config.model_name

    # --- registration --------------------------------------------------------------------

    def register_model(
        self,
        model_uri: str,
        metrics: Mapping[str, float],
        metadata: VersionMetadata | None = None,
        *,
        champion_evaluator: ChampionEvaluator | None = None,
    ) -> str:
        """Register the model at ``model_uri`` if it passes the gates; return its version.

        ``model_uri`` is what training logged (``models:/m-...`` or ``runs:/RUN/model``).
        ``champion_evaluator``, when given, scores the champion on this model's
        evaluation split when the champion's own split differs (e.g.
        ``lambda v: rxvision.serving.model.evaluate_model(v.uri, val_dir)``). Raises
        ``ModelQualityError`` (nothing registered) when a gate fails.
        """
        self.last_report = None
        source, run_id, model_id = self._resolve_source(model_uri)
        existing = self._versions_of_run(run_id)
        if existing:
            version = str(existing[0].version)
            log.info("run %s is already %s version %s", run_id, self.name, version)
            return version
        meta = (metadata or VersionMetadata()).filled_from(self._discover_metadata(run_id))
        summary = EvalSummary.from_metrics(metrics, self.config.gates, split=meta.eval_split)
        report = self._judge(summary, champion_evaluator)
        self.last_report = report
        for criterion in report.criteria:
            log.info("gate %s", criterion.describe())
        report.raise_for_failure(f"{model_uri} (run {run_id})")
        tags = {**meta.tags(), **report.tags()}
        if summary.top1 is not None:
            tags[f"{TAG_PREFIX}eval.top1"] = f"{summary.top1:.6f}"
        return self._create_version(source, run_id, model_id, tags)

    def check_gates(
        self,
        model_uri: str,
        metrics: Mapping[str, float],
        *,
        champion_evaluator: ChampionEvaluator | None = None,
    ) -> GateReport:
        """Judge a model against the gates (and the champion) without registering it."""
        _, run_id, _ = self._resolve_source(model_uri)
        meta = self._discover_metadata(run_id)
        summary = EvalSummary.from_metrics(metrics, self.config.gates, split=meta.eval_split)
        return self._judge(summary, champion_evaluator)

    def _judge(self, summary: EvalSummary, evaluator: ChampionEvaluator | None) -> GateReport:
        baseline = self._champion_baseline(summary.split, evaluator)
        return evaluate_gates(summary, self.config.gates, baseline)

    def register_summary(
        self,
        summary: Mapping[str, Any],
        metadata: VersionMetadata | None = None,
        *,
        champion_evaluator: ChampionEvaluator | None = None,
    ) -> str:
        """Register from a training summary (``TrainResult.summary()`` / ``--summary`` JSON)."""
        model_uri = summary.get("model_uri")
        if not model_uri:
            raise ConfigError("training summary has no model_uri: the run logged no model")
        given = metadata or VersionMetadata()
        if not given.training_run_id and summary.get("run_id"):
            given = replace(given, training_run_id=str(summary["run_id"]))
        return self.register_model(
            str(model_uri),
            {k: float(v) for k, v in dict(summary.get("metrics") or {}).items()},
            given,
            champion_evaluator=champion_evaluator,
        )

    def _resolve_source(self, model_uri: str) -> tuple[str, str, str | None]:
        """(source, run id, logged model id) of a ``models:/m-...`` or ``runs:/`` URI."""
        if model_uri.startswith("runs:/"):
            run_id, _, path = model_uri.removeprefix("runs:/").partition("/")
            model_id = self._logged_model_of_run(run_id, path or "model")
            return (f"models:/{model_id}" if model_id else model_uri), run_id, model_id
        if model_uri.startswith("models:/m-"):
            model_id = model_uri.removeprefix("models:/").split("/", 1)[0]
            try:
                logged = self.client.get_logged_model(model_id)
            except MlflowException as exc:
                raise NotFound(f"no logged model {model_id} ({model_uri}): {exc}") from exc
            if not logged.source_run_id:
                raise NotFound(f"logged model {model_uri} has no source run: cannot register it")
            return model_uri, str(logged.source_run_id), model_id
        raise ConfigError(
            f"cannot register {model_uri!r}: expected a training model URI "
            "(models:/m-<id> or runs:/<run_id>/model)"
        )

    def _logged_model_of_run(self, run_id: str, name: str) -> str | None:
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise NotFound(f"no MLflow run {run_id}: {exc}") from exc
        found = self.client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
        )
        return str(found[0].model_id) if found else None

    def _versions_of_run(self, run_id: str) -> list[ModelVersion]:
        """Versions of this model made from ``run_id``, lowest version first."""
        try:
            found = self.client.search_model_versions(
                f"name = '{self.name}' and run_id = '{run_id}'"
            )
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        return sorted(found, key=lambda v: int(v.version))

    def _create_version(
        self, source: str, run_id: str, model_id: str | None, tags: dict[str, str]
    ) -> str:
        try:
            self.client.create_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        created = self.client.create_model_version(
            self.name, source, run_id=run_id, tags=tags, model_id=model_id
        )
        mine = str(created.version)
        keeper = self._versions_of_run(run_id)[0].version
        if str(keeper) != mine:
            # another registration of the same run won the race: keep one version
            log.warning("run %s registered twice: keeping version %s", run_id, keeper)
            self.client.delete_model_version(self.name, mine)
            return str(keeper)
        self.client.set_registered_model_alias(self.name, self.config.aliases.challenger, mine)
        log.info("registered %s version %s (run %s) as challenger", self.name, mine, run_id)
        return mine

    # --- lineage ---------------------------------------------------------------------------

    def _discover_metadata(self, run_id: str) -> VersionMetadata:
        """Lineage read from the training run's tags and params, and the environment."""
        run = self.client.get_run(run_id)
        tags, params = run.data.tags, run.data.params
        packages = {
            k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")
        }
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

    def _champion_baseline(
        self, split: str | None, evaluator: ChampionEvaluator | None
    ) -> ChampionBaseline | None:
        champion = self.get_alias(self.config.aliases.champion)
        if champion is None:
            return None
        champion_split = champion.tags.get(f"{TAG_PREFIX}eval.split")
        top1 = _float(champion.tags.get(f"{TAG_PREFIX}eval.top1"))
        if top1 is None and champion.run_id:
            # registered by other means: read what its training run logged
            run = self.client.get_run(champion.run_id)
            top1 = _float(run.data.metrics.get(f"final/{self.config.gates.top1_key}"))
            content = run.data.tags.get("dataset.content_hash")
            champion_split = champion_split or eval_split_id(run.data.params, content)
        if champion_split != split and evaluator is not None and split is not None:
            log.info("re-evaluating champion v%s on split %s", champion.version, split)
            metrics = evaluator(champion)
            top1 = _float(metrics.get(self.config.gates.top1_key))
            champion_split = split
        return ChampionBaseline(champion.version, top1, champion_split)

    # --- aliases ---------------------------------------------------------------------------

    def get_alias(self, alias: str) -> VersionInfo | None:
        """The version an alias points at, or None."""
        try:
            version = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return self._info(version, self._aliases())

    def promote(self, version: str | None = None) -> AliasChange:
        """Make ``version`` (default: the challenger) the champion; the old one the fallback."""
        aliases = self.config.aliases
        target = version or self._alias_version(aliases.challenger)
        if target is None:
            raise NotFound(f"{self.name} has no {aliases.challenger!r} version to promote")
        self._check_version(target)
        current = self._alias_version(aliases.champion)
        fallback = self._alias_version(aliases.fallback)
        if current == target:
            return AliasChange(target, current, fallback, changed=False)
        if current is not None:
            # fallback first: at every instant the champion alias points at a usable model
            self.client.set_registered_model_alias(self.name, aliases.fallback, current)
            fallback = current
        self.client.set_registered_model_alias(self.name, aliases.champion, target)
        if self._alias_version(aliases.challenger) == target:
            self.client.delete_registered_model_alias(self.name, aliases.challenger)
        self.client.set_model_version_tag(self.name, target, f"{TAG_PREFIX}promoted_at", _now())
        log.info("%s: champion v%s (was %s), fallback %s", self.name, target, current, fallback)
        return AliasChange(target, current, fallback, changed=True)

    def rollback(self) -> AliasChange:
        """Make the fallback the champion again; the rolled-back version loses its alias."""
        aliases = self.config.aliases
        fallback = self._alias_version(aliases.fallback)
        if fallback is None:
            raise NotFound(f"{self.name} has no {aliases.fallback!r} version to roll back to")
        current = self._alias_version(aliases.champion)
        self.client.set_registered_model_alias(self.name, aliases.champion, fallback)
        self.client.delete_registered_model_alias(self.name, aliases.fallback)
        if current is not None and current != fallback:
            self.client.set_model_version_tag(
                self.name, current, f"{TAG_PREFIX}rolled_back_at", _now()
            )
        log.warning("%s: rolled back champion v%s -> v%s", self.name, current, fallback)
        return AliasChange(fallback, current, None, changed=current != fallback)

    def list_versions(self) -> list[VersionInfo]:
        """Every version, newest first, with its aliases."""
        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        aliases = self._aliases()
        infos = [self._info(v, aliases) for v in found]
        return sorted(infos, key=lambda i: int(i.version), reverse=True)

    def _aliases(self) -> dict[str, str]:
        try:
            return {
                k: str(v) for k, v in self.client.get_registered_model(self.name).aliases.items()
            }
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise

    def _alias_version(self, alias: str) -> str | None:
        return self._aliases().get(alias)

    def _check_version(self, version: str) -> None:
        try:
            self.client.get_model_version(self.name, version)
        except MlflowException as exc:
            raise NotFound(f"{self.name} has no version {version!r}") from exc

    def _info(self, version: ModelVersion, aliases: Mapping[str, str]) -> VersionInfo:
        number = str(version.version)
        return VersionInfo(
            name=self.name,
            version=number,
            aliases=tuple(sorted(a for a, v in aliases.items() if v == number)),
            run_id=version.run_id,
            source=str(version.source),
            created_ms=int(version.creation_timestamp or 0),
            tags=dict(version.tags or {}),
        )


def config_hash(params: Mapping[str, str]) -> str | None:
    """sha256 (16 hex) of a training run's config params (the flattened ``TrainConfig``)."""
    config = {
        k: v for k, v in params.items() if k not in RUNTIME_PARAMS and not k.startswith("run.")
    }
    if not config:
        return None
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def eval_split_id(params: Mapping[str, str], content_hash: str | None) -> str | None:
    """An id of the validation split: the data, the validation fraction and the split seed."""
    data = content_hash or params.get("data.source")
    if not data:
        return None
    parts = [data, params.get("data.val_fraction", ""), params.get("data.split_seed", "")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
