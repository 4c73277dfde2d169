"""deploy/: the Prometheus alert rules and the Grafana dashboard, checked as promtool would
check the rules, and against the metrics Vigil really exports.

The exported names come from the collectors ``GET /metrics`` itself reads (their
``describe()``): the request counters of the web app, the store gauges and the worker
families of ``tasks.metrics``. A rule or a panel naming anything else fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from webapp import create_app
from webapp.metrics import metrics, sample_names

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "vigil-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "vigil-dashboard.json"

DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
SEVERITIES = {"critical", "warning"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not a function
    or an aggregation (followed by "("), a keyword, a label inside {...}, by (...), on
    (...) and the like, nor part of a number or a range [5m]."""
    text = STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 0.5
            continue
        if re.match(r"\s*\(", text[match.end() :]) or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def balanced(expr: str) -> bool:
    depth = 0
    for char in STRING.sub('""', expr):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


@pytest.fixture(scope="module")
def exported() -> set[str]:
    app = create_app({"TESTING": True})
    return sample_names(metrics(app).describe())


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert set(group) <= {"name", "rules", "interval"} and group["name"], group
        assert group["rules"], group["name"]
        found += group["rules"]
    return found


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def test_the_expression_reader_finds_metric_names_and_nothing_else():
    expr = (
        'histogram_quantile(0.99, max by (tier, le) (rate(a_bucket{x="y (z)"}[10m]))) > 1e3'
        " unless on (queue) (b_total offset 5m) and ignoring (i) c / d:recorded"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d:recorded"}
    assert balanced(expr) and not balanced("rate(x[5m]")


def test_every_alert_rule_is_complete_and_well_formed(rules):
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), names
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"Vigil[A-Za-z0-9]+", rule["alert"])
        assert isinstance(rule["expr"], str) and balanced(rule["expr"]), rule["alert"]
        assert DURATION.fullmatch(str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert all(isinstance(v, str) and v.strip() for v in rule["annotations"].values())


def test_the_rules_cover_what_operators_are_paged_for(rules):
    used = {rule["alert"]: metric_names(rule["expr"]) for rule in rules}
    assert {"vigil_celery_queue_length", "vigil_queue_wait_seconds_count"} <= used[
        "VigilQueueNotConsumed"
    ]
    assert "vigil_candidates_pending" in used["VigilCandidateBacklogGrowing"]
    assert "vigil_events_settled_total" in used["VigilAnalysisFailureRate"]
    assert "vigil_pushes_total" in used["VigilPushFailures"]
    assert "vigil_event_analysis_latency_seconds_bucket" in used["VigilSubmitToAnalysedSlow"]


def test_every_rule_names_only_metrics_vigil_exports(rules, exported):
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], sorted(names - exported))


def test_the_dashboard_is_valid_and_names_only_exported_metrics(exported):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"  # no datasource id baked in
    all_panels = list(panels(dashboard))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    graphs = [p for p in all_panels if p["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and balanced(target["expr"]), (panel["title"], target["expr"])
            assert names <= exported, (panel["title"], sorted(names - exported))


def test_the_dashboard_shows_every_family_an_alert_relies_on(rules, exported):
    dashboard = json.loads(DASHBOARD.read_text())
    shown = {
        name
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        for name in metric_names(target["expr"])
    }
    alerted = set().union(*(metric_names(rule["expr"]) for rule in rules))

    def family(name: str) -> str:
        return re.sub(r"_(bucket|count|sum|total)$", "", name)

    assert {family(n) for n in alerted} <= {family(n) for n in shown}
