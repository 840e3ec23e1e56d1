"""The alert rules and the Grafana dashboard, checked with Prometheus's own tools.

Why it exists: rules and dashboards rot silently when a metric is renamed. Here
``promtool check rules`` parses the rules, ``promtool test rules`` runs their unit
tests (every alert silent before its ``for:`` and firing after, with its labels and
rendered annotations), and every metric a rule or a panel names must be one feddns
exports (``observe.families``). The alerts docs/operations.md lists must be the
file's. A real Prometheus evaluating both against a real feddns is
``tests/integration/test_prometheus.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from feddns.observe.families import METRICS
from tests import prometheus

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "config" / "grafana" / "feddns-dashboard.json"
DOCS = REPO / "docs" / "operations.md"

needs_promtool = pytest.mark.skipif(prometheus.missing() is not None,
                                    reason=prometheus.missing() or "")


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(prometheus.RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def panel_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (feddns_* and process_*)."""
    return {re.sub(r"_(bucket|count|sum)$", "", name)
            for name in re.findall(r"\b((?:feddns|process)_[a-z_]+)", expr)}


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run([prometheus.PROMTOOL, "check", "rules", str(prometheus.RULES)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@needs_promtool
def test_every_alert_passes_its_promtool_unit_tests() -> None:
    done = subprocess.run([prometheus.PROMTOOL, "test", "rules", prometheus.RULE_TESTS.name],
                          cwd=prometheus.RULE_TESTS.parent, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", prometheus.RULE_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in rules()}


def test_the_rules_and_the_panels_read_only_metrics_feddns_exports() -> None:
    known = {m.name.removesuffix("_total") for m in METRICS} | {m.name for m in METRICS}
    known |= {"process_resident_memory_bytes", "process_cpu_seconds_total"}
    for rule in rules():
        assert metric_names(rule["expr"]) <= known, rule["alert"]
    for title, expr in panel_exprs():
        assert metric_names(expr) <= known, title


def test_the_alerts_the_docs_list_are_the_rules_file() -> None:
    listed = set(re.findall(r"^\| `(Feddns\w+)` \|", DOCS.read_text(), flags=re.M))
    assert listed == {rule["alert"] for rule in rules()}


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_the_dashboard_has_unique_ids_a_place_for_each_panel_and_a_query_each() -> None:
    board = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "instance"}
