"""Which statsd names each Grafana panel of the compose stack depends on.

The dashboard (``infra/compose/grafana/dashboards/rxvision.json``) queries Prometheus
metrics that prometheus statsd_exporter makes from statsd names through its mapping
(``infra/compose/statsd-mapping.yml``). This module reads each panel target's PromQL,
takes the metric names out of it, and maps each one back through the mapping's ``match``
globs to the statsd names it is made from, so that a test can check the dashboard
against what the project really sends (the statsd receiver's record of an e2e run).

- A PromQL equality matcher on a label the mapping fills from a glob capture narrows
  that capture: ``rxvision_scoring_latency_ms{scope="shard"}`` needs
  ``rxvision.scoring.shard.latency.*.*``, not any scope. Regex matchers narrow nothing.
- Histogram and summary series (``_bucket``, ``_sum``, ``_count``) map to their timer.
- ``(...) or vector(0)`` marks what it wraps as optional: counters the code sends only
  when something happens (an SLA miss, a fallback row, a scoring error). Optional
  metrics must still be mapped, but need not have been emitted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# suffixes Prometheus adds to an observer's series (statsd timers are histograms here)
OBSERVER_SUFFIXES = ("_bucket", "_sum", "_count")
# words that look like metric names in PromQL but are not
PROMQL_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)
# keywords whose parenthesised argument is a list of label names
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<braces>\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^{}"'])*\})
    | (?P<range>\[[^\]]*\])
    | (?P<number>\d[\w.]*)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<other>\S)
    """,
    re.VERBOSE,
)
_MATCHER = re.compile(r"""([A-Za-z_]\w*)\s*(=~|!=|!~|=)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')""")
_CAPTURE = re.compile(r"^\$\{?(\d+)\}?$")


class UnmappedMetricError(ValueError):
    """A dashboard query names a metric that no mapping rule produces."""


@dataclass(frozen=True)
class Selector:
    """One metric selector in a PromQL expression."""

    metric: str
    equals: dict[str, str] = field(default_factory=dict)
    optional: bool = False


@dataclass(frozen=True)
class Mapping:
    """One statsd_exporter mapping rule (glob rules only)."""

    match: str
    name: str
    labels: dict[str, str]

    def glob_for(self, equals: dict[str, str]) -> str:
        """The rule's glob with captures fixed by the selector's equality matchers."""
        parts = self.match.split(".")
        stars = [i for i, part in enumerate(parts) if part == "*"]
        for label, value in self.labels.items():
            capture = _CAPTURE.match(str(value))
            if capture and label in equals:
                index = int(capture.group(1)) - 1
                if 0 <= index < len(stars):
                    parts[stars[index]] = equals[label]
        return ".".join(parts)

    def fixed_labels_agree(self, equals: dict[str, str]) -> bool:
        """False when a selector's matcher contradicts one of the rule's constant labels."""
        for label, value in self.labels.items():
            if not _CAPTURE.match(str(value)) and label in equals and equals[label] != value:
                return False
        return True


@dataclass(frozen=True)
class Requirement:
    """The statsd names one selector needs: any name matching any of ``globs``."""

    globs: tuple[str, ...]
    optional: bool

    def describe(self) -> str:
        return " | ".join(self.globs)

    def satisfied_by(self, emitted_names: Iterable[str]) -> bool:
        regexes = [glob_to_regex(g) for g in self.globs]
        return any(r.fullmatch(name) for name in emitted_names for r in regexes)


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """A statsd_exporter glob as a regex: ``*`` is one dot-free component."""
    return re.compile(r"[^.]+".join(re.escape(part) for part in glob.split("*")))


def load_mappings(mapping_path: Path | str) -> list[Mapping]:
    """The glob rules of a statsd_exporter mapping file, in file order."""
    data = yaml.safe_load(Path(mapping_path).read_text())
    default_type = (data.get("defaults") or {}).get("match_type", "glob")
    rules = []
    for raw in data.get("mappings") or []:
        if raw.get("match_type", default_type) != "glob" or raw.get("action") == "drop":
            continue
        labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
        rules.append(Mapping(str(raw["match"]), str(raw["name"]), labels))
    return rules


def _tokens(expr: str) -> list[tuple[str, str, int]]:
    return [(m.lastgroup or "", m.group(), m.start()) for m in _TOKEN.finditer(expr)]


def _matching_open(tokens: list[tuple[str, str, int]], close_index: int) -> int:
    depth = 0
    for i in range(close_index, -1, -1):
        kind = tokens[i][0]
        if kind == "close":
            depth += 1
        elif kind == "open":
            depth -= 1
            if depth == 0:
                return i
    return 0


def _optional_spans(tokens: list[tuple[str, str, int]]) -> list[tuple[int, int]]:
    """Token index spans wrapped as ``X or vector(0)``."""
    spans = []
    for i, (kind, text, _) in enumerate(tokens):
        if kind != "ident" or text != "or" or i == 0:
            continue
        tail = [t[1] for t in tokens[i + 1 : i + 5]]
        if tail != ["vector", "(", "0", ")"]:
            continue
        prev = i - 1
        if tokens[prev][0] == "close":
            spans.append((_matching_open(tokens, prev), prev))
        else:
            start = prev - 1 if tokens[prev][0] in {"braces", "range"} else prev
            spans.append((start, prev))
    return spans


