"""A circuit breaker over the primary model's outcomes.

Closed: the primary model scores. Each scored image is an outcome (success, or failure:
the model raised, or gave non-finite logits). When the error rate over the last
``window`` outcomes reaches ``error_rate`` (with at least ``min_calls`` outcomes seen),
or the model cannot be loaded at all (``trip``), the breaker opens: scoring goes to the
fallback model. With ``cooldown_s`` set, an open breaker lets one trial batch through to
the primary after the cool-down (half-open): success closes it, failure opens it again.
Without it (the default for a batch job) it stays open until the end of the run.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

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


class CircuitBreaker:
    """Sliding-window error rate over the primary model's outcomes."""

    def __init__(
        self,
        config: CircuitConfig | None = None,
        *,
        on_open: OpenListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or CircuitConfig()
        self.on_open = on_open
        self.clock = clock
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
            self.state = CircuitState.HALF_OPEN
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

    def _open(self, reason: str) -> None:
        self.state = CircuitState.OPEN
        self.opened_at = self.clock()
        self.reason = reason
        self.trips += 1
        log.error("circuit open: %s; scoring with the fallback model", reason)
        if self.on_open is not None:
            self.on_open(reason)

    def _close(self) -> None:
        self.state = CircuitState.CLOSED
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
        }
