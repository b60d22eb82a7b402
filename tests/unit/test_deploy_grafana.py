"""The Grafana dashboards in deploy/grafana ask only for what citywatch exports: every metric name in
every PromQL expression is one the roles' registry (core/metrics.py) serves at /metrics, with the
suffixes the exposition format adds, and every label an expression filters or groups by is one those
metrics carry.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from core.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
LABEL_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\{([^}]*)\}")
IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def all_series() -> dict[str, set[str]]:
    """Every series name the roles' registry can serve (with the exposition's _total, _bucket, _count,
    _sum and _created suffixes) -> the labels it carries."""
    metrics = Metrics()
    for attribute in vars(metrics).values():
        if isinstance(attribute, MetricWrapperBase):
            # A labelled metric has no series until a child exists; prometheus_client has no public
            # accessor for a metric's label names.
            names = attribute._labelnames
            if names:
                attribute.labels(*["x"] * len(names))
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner["title"], target["expr"]))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads."""
    stripped = re.sub(r'"[^"]*"', '""', expr)           # label values
    stripped = SELECTOR.sub("", stripped)                # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)       # range durations
    stripped = LABEL_CLAUSE.sub("", stripped)            # grouping labels
    return {name for name in IDENTIFIER.findall(stripped)
            if name.lower() not in KEYWORDS and not re.fullmatch(r"[0-9.e+-]+", name)}


def label_names(expr: str) -> set[str]:
    """The labels an expression filters or groups by."""
    labels = set()
    for _, names in LABEL_CLAUSE.findall(expr):
        labels.update(name.strip() for name in names.split(",") if name.strip())
    for matchers in SELECTOR.findall(expr):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return labels


@pytest.fixture(scope="module")
def series() -> dict[str, set[str]]:
    return all_series()


def test_there_are_dashboards_and_they_are_valid_json():
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"]
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_reads_only_exported_metrics_and_their_labels(path, series):
    problems = []
    for title, expr in expressions(json.loads(path.read_text())):
        names = metric_names(expr)
        if not names:
            problems.append(f"{title}: no metric in {expr!r}")
        unknown = sorted(name for name in names if name not in series)
        if unknown:
            problems.append(f"{title}: not exported: {unknown}")
        carried = set().union(*(series.get(name, set()) for name in names))
        missing_labels = sorted(label_names(expr) - carried)
        if missing_labels:
            problems.append(f"{title}: labels {missing_labels} not on {sorted(names)}")
    assert not problems


def test_the_dashboards_cover_rates_lag_dead_letters_violations_and_the_store_buffer(series):
    read = set()
    for path in DASHBOARDS:
        for _, expr in expressions(json.loads(path.read_text())):
            read |= metric_names(expr)
    for needed in ("citywatch_events_accepted_total", "citywatch_events_processed_total",
                   "citywatch_kafka_consumer_lag", "citywatch_dead_letters_total",
                   "citywatch_violation_changes_total", "citywatch_store_buffer_points",
                   "citywatch_store_spool_bytes", "citywatch_store_backpressure"):
        assert needed in read, f"no panel reads {needed}"


def test_the_dashboards_cover_the_http_api_and_webhook_delivery_health(series):
    read = set()
    for path in DASHBOARDS:
        for _, expr in expressions(json.loads(path.read_text())):
            read |= metric_names(expr)
    for needed in ("citywatch_http_requests_total", "citywatch_http_request_duration_seconds_bucket",
                   "citywatch_http_requests_in_flight", "citywatch_webhook_deliveries_total",
                   "citywatch_webhook_dead_letters_total", "citywatch_webhook_deliveries_pending",
                   "citywatch_webhook_attempt_duration_seconds_bucket"):
        assert needed in read, f"no panel reads {needed}"


def test_the_extraction_finds_metric_names_and_labels():
    # The parser above decides what the dashboards are checked against: it must see through functions,
    # selectors, ranges and grouping.
    expr = ('histogram_quantile(0.99, sum by (le) (rate(citywatch_process_batch_seconds_bucket[5m]))) '
            '/ on (job) sum(citywatch_x{topic=~"a.*", partition!="1"})')
    assert metric_names(expr) == {"citywatch_process_batch_seconds_bucket", "citywatch_x"}
    assert label_names(expr) == {"le", "job", "topic", "partition"}


def test_grafana_is_provisioned_from_the_dashboards_folder():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "citywatch.yaml").read_text())
    (only,) = provider["providers"]
    assert only["type"] == "file" and only["options"]["path"]
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus"
        for panel in dashboard["panels"]:
            if panel.get("targets"):
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