def promql_selectors(expr: str) -> list[Selector]:
    """The metric selectors of a PromQL expression (functions, keywords and labels skipped)."""
    tokens = _tokens(expr)
    optional = _optional_spans(tokens)
    selectors = []
    skip_label_list = False
    depth_to_skip: int | None = None
    depth = 0
    for i, (kind, text, _) in enumerate(tokens):
        if kind == "open":
            depth += 1
            if skip_label_list:
                depth_to_skip, skip_label_list = depth, False
            continue
        if kind == "close":
            if depth_to_skip == depth:
                depth_to_skip = None
            depth -= 1
            continue
        if depth_to_skip is not None or kind != "ident":
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "", 0)
        if text in LABEL_LIST_KEYWORDS:
            skip_label_list = True
            continue
        # a function call, or an aggregation written ``sum by (label) (...)``
        called = nxt[0] == "open" or (nxt[0] == "ident" and nxt[1] in {"by", "without"})
        if text.lower() in PROMQL_KEYWORDS or called:
            continue
        equals = {}
        if nxt[0] == "braces":
            for label, op, value in _MATCHER.findall(nxt[1]):
                if op == "=":
                    equals[label] = value[1:-1]
        selectors.append(Selector(text, equals, any(start <= i <= end for start, end in optional)))
    return selectors


def _candidate_names(metric: str) -> list[str]:
    names = [metric]
    for suffix in OBSERVER_SUFFIXES:
        if metric.endswith(suffix):
            names.append(metric[: -len(suffix)])
    return names


def requirement(selector: Selector, mappings: list[Mapping]) -> Requirement:
    """The statsd globs a selector's metric is made from (in mapping-file order)."""
    for name in _candidate_names(selector.metric):
        rules = [m for m in mappings if m.name == name and m.fixed_labels_agree(selector.equals)]
        if rules:
            globs = tuple(dict.fromkeys(m.glob_for(selector.equals) for m in rules))
            return Requirement(globs, selector.optional)
    raise UnmappedMetricError(
        f"{selector.metric}: no rule in the statsd mapping produces this metric"
    )


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        if panel.get("type") == "row":
            yield from _panels(panel.get("panels") or [])
        else:
            yield panel


def panel_requirements(
    dashboard_path: Path | str, mapping_path: Path | str
) -> dict[str, list[Requirement]]:
    """Each panel's requirements (required and optional), by panel title.

    Raises ``UnmappedMetricError`` when a query names a metric the mapping cannot produce.
    """
    dashboard = json.loads(Path(dashboard_path).read_text())
    mappings = load_mappings(mapping_path)
    result: dict[str, list[Requirement]] = {}
    for panel in _panels(dashboard.get("panels") or []):
        reqs: list[Requirement] = []
        for target in panel.get("targets") or []:
            for selector in promql_selectors(str(target.get("expr", ""))):
                req = requirement(selector, mappings)
                if req not in reqs:
                    reqs.append(req)
        result[str(panel.get("title", f"panel {panel.get('id')}"))] = reqs
    return result


def dashboard_metric_patterns(
    dashboard_path: Path | str, mapping_path: Path | str
) -> dict[str, list[str]]:
    """The statsd globs each panel needs (required ones only; ``a | b`` means either)."""
    return {
        title: [r.describe() for r in reqs if not r.optional]
        for title, reqs in panel_requirements(dashboard_path, mapping_path).items()
    }


def missing_dashboard_metrics(
    dashboard_path: Path | str, mapping_path: Path | str, emitted_names: set[str]
) -> dict[str, list[str]]:
    """Panels whose required statsd metrics were not emitted: ``{panel title: [glob]}``.

    ``emitted_names`` is the set of full statsd names received, prefixes included (e.g.
    ``rxvision.task.duration.rxvision_nightly_retrain.train``,
    ``rxvision.airflow.dagrun.duration.success.rxvision_nightly_retrain``): the union of
    the keys of the ``counters``, ``gauges`` and ``timers`` sections of
    ``rxvision.stack.statsd_receiver.load_metrics(state_file)`` (what
    ``LocalStack.metrics()`` returns), e.g.
    ``{n for s in ("counters", "gauges", "timers") for n in metrics[s]}``.

    An empty dict means every panel has data for each of its required metrics. Metrics
    a query wraps in ``(...) or vector(0)`` are optional and never reported. Raises
    ``UnmappedMetricError`` if a query names a metric no mapping rule produces.
    """
    missing: dict[str, list[str]] = {}
    for title, reqs in panel_requirements(dashboard_path, mapping_path).items():
        lacking = [
            r.describe() for r in reqs if not r.optional and not r.satisfied_by(emitted_names)
        ]
        if lacking:
            missing[title] = lacking
    return missing


def emitted_names_from_metrics(metrics: dict[str, Any]) -> set[str]:
    """The statsd names in a ``load_metrics`` state (counters, gauges and timers)."""
    return {
        name for section in ("counters", "gauges", "timers") for name in metrics.get(section, {})
    }
