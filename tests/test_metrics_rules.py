"""The alert rules and the dashboard queries, checked by the real promtool (Debian's `prometheus`
package: scripts/prometheus-tools.sh; `make test` installs it where it is missing).

The rules are taken from the chart's rendered PrometheusRule, so what is tested is what ships;
tests/prometheus/alert-rules.test.yaml holds a firing and a quiet case for every alert.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_render import CHART_DIR, render
from flows.metrics.families import FAMILIES
from helpers import REPO

pytestmark = pytest.mark.chart

TESTS = REPO / "tests" / "prometheus" / "alert-rules.test.yaml"
DASHBOARD = CHART_DIR / "dashboards" / "ecommerce-etl.json"
# the values the promtool cases were written for (release etl, namespace data)
RULE_VALUES = {"metrics": {"enabled": True, "prometheusRule": {"force": True, "alertLabels": {"team": "data"}}}}


@pytest.fixture(scope="module")
def promtool() -> str:
    done = subprocess.run([str(REPO / "scripts" / "prometheus-tools.sh"), "promtool"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"no promtool ({done.stderr.strip()}); `make test` installs it")
    return done.stdout.strip()


def rule_groups(values: dict) -> list[dict]:
    (rule,) = [d for d in render(values) if d["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


def run_rule_tests(promtool: str, values: dict, folder: Path) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(values)}, sort_keys=False))
    shutil.copy(TESTS, folder / TESTS.name)
    return subprocess.run([promtool, "test", "rules", TESTS.name], cwd=folder, capture_output=True, text=True)


def test_every_alert_rule_passes_its_promtool_tests(promtool, tmp_path):
    done = run_rule_tests(promtool, RULE_VALUES, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    checked = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0 and "SUCCESS: 8 rules found" in checked.stdout, checked.stdout + checked.stderr


def test_each_alert_has_a_firing_and_a_quiet_case():
    alerts = {r["alert"] for g in rule_groups(RULE_VALUES) for r in g["rules"]}
    assert alerts == {
        "EcommerceEtlDataStale",
        "EcommerceEtlFileFailed",
        "EcommerceEtlQuarantineHigh",
        "EcommerceEtlRunsWaiting",
        "EcommerceEtlPrefectServerDown",
        "EcommerceEtlWorkerAbsent",
        "EcommerceEtlMetricsUnavailable",
        "EcommerceEtlPostgresVolumeFull",
    }
    cases = [c for t in yaml.safe_load(TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == alerts and quiet == alerts, (alerts - firing, alerts - quiet)


def test_the_cases_follow_the_values_so_they_can_fail(promtool, tmp_path):
    """Moved thresholds break exactly the cases that sit on them: the tests read the rendered rules."""
    values = json.loads(json.dumps(RULE_VALUES))
    values["metrics"]["staleAfter"] = "27h"
    values["metrics"]["prometheusRule"].update({"quarantineRatio": 0.03, "volumeFullRatio": 0.9})
    done = run_rule_tests(promtool, values, tmp_path)
    assert done.returncode != 0
    failed = set(re.findall(r"alertname: (\w+)", done.stdout + done.stderr))
    expected = {"EcommerceEtlDataStale", "EcommerceEtlQuarantineHigh", "EcommerceEtlPostgresVolumeFull"}
    assert failed == expected, done.stdout + done.stderr
    # without the in-chart PostgreSQL there is no volume rule
    groups = rule_groups(
        {
            **RULE_VALUES,
            "postgresql": {"enabled": False},
            "externalDatabase": {"host": "db.example", "existingSecret": "db"},
        }
    )
    assert "EcommerceEtlPostgresVolumeFull" not in {r["alert"] for g in groups for r in g["rules"]}


# --- the dashboard ------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(board: dict, namespace: str = "data") -> dict[str, str]:
    """panel title (and refId) -> PromQL, with the dashboard's $namespace variable filled in."""
    out = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out[f"{panel['title']} ({target['refId']})"] = target["expr"].replace("$namespace", namespace)
    return out


def test_dashboard_structure():
    board = dashboard()
    assert board["uid"] == "ecommerce-etl" and board["title"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["refId"] and target["expr"]
            assert 'namespace="$namespace"' in target["expr"], (panel["title"], "filtered to the chosen release")
    # what the issue asks to see: freshness, rows per day, quarantine by reason, runs by state, durations
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in (
        "last successful load",
        "rows added per day",
        "quarantined rows by reason",
        "runs by state",
        "duration",
    ):
        assert topic in titles, topic
    # every series it reads is one the exporter serves (or Prometheus' own `up`)
    used = {m for q in dashboard_queries(board).values() for m in re.findall(r"\b(ecommerce_etl_\w+|up)\{", q)}
    assert used and used <= set(FAMILIES) | {"up"}, used - set(FAMILIES)


def test_dashboard_ships_in_a_configmap_for_the_grafana_sidecar():
    docs = render({"metrics": {"enabled": True, "dashboard": {"annotations": {"grafana_folder": "Data"}}}})
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "ecommerce-etl.json" in (d.get("data") or {})]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Data"
    assert json.loads(cm["data"]["ecommerce-etl.json"]) == dashboard()
    off = render({"metrics": {"enabled": True, "dashboard": {"enabled": False}}})
    assert not [d for d in off if d["kind"] == "ConfigMap" and "ecommerce-etl.json" in (d.get("data") or {})]


def test_every_dashboard_query_parses_in_promtool(promtool, tmp_path):
    """promtool parses each query as the expression of a recording rule (the kind test runs them
    against a real Prometheus and wants series back)."""
    queries = dashboard_queries(dashboard())
    rules = [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries.values())]
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", "queries.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout
    # and promtool does refuse a broken query
    (tmp_path / "broken.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "x:y", "expr": "sum by (a (up)"}]}]})
    )
    assert subprocess.run([promtool, "check", "rules", "broken.yaml"], cwd=tmp_path, capture_output=True).returncode


def test_the_chart_readme_documents_every_metric_and_every_alert():
    readme = (CHART_DIR / "README.md").read_text()
    section = readme.split("## Monitoring with Prometheus", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in FAMILIES if f"`{name}`" not in section]
    assert missing == [], missing
    alerts = {r["alert"] for g in rule_groups(RULE_VALUES) for r in g["rules"]}
    assert [a for a in sorted(alerts) if f"`{a}`" not in section] == []
