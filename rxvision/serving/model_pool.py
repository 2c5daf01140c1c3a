"""The model pool: the primary and fallback models behind a circuit breaker.

Each model is loaded when first needed and gets its runtime and batch size on the first
batch it scores. The primary sits behind a circuit breaker (``rxvision.serving.circuit``):
when its error rate over a sliding window passes the threshold, the ``fallback`` alias
scores instead. When it cannot be loaded, the fallback scores only if the caller allows
it (``fallback_on_load_failure``: the CLI, or an Airflow task's last try); otherwise
``PrimaryUnavailable`` is raised with nothing committed, so a transient failure (a
download timeout) is retried rather than committing a whole shard scored by the
fallback. Alerts go to statsd.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rxvision.errors import RxVisionError
from rxvision.serving.batch_tuning import BatchSizeChoice, choose_batch_size
from rxvision.serving.circuit import CircuitBreaker
from rxvision.serving.errors import PrimaryUnavailable, ScoringError
from rxvision.serving.metrics import StatsdSink
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.model_loading import load_model, resolve_model
from rxvision.serving.predictions import FALLBACK, PRIMARY, REASON_CHARS
from rxvision.serving.predictors import Predictor, resolve_device
from rxvision.serving.runtime_selection import PredictorOptions, select_predictor

if TYPE_CHECKING:
    import torch

    from rxvision.serving.scoring_config import ScoringConfig

log = logging.getLogger(__name__)


ModelLoader = Callable[[str], LoadedModel]


def fallback_for(model_uri: str, alias: str) -> str | None:
    """``models:/name@<alias>`` for a registry URI of ``name``; None for other URIs."""
    if not model_uri.startswith("models:/") or model_uri.startswith("models:/m-"):
        return None
    name = model_uri.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
    fallback = f"models:/{name}@{alias}"
    return None if fallback == model_uri else fallback


def pin_model_uri(model_uri: str, tracking_uri: str | None = None) -> str:
    """An alias URI pinned to the version it points at now (every shard of a run then
    uses one version even if a promotion lands mid-run); other URIs unchanged, and an
    alias that does not resolve is left for the loader to fail on (and fall back)."""
    if "@" not in model_uri:
        return model_uri
    from mlflow.tracking import MlflowClient

    try:
        return resolve_model(model_uri, MlflowClient(tracking_uri)).pinned_uri
    except RxVisionError as exc:
        log.warning("cannot pin %s: %s", model_uri, exc)
        return model_uri


@dataclass
class _Slot:
    """One role of the pool: its URI, and once used its model, runtime and batch size."""

    uri: str | None
    loaded: LoadedModel | None = None
    predictor: Predictor | None = None
    failure: str | None = None
    batch: BatchSizeChoice | None = None


class ModelPool:
    """The primary and fallback models, each loaded when first needed, behind a breaker.

    ``fallback_on_load_failure``: whether a primary that cannot be loaded is replaced by
    the fallback (True: the CLI, or an Airflow task's last try) or raises
    ``PrimaryUnavailable`` (an earlier try: the retry loads it again).
    """

    def __init__(
        self,
        primary_uri: str,
        fallback_uri: str | None,
        config: ScoringConfig,
        *,
        sink: StatsdSink | None = None,
        loader: ModelLoader | None = None,
        fallback_on_load_failure: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.fallback_on_load_failure = fallback_on_load_failure
        self.sink = sink or StatsdSink()
        self.loader = loader or (lambda uri: load_model(uri, tracking_uri=config.tracking_uri))
        self.slots = {PRIMARY: _Slot(primary_uri), FALLBACK: _Slot(fallback_uri)}
        self.breaker = CircuitBreaker(
            config.circuit,
            on_open=lambda reason: self.sink.alert("circuit_open", reason),
            on_switch=self._switched,
            clock=clock,
        )
        self.options = PredictorOptions(
            device=resolve_device(config.device),
            precision=config.precision,
            tolerance=config.parity_tolerance,
            probe=config.probe_runtimes,
            tracking_uri=config.tracking_uri,
        )

    def _switched(self, event: dict[str, Any]) -> None:
        """Log and count a breaker switch (``circuit.open``, ``.half_open``, ``.closed``)."""
        log.warning(
            "circuit %s -> %s: %s scores from now on (%s)",
            event["from"],
            event["to"],
            event["scoring"],
            event["reason"],
        )
        self.sink.event(f"circuit.{event['to']}")

    def model(self, role: str) -> LoadedModel | None:
        """The model of ``role`` (loaded on first call), or None when it cannot load."""
        slot = self.slots[role]
        if slot.loaded is not None or slot.failure is not None or slot.uri is None:
            return slot.loaded
        try:
            slot.loaded = self.loader(slot.uri)
        except Exception as exc:  # any load failure: the other model takes over
            failure = f"{type(exc).__name__}: {exc}"
            if role == PRIMARY and not self.fallback_on_load_failure:
                # a download timeout must not cost a whole shard its champion: raise, with
                # nothing recorded or committed, and let the task's retry load it again
                log.error(
                    "cannot load primary model %s: %s; not the last try: failing the try "
                    "so that it is retried (the fallback scores only on the last try)",
                    slot.uri,
                    failure,
                )
                raise PrimaryUnavailable(
                    f"cannot load primary model {slot.uri}: {failure} (not the last try: "
                    "retried, the fallback scores only on the last try)"
                ) from exc
            slot.failure = failure
            log.error("cannot load %s model %s: %s", role, slot.uri, slot.failure)
            if role == PRIMARY:
                log.error(
                    "scoring with the fallback model %s instead of %s (each row says so in "
                    "fallback_reason)",
                    self.slots[FALLBACK].uri,
                    slot.uri,
                )
                self.sink.alert("primary_load_failed", slot.failure)
                self.breaker.trip(f"load_failed: {slot.failure}", permanent=True)
        return slot.loaded

    def fallback_reason(self) -> str:
        """Why the fallback scores now: the primary did not load, or the breaker is open."""
        failure = self.slots[PRIMARY].failure
        if failure is not None:
            return f"primary_load_failed: {failure}"[:REASON_CHARS]
        return f"circuit_open: {self.breaker.reason or 'open'}"[:REASON_CHARS]

    def choose(self) -> str:
        """The role to score the next batch: the primary while the breaker allows it."""
        if self.breaker.allow() and self.model(PRIMARY) is not None:
            return PRIMARY
        if self.model(FALLBACK) is not None:
            return FALLBACK
        primary, fallback = self.slots[PRIMARY], self.slots[FALLBACK]
        raise ScoringError(
            f"no model can score: primary {primary.uri} ({primary.failure or self.breaker.reason}),"
            f" fallback {fallback.uri or 'not configured'} ({fallback.failure or 'n/a'})"
        )

    def expected(self) -> LoadedModel:
        """The model expected to score (primary, else fallback): images are prepared
        under its preprocessing contract."""
        return self.get(self.choose())

    def get(self, role: str) -> LoadedModel:
        """A model known to be loaded."""
        loaded = self.model(role)
        if loaded is None:
            raise ScoringError(f"{role} model is not available")
        return loaded

    def predictor(self, role: str, sample: torch.Tensor) -> Predictor:
        """The role's runtime, picked on the first batch it scores."""
        slot = self.slots[role]
        if slot.predictor is None:
            loaded = self.get(role)
            slot.predictor = select_predictor(loaded, self.config.runtimes, sample, self.options)
            slot.batch = choose_batch_size(
                self.config.batch_size,
                loaded.ref.tags,
                slot.predictor.runtime,
                slot.predictor.device,
            )
            log.info(
                "%s model %s scores in batches of %d with %s on %s: %s",
                role,
                loaded.label,
                slot.batch.size,
                slot.predictor.runtime,
                slot.predictor.device,
                slot.batch.reason,
            )
        return slot.predictor

    def batch_size(self) -> int:
        """How many images a batch collects: the chosen size of the model expected to
        score (the primary when it loaded); before its runtime is picked, the size for
        the first preferred runtime (the usual pick)."""
        slot = self.slots[PRIMARY] if self.slots[PRIMARY].loaded else self.slots[FALLBACK]
        if slot.batch is not None:
            return slot.batch.size
        tags = slot.loaded.ref.tags if slot.loaded else {}
        runtime = self.config.runtimes[0] if self.config.runtimes else "eager"
        return choose_batch_size(self.config.batch_size, tags, runtime, self.options.device).size

    def describe(self) -> dict[str, Any]:
        """Which models and runtimes served, for summaries."""
        out: dict[str, Any] = {}
        for role, slot in self.slots.items():
            out[role] = {
                "uri": slot.uri,
                "version": slot.loaded.label if slot.loaded else None,
                "runtime": slot.predictor.runtime if slot.predictor else None,
                "device": slot.predictor.device if slot.predictor else None,
                "batch_size": slot.batch.size if slot.batch else None,
                "batch_size_source": slot.batch.source if slot.batch else None,
                "load_error": slot.failure,
            }
        out["circuit"] = self.breaker.snapshot()
        return out
