"""The Grafana dashboard's queries, mapped back through statsd-mapping.yml to statsd names."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import pytest
import yaml
from dashboard_metrics import (
    Mapping,
    Selector,
    dashboard_metric_patterns,
    glob_to_regex,
    load_mappings,
    missing_dashboard_metrics,
    panel_requirements,
    promql_selectors,
    requirement,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "infra" / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "rxvision.json"
MAPPING = COMPOSE / "statsd-mapping.yml"

# Names the project really sends, as the statsd receiver recorded them in an e2e run
# (nightly DAG, asset-triggered scoring, SLA drill): one or more per dashboard panel.
EMITTED = {
    "rxvision.airflow.dagrun.duration.success.rxvision_nightly_retrain",
    "rxvision.airflow.dagrun.duration.success.rxvision_batch_scoring",
    "rxvision.airflow.dag.rxvision_nightly_retrain.train.duration",
    "rxvision.airflow.ti.finish.rxvision_nightly_retrain.train.success",
    "rxvision.airflow.ti.running.default.rxvision_nightly_retrain.train",
    "rxvision.task.duration.rxvision_nightly_retrain.train",
    "rxvision.task.success.rxvision_nightly_retrain.train",
    "rxvision.train.samples_per_s",
    "rxvision.train.fit_seconds",
    "rxvision.train.val_top1",
    "rxvision.train.test_top1",
    "rxvision.train.test_ece",
    "rxvision.validation.images_ok",
    "rxvision.validation.images_per_s",
    "rxvision.scoring.batch_ms",
    "rxvision.scoring.image_ms",
    "rxvision.scoring.images",
    "rxvision.scoring.batches.primary",
    "rxvision.scoring.shards.committed",
    "rxvision.scoring.shard.images_per_s",
    "rxvision.scoring.shard.error_rate",
    "rxvision.scoring.shard.fallback_count",
    *(f"rxvision.scoring.shard.latency.{s}.p{q}" for s in ("image", "batch") for q in (50, 95, 99)),
}


def test_mapping_is_valid_yaml_with_the_expected_rules() -> None:
    data = yaml.safe_load(MAPPING.read_text())
    assert data["defaults"]["observer_type"] == "histogram"
    rules = {m["match"]: m for m in data["mappings"]}
    expected = {
        "rxvision.airflow.dagrun.duration.*.*": ("airflow_dagrun_duration_seconds", "dag_id"),
        "rxvision.airflow.dag.*.*.duration": ("airflow_task_duration_seconds", "task_id"),
        "rxvision.airflow.ti.finish.*.*.*": ("airflow_ti_finish_total", "state"),
        "rxvision.task.duration.*.*": ("rxvision_task_duration_seconds", "task_id"),
        "rxvision.task.sla_miss.*.*": ("rxvision_task_sla_miss_total", "dag_id"),
        "rxvision.alerts.*.*.*": ("rxvision_alerts_total", "kind"),
        "rxvision.train.samples_per_s": ("rxvision_train_samples_per_second", None),
        "rxvision.scoring.*.latency.*.*": ("rxvision_scoring_latency_ms", "quantile"),
        "rxvision.scoring.*.error_rate": ("rxvision_scoring_error_ratio", "scope"),
        "rxvision.scoring.*.fallback_count": ("rxvision_scoring_fallback_rows", "scope"),
        "rxvision.scoring.image_ms": ("rxvision_scoring_image_latency_seconds", None),
    }
    for match, (name, label) in expected.items():
        assert rules[match]["name"] == name
        if label:
            assert label in rules[match]["labels"]
    for rule in data["mappings"]:
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["name"]), rule["name"]
        stars = rule["match"].split(".").count("*")
        for value in (rule.get("labels") or {}).values():
            for ref in re.findall(r"\$\{?(\d+)\}?", str(value)):
                assert 1 <= int(ref) <= stars, (rule["match"], value)
    # the more specific sla_miss rule comes before the task outcome rule it overlaps
    order = [m["match"] for m in data["mappings"]]
    assert order.index("rxvision.task.sla_miss.*.*") < order.index("rxvision.task.*.*.*")


def test_prefixes_match_what_the_project_sends() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "airflow.cfg")
    airflow_prefix = cfg.get("metrics", "statsd_prefix")
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__METRICS__STATSD_PREFIX"] == airflow_prefix
    pipeline = yaml.safe_load((REPO / "configs" / "pipeline.yaml").read_text())
    for rule in load_mappings(MAPPING):
        if rule.name.startswith("airflow_"):
            assert rule.match.startswith(airflow_prefix + ".")
        else:
            assert rule.match.startswith(pipeline["statsd_prefix"] + ".")


def test_glob_star_is_one_component() -> None:
    regex = glob_to_regex("rxvision.task.duration.*.*")
    assert regex.fullmatch("rxvision.task.duration.dag.task")
    assert not regex.fullmatch("rxvision.task.duration.dag.group.task")
    assert not regex.fullmatch("rxvision.task.duration.dag")


def test_promql_selectors() -> None:
    expr = (
        'sum by (dag_id, task_id) (rate(a_bucket{dag_id=~"$dag_id", state="success"}[5m]))'
        " / ignoring (le) (sum(rate(b_total[$__rate_interval])) or vector(0)) * 1000"
    )
    selectors = promql_selectors(expr)
    assert selectors == [
        Selector("a_bucket", {"state": "success"}, optional=False),
        Selector("b_total", {}, optional=True),
    ]
    assert promql_selectors("x or vector(0)") == [Selector("x", {}, optional=True)]
    assert promql_selectors("histogram_quantile(0.9, sum by (le) (rate(h_bucket[1m])))") == [
        Selector("h_bucket", {}, optional=False)
    ]


def test_label_matchers_narrow_the_glob() -> None:
    rules = [
        Mapping("p.*.latency.*.*", "lat_ms", {"scope": "$1", "series": "$2", "quantile": "$3"}),
        Mapping("p.*.timer", "t_seconds", {"scope": "${1}"}),
    ]
    req = requirement(Selector("lat_ms", {"scope": "shard", "quantile": "p99"}), rules)
    assert req.globs == ("p.shard.latency.*.p99",)
    assert requirement(Selector("t_seconds_bucket", {"scope": "run"}), rules).globs == (
        "p.run.timer",
    )


def test_every_panel_query_is_mapped() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    reqs = panel_requirements(DASHBOARD, MAPPING)  # raises on an unmapped metric
    titles = set(reqs)
    for wanted in (
        "DAG run duration",
        "Task duration",
        "SLA misses",
        "Training samples/s",
        "Scoring latency per image p50/p95/p99",
        "Scoring error rate",
        "Scoring fallback rate",
    ):
        assert wanted in titles
    assert all(reqs.values()), "every panel depends on some metric"
    patterns = dashboard_metric_patterns(DASHBOARD, MAPPING)
    assert all(patterns.values()), "every panel has at least one required metric"
    assert (
        "rxvision.scoring.shard.latency.image.*"
        in patterns["Scoring latency per image p50/p95/p99"]
    )
    assert patterns["Training samples/s"] == ["rxvision.train.samples_per_s"]
    # only events that may not happen are optional (SLA misses, errors, fallback, alerts)
    optional = {r.describe() for rs in reqs.values() for r in rs if r.optional}
    assert optional == {
        "rxvision.task.sla_miss.*.*",
        "rxvision.alerts.sla_miss.*.*",
        "rxvision.scoring.errors",
        "rxvision.scoring.fallback",
        "rxvision.scoring.alert.*",
    }
    # the datasource every query uses is the provisioned one
    ds = yaml.safe_load(
        (COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = ds["datasources"][0]["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert {p["datasource"]["uid"] for p in panels} == {uid}


def test_nothing_missing_when_everything_was_emitted() -> None:
    assert missing_dashboard_metrics(DASHBOARD, MAPPING, EMITTED) == {}


def test_a_metric_not_emitted_names_its_panel() -> None:
    missing = missing_dashboard_metrics(
        DASHBOARD, MAPPING, EMITTED - {"rxvision.train.samples_per_s"}
    )
    assert missing == {"Training samples/s": ["rxvision.train.samples_per_s"]}
    lacking_latency = {n for n in EMITTED if ".latency.image." not in n}
    missing = missing_dashboard_metrics(DASHBOARD, MAPPING, lacking_latency)
    assert missing == {
        "Scoring latency per image p50/p95/p99": ["rxvision.scoring.shard.latency.image.*"]
    }


def test_optional_metrics_are_never_reported() -> None:
    # no SLA miss, no scoring error, no fallback in EMITTED: the panels still pass
    assert not any("sla_miss" in n or n.endswith((".errors", ".fallback")) for n in EMITTED)
    assert "SLA misses" not in missing_dashboard_metrics(DASHBOARD, MAPPING, EMITTED)


def test_everything_missing_from_an_empty_record() -> None:
    missing = missing_dashboard_metrics(DASHBOARD, MAPPING, set())
    assert set(missing) == set(panel_requirements(DASHBOARD, MAPPING))
