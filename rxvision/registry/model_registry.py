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

Roles are MLflow aliases (``aliases``): a new version becomes ``challenger``; ``promote``
and ``rollback`` move ``champion`` and ``fallback``. Lineage tags: ``lineage``; model
URIs and class names: ``sources``; configuration: ``config``.

Registering the same training run twice returns the same version: versions are found
by their run id before one is created, and a race between two registrations is
resolved after the fact (the lowest version wins; the other is deleted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rxvision.errors import ConfigError
from rxvision.registry.aliases import (
    UNSET,
    AliasChange,
    AliasRoles,
    Unset,
    VersionInfo,
)
from rxvision.registry.config import RegistryConfig
from rxvision.registry.gates import (
    ChampionBaseline,
    EvalSummary,
    GateReport,
    compare_on_same_images,
    evaluate_gates,
)
from rxvision.registry.lineage import (
    PAIRS_TAG,
    TAG_PREFIX,
    VersionMetadata,
    describe_pairs,
    discover_metadata,
    eval_split_id,
    summary_pairs,
)
from rxvision.registry.sources import model_classes, resolve_source

log = logging.getLogger(__name__)

Comparator = Callable[[str], Mapping[str, float]]
"""Score a model URI on the challenger's test images: the gate metrics (``test_top1``...)
and ``"images"``, the number of images scored. Called for the champion's pinned version
(``models:/name/N``) and for the challenger's ``model_uri``, so that both go through the
same scoring path on the same images, e.g.
``lambda uri: rxvision.serving.evaluation.evaluate_model(uri, test_dir, prefix="test_")``."""

CHAMPION_TAG = f"{TAG_PREFIX}gate.champion_version"  # the champion a version was judged against
NO_CHAMPION = "none"


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

    @cached_property
    def roles(self) -> AliasRoles:
        """The challenger/champion/fallback aliases of this model."""
        return AliasRoles(self.client, self.name, self.config.aliases)

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
        source, run_id, model_id = resolve_source(self.client, model_uri)
        existing = self._versions_of_run(run_id)
        if existing:
            version = str(existing[0].version)
            log.info("run %s is already %s version %s", run_id, self.name, version)
            self.last_champion_version = self._judged_champion(existing[0])
            return version
        meta = (metadata or VersionMetadata()).filled_from(discover_metadata(self.client, run_id))
        if classes is None:
            classes = model_classes(self.client, source, model_id)
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
        source, run_id, model_id = resolve_source(self.client, model_uri)
        meta = discover_metadata(self.client, run_id)
        if classes is None:
            classes = model_classes(self.client, source, model_id)
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
            return self.roles.alias_version(self.config.aliases.champion)
        return None if recorded == NO_CHAMPION else recorded

    # --- aliases (moved by ``roles``) -----------------------------------------------------

    def get_alias(self, alias: str) -> VersionInfo | None:
        """The version an alias points at, or None."""
        return self.roles.get_alias(alias)

    def promote(
        self, version: str | None = None, *, expected_champion: str | Unset | None = UNSET
    ) -> AliasChange:
        """Make ``version`` (default: the challenger) the champion; the old one the fallback
        (compare-and-set on ``expected_champion``: see ``AliasRoles.promote``)."""
        return self.roles.promote(version, expected_champion=expected_champion)

    def rollback(self) -> AliasChange:
        """Make the fallback the champion again; the rolled-back version loses its alias."""
        return self.roles.rollback()

    def list_versions(self) -> list[VersionInfo]:
        """Every version, newest first, with its aliases."""
        return self.roles.list_versions()


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
