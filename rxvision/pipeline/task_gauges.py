"""Gauges a nightly task sends once it is done (files validated, images per second...)."""

from __future__ import annotations

import os


def send_gauges(scope: str, values: dict[str, float | int | None]) -> None:
    """Gauges ``rxvision.<scope>.<name>`` to ``STATSD_HOST`` (a no-op without one)."""
    import statsd

    host = os.environ.get("STATSD_HOST")
    if not host:
        return
    client = statsd.StatsClient(host, int(os.environ.get("STATSD_PORT") or 8125), prefix="rxvision")
    with client.pipeline() as pipe:
        for name, value in values.items():
            if value is not None:
                pipe.gauge(f"{scope}.{name}", float(value))
