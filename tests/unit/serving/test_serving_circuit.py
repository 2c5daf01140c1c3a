"""The circuit breaker's sliding window, thresholds, trips and half-open trials."""

from __future__ import annotations

import pytest

from rxvision.serving.circuit import CircuitBreaker, CircuitConfig, CircuitState

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_when_the_window_error_rate_reaches_the_threshold() -> None:
    alerts: list[str] = []
    breaker = CircuitBreaker(
        CircuitConfig(window=10, error_rate=0.5, min_calls=4), on_open=alerts.append
    )
    breaker.record(successes=2, failures=1)  # 3 outcomes: under min_calls
    assert breaker.allow() and breaker.state is CircuitState.CLOSED
    breaker.record(successes=1)  # 1/4 failed
    assert breaker.allow()
    breaker.record(failures=2)  # 3/6 failed: 0.5
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    assert len(alerts) == 1 and "error rate 0.50 over the last 6 images" in alerts[0]


def test_the_window_forgets_old_failures() -> None:
    breaker = CircuitBreaker(CircuitConfig(window=4, error_rate=0.75, min_calls=4))
    breaker.record(failures=2)  # 2 outcomes: under min_calls
    breaker.record(successes=1)
    breaker.record(successes=4)  # the two failures slid out of the window of 4
    assert breaker.error_rate == 0.0
    assert breaker.state is CircuitState.CLOSED


def test_min_calls_larger_than_the_window_still_opens() -> None:
    breaker = CircuitBreaker(CircuitConfig(window=3, error_rate=1.0, min_calls=10))
    breaker.record(failures=3)
    assert breaker.state is CircuitState.OPEN


def test_trip_opens_at_once_and_a_load_failure_stays_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CircuitConfig(cooldown_s=5), clock=clock)
    breaker.trip("load_failed: no such version", permanent=True)
    assert breaker.state is CircuitState.OPEN and breaker.reason.startswith("load_failed")
    clock.now = 100
    assert not breaker.allow()


def test_half_open_trial_closes_or_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        CircuitConfig(window=4, error_rate=0.5, min_calls=2, cooldown_s=10), clock=clock
    )
    breaker.record(failures=2)
    assert not breaker.allow()
    clock.now = 10
    assert breaker.allow() and breaker.state is CircuitState.HALF_OPEN
    breaker.record(failures=1)  # the trial failed
    assert breaker.state is CircuitState.OPEN and breaker.trips == 2
    clock.now = 25
    assert breaker.allow()
    breaker.record(successes=4)
    assert breaker.state is CircuitState.CLOSED and breaker.error_rate == 0.0
    assert breaker.snapshot()["trips"] == 2


def test_without_cooldown_an_open_breaker_stays_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(CircuitConfig(window=2, error_rate=0.5, min_calls=1), clock=clock)
    breaker.record(failures=1)
    clock.now = 1e9
    assert not breaker.allow()


def test_every_switch_is_an_event_with_time_states_and_reason() -> None:
    clock = Clock()
    heard: list[dict[str, object]] = []
    breaker = CircuitBreaker(
        CircuitConfig(window=2, error_rate=0.5, min_calls=1, cooldown_s=5),
        on_switch=heard.append,
        clock=clock,
        wall=lambda: 0.0,
    )
    breaker.record(failures=1)
    clock.now = 5
    assert breaker.allow()
    breaker.record(successes=2)
    assert heard == breaker.events
    assert [(e["from"], e["to"], e["scoring"]) for e in heard] == [
        ("closed", "open", "fallback"),
        ("open", "half_open", "primary"),
        ("half_open", "closed", "primary"),
    ]
    assert heard[0]["time"] == "1970-01-01T00:00:00.000+00:00"
    assert heard[1]["reason"] == "cool-down of 5 s over"
    assert breaker.snapshot()["switches"] == 3
