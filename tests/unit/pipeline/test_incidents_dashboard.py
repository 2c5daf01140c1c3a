"""The incidents dashboard queries the gauge the alert sinks send, by the name
statsd_exporter gives it (no mapping rule claims it: dots become underscores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from dashboard_metrics import glob_to_regex, load_mappings, promql_selectors

from rxvision.pipeline.alerts import OPEN_GAUGE

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "infra" / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "rxvision-incidents.json"


def test_the_panels_query_the_open_incidents_gauge() -> None:
    prefix = yaml.safe_load((REPO / "configs" / "pipeline.yaml").read_text())["statsd_prefix"]
    sent = f"{prefix}.{OPEN_GAUGE}"
    assert sent == "rxvision.incidents.open"
    rules = load_mappings(COMPOSE / "statsd-mapping.yml")
    assert not any(glob_to_regex(r.match).fullmatch(sent) for r in rules)
    exported = sent.replace(".", "_")

    dashboard = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Open incidents", "Open incidents over time"} <= titles
    metrics = {
        s.metric
        for p in dashboard["panels"]
        for t in p["targets"]
        for s in promql_selectors(t["expr"])
    }
    assert metrics == {exported}
    ds = yaml.safe_load(
        (COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {ds["datasources"][0]["uid"]}
    assert dashboard["uid"] != json.loads((DASHBOARD.parent / "rxvision.json").read_text())["uid"]
