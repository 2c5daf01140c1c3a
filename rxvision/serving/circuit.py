"""A circuit breaker over the primary model's outcomes.

Closed: the primary model scores. Each scored image is an outcome (success, or failure:
the model raised, or gave non-finite logits). When the error rate over the last
``window`` outcomes reaches ``error_rate`` (with at least ``min_calls`` outcomes seen),
or the model cannot be loaded at all (``trip``), the breaker opens: scoring goes to the
fallback model. With ``cooldown_s`` set, an open breaker lets one trial batch through to
the primary after the cool-down (half-open): success closes it, failure opens it again.
Without it it stays open until the end of the run (``configs/serving.yaml`` sets one).

Every change of state is a switch event (``events``; ``on_switch`` hears each one): the
time, the state left and entered, which model scores from then on, and why. The scorer
logs them, counts them in statsd (``circuit.<state>``) and lists them in the run
summary (``circuit_events``): the hook for incident tracking (open: an incident opens or
repeats; closed: it resolves).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class CircuitState(StrEnum):
    """Where the breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitConfig(BaseModel):
    """When the breaker opens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(50, ge=1)
    error_rate: float = Field(0.5, gt=0, le=1)
    min_calls: int = Field(10, ge=1)
    cooldown_s: float | None = Field(None, gt=0)


OpenListener = Callable[[str], None]
SwitchListener = Callable[[dict[str, Any]], None]
# which model scores in each state (half-open: the primary's trial batch)
SCORES_WITH = {
    CircuitState.CLOSED: "primary",
    CircuitState.OPEN: "fallback",
    CircuitState.HALF_OPEN: "primary",
}


class CircuitBreaker:
    """Sliding-window error rate over the primary model's outcomes."""

    def __init__(
        self,
        config: CircuitConfig | None = None,
        *,
        on_open: OpenListener | None = None,
        on_switch: SwitchListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or CircuitConfig()
        self.on_open = on_open
        self.on_switch = on_switch
        # the cool-down runs on ``clock`` (monotonic); events are stamped with ``wall``
        self.clock = clock
        self.wall = wall
        self.events: list[dict[str, Any]] = []
        self.outcomes: deque[bool] = deque(maxlen=self.config.window)
        self.state = CircuitState.CLOSED
        self.opened_at: float | None = None
        self.reason: str | None = None
        self.trips = 0
        self.permanent = False

    @property
    def error_rate(self) -> float:
        """Failures / outcomes in the window (0 when empty)."""
        if not self.outcomes:
            return 0.0
        return self.outcomes.count(False) / len(self.outcomes)

    def allow(self) -> bool:
        """Whether the primary model may score the next batch."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN and self._cooled_down():
            self._switch(CircuitState.HALF_OPEN, f"cool-down of {self.config.cooldown_s:g} s over")
            log.info("circuit half-open: one trial batch for the primary model")
        return self.state is CircuitState.HALF_OPEN

    def _cooled_down(self) -> bool:
        cooldown = self.config.cooldown_s
        if cooldown is None or self.opened_at is None or self.permanent:
            return False
        return self.clock() - self.opened_at >= cooldown

    def record(self, successes: int = 0, failures: int = 0) -> None:
        """Record outcomes of the primary model (one per image)."""
        self.outcomes.extend([True] * successes + [False] * failures)
        if self.state is CircuitState.HALF_OPEN:
            if failures:
                self._open(f"trial batch failed ({failures} failures)")
            else:
                self._close()
            return
        if self.state is CircuitState.CLOSED and self._over_threshold():
            self._open(
                f"error rate {self.error_rate:.2f} over the last {len(self.outcomes)} images "
                f">= {self.config.error_rate:.2f}"
            )

    def _over_threshold(self) -> bool:
        enough = len(self.outcomes) >= min(self.config.min_calls, self.config.window)
        return enough and self.error_rate >= self.config.error_rate

    def trip(self, reason: str, *, permanent: bool = False) -> None:
        """Open at once; ``permanent`` (the primary model cannot even be loaded): no
        half-open trials, since a model that failed to load will not score."""
        self.permanent = self.permanent or permanent
        if self.state is not CircuitState.OPEN:
            self._open(reason)

    def _switch(self, to: CircuitState, reason: str) -> None:
        """Enter ``to`` and record the switch event."""
        event = {
            "time": datetime.fromtimestamp(self.wall(), UTC).isoformat(timespec="milliseconds"),
            "from": self.state.value,
            "to": to.value,
            "scoring": SCORES_WITH[to],
            "reason": reason,
        }
        self.state = to
        self.events.append(event)
        if self.on_switch is not None:
            self.on_switch(event)

    def _open(self, reason: str) -> None:
        self._switch(CircuitState.OPEN, reason)
        self.opened_at = self.clock()
        self.reason = reason
        self.trips += 1
        log.error("circuit open: %s; scoring with the fallback model", reason)
        if self.on_open is not None:
            self.on_open(reason)

    def _close(self) -> None:
        self._switch(CircuitState.CLOSED, "trial batch succeeded: the primary model is healthy")
        self.opened_at = None
        self.reason = None
        self.outcomes.clear()
        log.info("circuit closed: the primary model scores again")

    def snapshot(self) -> dict[str, object]:
        """State for the run summary."""
        return {
            "state": self.state.value,
            "error_rate": round(self.error_rate, 4),
            "window": len(self.outcomes),
            "trips": self.trips,
            "reason": self.reason,
            "switches": len(self.events),
        }
