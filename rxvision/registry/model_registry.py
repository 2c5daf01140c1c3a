"""The model registry: MLflow registered models, production gates and aliases.

A trained model enters the registry only through ``ModelRegistry.register_model``, which
checks the production gates (``rxvision.registry.gates``) first: a model that fails
them raises ``ModelQualityError`` and nothing is registered. Every version carries its
lineage as tags (dataset snapshot and content hash, git commit, config hash, package
versions, training run, Airflow dag run, container image).

The "no worse than the champion" gate is meaningful only on the same images: given a
``comparator`` (score a model URI on the challenger's test images), the registry scores
the champion's pinned version and the challenger through it and compares the two top-1
values. The champion the gate judged against is kept (``last_champion_version``, and the
version's ``rxvision.gate.champion_version`` tag) so that ``promote`` can refuse to
replace a champion it did not compare against (``expected_champion``).

Roles are MLflow aliases, never the deprecated stages:

- a new version becomes ``challenger``;
- ``promote`` makes it ``champion`` and the previous champion ``fallback``;
- ``rollback`` makes the ``fallback`` the ``champion`` again.

Registering the same training run twice returns the same version: versions are found
by their run id before one is created, and a race between two registrations is
resolved after the fact (the lowest version wins; the other is deleted).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from rxvision.config.load import load_config, validate_config
from rxvision.errors import ConfigError, NotFound, RxVisionError
from rxvision.home import repo_root
from rxvision.registry.gates import (
    ChampionBaseline,
    EvalSummary,
    GateConfig,
    GateReport,
    compare_on_same_images,
    evaluate_gates,
)

log = logging.getLogger(__name__)

DEFAULT_CONFIG = repo_root() / "configs" / "registry.yaml"
# another registry config for every process of a deployment (e.g. a test stack's gates)
ENV_REGISTRY_CONFIG = "RXVISION_REGISTRY_CONFIG"
# params of a training run that describe the data it saw, not its config
RUNTIME_PARAMS = frozenset(
    {"data.source", "data.classes", "data.train_images", "data.val_images", "data.test_images"}
)
ENV_DAG_RUN_ID = "AIRFLOW_CTX_DAG_RUN_ID"  # set by Airflow in every task's environment
ENV_IMAGE = "RXVISION_IMAGE"  # set in the training and scoring images
TAG_PREFIX = "rxvision."
# the confused pairs of the test split and each one's recall (``describe_pairs``)
PAIRS_TAG = f"{TAG_PREFIX}eval.pairs"


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
    """``configs/registry.yaml`` (or ``path``, else ``$RXVISION_REGISTRY_CONFIG``) with
    overrides; the defaults when there is no file and no path was given (e.g. in a
    container without the repository)."""
    path = path or os.environ.get(ENV_REGISTRY_CONFIG) or None
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


Comparator = Callable[[str], Mapping[str, float]]
"""Score a model URI on the challenger's test images: the gate metrics (``test_top1``...)
and ``"images"``, the number of images scored. Called for the champion's pinned version
(``models:/name/N``) and for the challenger's ``model_uri``, so that both go through the
same scoring path on the same images, e.g.
``lambda uri: rxvision.serving.evaluation.evaluate_model(uri, test_dir, prefix="test_")``."""

CHAMPION_TAG = f"{TAG_PREFIX}gate.champion_version"  # the champion a version was judged against
NO_CHAMPION = "none"


class _Unset(enum.Enum):
    UNSET = "UNSET"


UNSET = _Unset.UNSET


class ChampionChanged(RxVisionError):
    """The champion alias is not what the caller judged against (or another writer moved
    it during a promotion); for a refused compare-and-set nothing was moved."""

    exit_code = 10  # 1-9 are taken (rxvision.errors, gates, serving, scoring)

    def __init__(self, name: str, expected: str | None, actual: str | None, what: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{name}: champion is {_label(actual)}, expected {_label(expected)}: {what}"
        )


def _label(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


class ModelRegistry:
    """Gated registration and alias moves of one registered model."""

    def __init__(self, config: RegistryConfig | None = None, client: MlflowClient | None = None):
        self.config = config or RegistryConfig()
        self._client = client
        self.last_report: GateReport | None = None
        # the champion the last judgement compared against (None: there was none)
        self.last_champion_version: str | None = None

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
        comparator: Comparator | None = None,
        classes: Sequence[str] | None = None,
        pairs: Mapping[str, str] | None = None,
    ) -> str:
        """Register the model at ``model_uri`` if it passes the gates; return its version.

        ``model_uri`` is what training logged (``models:/m-...`` or ``runs:/RUN/model``);
        ``metrics`` its test-split metrics (``test_top1``, ``test_ece``,
        ``test_recall_<class>``). ``comparator``, when given and a champion exists, scores
        the champion and this model on the same images for the regression gate (see
        ``Comparator``); without one the champion's registered top-1 is compared, and a
        champion measured on another split fails the gate (``on_split_mismatch``).
        ``classes`` (default: the logged model's ``classes`` metadata) lets a class
        without a test image fail ``min_class_recall``. Raises ``ModelQualityError``
        (nothing registered) when a gate fails.

        Afterwards ``last_report`` is the gate report and ``last_champion_version`` the
        champion judged against (None: there was none), for ``promote(expected_champion=)``.
        A run registered before returns its version without judging again;
        ``last_champion_version`` is then the champion recorded at its registration.
        """
        self.last_report = None
        self.last_champion_version = None
        source, run_id, model_id = self._resolve_source(model_uri)
        existing = self._versions_of_run(run_id)
        if existing:
            version = str(existing[0].version)
            log.info("run %s is already %s version %s", run_id, self.name, version)
            self.last_champion_version = self._judged_champion(existing[0])
            return version
        meta = (metadata or VersionMetadata()).filled_from(self._discover_metadata(run_id))
        if classes is None:
            classes = self._model_classes(source, model_id)
        summary = EvalSummary.from_metrics(
            metrics, self.config.gates, split=meta.eval_split, classes=classes, pairs=pairs
        )
        report = self._judge(summary, model_uri, comparator)
        for criterion in report.criteria:
            log.info("gate %s", criterion.describe())
        report.raise_for_failure(f"{model_uri} (run {run_id})")
        tags = {**meta.tags(), **report.tags()}
        tags[CHAMPION_TAG] = self.last_champion_version or NO_CHAMPION
        if summary.top1 is not None:
            tags[f"{TAG_PREFIX}eval.top1"] = f"{summary.top1:.6f}"
        if summary.pair_recall:
            tags[PAIRS_TAG] = describe_pairs(summary.pair_recall, summary.pair_partner)
        return self._create_version(source, run_id, model_id, tags)

    def check_gates(
        self,
        model_uri: str,
        metrics: Mapping[str, float],
        *,
        comparator: Comparator | None = None,
        classes: Sequence[str] | None = None,
        pairs: Mapping[str, str] | None = None,
    ) -> GateReport:
        """Judge a model against the gates (and the champion) without registering it; sets
        ``last_report`` and ``last_champion_version`` as ``register_model`` does."""
        self.last_report = None
        self.last_champion_version = None
        source, run_id, model_id = self._resolve_source(model_uri)
        meta = self._discover_metadata(run_id)
        if classes is None:
            classes = self._model_classes(source, model_id)
        summary = EvalSummary.from_metrics(
            metrics, self.config.gates, split=meta.eval_split, classes=classes, pairs=pairs
        )
        return self._judge(summary, model_uri, comparator)

    def _judge(
        self, summary: EvalSummary, model_uri: str, comparator: Comparator | None
    ) -> GateReport:
        champion = self.get_alias(self.config.aliases.champion)
        baseline = self._champion_baseline(champion, summary.split, model_uri, comparator)
        report = evaluate_gates(summary, self.config.gates, baseline)
        self.last_report = report
        self.last_champion_version = None if champion is None else champion.version
        return report

    def register_summary(
        self,
        summary: Mapping[str, Any],
        metadata: VersionMetadata | None = None,
        *,
        comparator: Comparator | None = None,
    ) -> str:
        """Register from a training summary (``TrainResult.summary()`` / ``--summary`` JSON);
        its ``classes``, when present, are the model's class list."""
        model_uri = summary.get("model_uri")
        if not model_uri:
            raise ConfigError("training summary has no model_uri: the run logged no model")
        given = metadata or VersionMetadata()
        if not given.training_run_id and summary.get("run_id"):
            given = replace(given, training_run_id=str(summary["run_id"]))
        classes = summary.get("classes")
        return self.register_model(
            str(model_uri),
            {k: float(v) for k, v in dict(summary.get("metrics") or {}).items()},
            given,
            comparator=comparator,
            classes=[str(c) for c in classes] if classes else None,
            pairs=summary_pairs(summary),
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
        self,
        champion: VersionInfo | None,
        split: str | None,
        model_uri: str,
        comparator: Comparator | None,
    ) -> ChampionBaseline | None:
        if champion is None:
            return None
        if comparator is not None:
            log.info("scoring champion v%s and %s on the same images", champion.version, model_uri)
            try:
                champion_metrics = comparator(champion.uri)
                challenger_metrics = comparator(model_uri)
            except Exception as exc:  # any failure fails the gate, with its reason
                log.exception("comparing with champion v%s failed", champion.version)
                return ChampionBaseline(
                    champion.version, None, None, error=f"{type(exc).__name__}: {exc}"
                )
            return compare_on_same_images(
                champion.version, champion_metrics, challenger_metrics, self.config.gates
            )
        champion_split = champion.tags.get(f"{TAG_PREFIX}eval.split")
        top1 = _float(champion.tags.get(f"{TAG_PREFIX}eval.top1"))
        if top1 is None and champion.run_id:
            # registered by other means: read what its training run logged
            run = self.client.get_run(champion.run_id)
            top1 = _float(run.data.metrics.get(f"final/{self.config.gates.top1_key}"))
            content = run.data.tags.get("dataset.content_hash")
            champion_split = champion_split or eval_split_id(run.data.params, content)
        return ChampionBaseline(champion.version, top1, champion_split)

    def _judged_champion(self, version: ModelVersion) -> str | None:
        """The champion a registered version was judged against (from its tag; for a
        version registered without the tag, the current champion)."""
        recorded = (version.tags or {}).get(CHAMPION_TAG)
        if recorded is None:
            return self._alias_version(self.config.aliases.champion)
        return None if recorded == NO_CHAMPION else recorded

    def _model_classes(self, source: str, model_id: str | None) -> tuple[str, ...]:
        """The logged model's class names (its ``classes`` metadata); empty when it has none."""
        from mlflow.artifacts import download_artifacts
        from mlflow.models import Model

        try:
            if model_id:
                location = str(self.client.get_logged_model(model_id).artifact_location)
            else:  # runs:/RUN/path of a model logged without a logged-model entry
                run_id, _, path = source.removeprefix("runs:/").partition("/")
                location = f"{self.client.get_run(run_id).info.artifact_uri}/{path or 'model'}"
            with tempfile.TemporaryDirectory(prefix="rxv-mlmodel-") as tmp:
                local = download_artifacts(
                    artifact_uri=f"{location.rstrip('/')}/MLmodel",
                    dst_path=tmp,
                    tracking_uri=self.client.tracking_uri,
                )
                metadata = Model.load(local).metadata or {}
        except MlflowException as exc:
            raise NotFound(f"cannot read the MLmodel of {source}: {exc}") from exc
        classes = metadata.get("classes") or ()
        if not classes:
            log.warning("%s has no classes metadata: classes without test images go unseen", source)
        return tuple(str(c) for c in classes)

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

    def promote(
        self, version: str | None = None, *, expected_champion: str | _Unset | None = UNSET
    ) -> AliasChange:
        """Make ``version`` (default: the challenger) the champion; the old one the fallback.

        Compare-and-set: with ``expected_champion`` (a version, or None for "there must be
        no champion"; e.g. ``last_champion_version``, the champion the gates compared
        against), the champion alias is read again right before anything moves, and
        ``ChampionChanged`` is raised, with nothing moved, when it is another version.
        Promoting the version that already is the champion changes nothing and raises
        nothing (a retried promotion). After the move the champion alias is read back;
        another version there raises ``ChampionChanged`` too (a concurrent writer).

        MLflow has no atomic compare-and-set of an alias: between the check and the set
        (two calls) another writer can still move the alias, and the later write wins.
        The read-back catches a writer that wrote after this one; this is the best a
        client can do without a lock on the tracking server.
        """
        aliases = self.config.aliases
        target = version or self._alias_version(aliases.challenger)
        if target is None:
            raise NotFound(f"{self.name} has no {aliases.challenger!r} version to promote")
        self._check_version(target)
        now = self._aliases()
        current, fallback = now.get(aliases.champion), now.get(aliases.fallback)
        if current == target:
            return AliasChange(target, current, fallback, changed=False)
        if expected_champion is not UNSET and current != expected_champion:
            raise ChampionChanged(
                self.name,
                expected_champion,
                current,
                f"refusing to promote v{target} over a champion it was not compared "
                "with; nothing was moved",
            )
        if current is not None:
            # fallback first: at every instant the champion alias points at a usable model
            self.client.set_registered_model_alias(self.name, aliases.fallback, current)
            fallback = current
        self.client.set_registered_model_alias(self.name, aliases.champion, target)
        actual = self._alias_version(aliases.champion)
        if actual != target:
            raise ChampionChanged(
                self.name,
                target,
                actual,
                f"another writer moved the champion while v{target} was being promoted "
                f"(fallback is now v{fallback}); check the aliases",
            )
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


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
