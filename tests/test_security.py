"""Security: checkov on the rendered chart (and the flow-run Job the worker builds from it),
credentials kept out of every output, identifiers that cannot inject SQL, and NetworkPolicies
that admit only the intended clients to Postgres.

checkov cannot share the test venv (it pins packaging<24, pytest 9 needs >=24), so it runs from
its own venv: CHECKOV, else .cache/checkov/bin/checkov (`make checkov`), else PATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from chart_render import VALUE_SETS, base_job_template, by_kind, ingress_allowed, pod_labels, pod_spec, render, strip_source
from checkov_scan import checkov_binary, scan_documents
from fault_tools import audit
from flows.load import ensure_schema, load_file
from flows.sample import write_sample
from flows.sql import Names
from helpers import CLI


def flow_run_job(docs: list[dict]) -> dict:
    """The worker's Job from the base job template, placeholders filled with the template's
    defaults (or dropped), so checkov also scans the pod that loads the data."""
    template = base_job_template(docs)
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}

    def fill(node):
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items() if fill(v) is not None}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str):
            whole = re.fullmatch(r"\{\{ (\w+) \}\}", node)
            if whole:
                return defaults.get(whole[1])
            return re.sub(r"\{\{ (\w+) \}\}", lambda m: str(defaults.get(m[1]) or "flow-run"), node)
        return node

    job = fill(template["job_configuration"]["job_manifest"])
    job["metadata"]["name"] = job["metadata"].pop("generateName", "flow-run-").rstrip("-")
    return job


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory) -> dict[str, tuple[list[dict], dict, dict]]:
    """checkov on the rendered chart of every value set the chart tests use, plus the flow-run Job
    the worker builds from its base job template: once as rendered, once with the chart's
    checkov.io/skip annotations removed. {value set: (docs, report, report without skips)}."""
    checkov = checkov_binary()
    if not checkov:
        pytest.skip("checkov not installed: `make checkov` (own venv under .cache/checkov) or set CHECKOV")
    docs = {name: [strip_source(d) for d in render(values)] + [flow_run_job(render(values))]
            for name, values in VALUE_SETS.items()}
    with_skips, without = scan_documents(checkov, docs, tmp_path_factory.mktemp("checkov"))
    for name in VALUE_SETS:  # every object was scanned
        assert len(with_skips[name]["resources"]) >= len(docs[name]) - 2, name
    return {name: (docs[name], with_skips[name], without[name]) for name in VALUE_SETS}


@pytest.mark.chart
def test_checkov_reports_no_failed_check_on_any_value_set(checkov_reports, record_property):
    failed = {name: sorted({(f["check_id"], f["resource"]) for f in report["failed"]})
              for name, (_, report, _) in checkov_reports.items()}
    record_property("checkov_value_sets", len(checkov_reports))
    record_property("checkov_passed", sum(len(r["passed"]) for _, r, _ in checkov_reports.values()))
    record_property("checkov_failed", sum(len(f) for f in failed.values()))
    record_property("checkov_skipped", sum(len(r["skipped"]) for _, r, _ in checkov_reports.values()))
    assert {name: f for name, f in failed.items() if f} == {}


@pytest.mark.chart
def test_every_checkov_skip_has_a_reason_and_hides_a_real_failure(checkov_reports):
    """The chart's checkov.io/skip annotations: each names its reason, and each is needed (without
    the annotations exactly the skipped checks fail), so none can hide a regression or go stale."""
    for name, (_, report, without) in checkov_reports.items():
        for check in report["skipped"]:
            reason = (check.get("check_result") or {}).get("suppress_comment") or ""
            assert len(reason) > 40, f"{name}: {check['check_id']} on {check['resource']} skipped without a reason"
        skipped = {(c["check_id"], c["resource"]) for c in report["skipped"]}
        assert skipped == {(c["check_id"], c["resource"]) for c in without["failed"]}, name
        assert skipped, f"{name}: nothing skipped? then the annotations were not read"


@pytest.mark.chart
def test_checkov_scanned_the_flow_run_job_and_it_passes_the_pod_checks(checkov_reports):
    def on_job(results):
        return [r for r in results if r["resource"].startswith("Job.") and "flow-run" in r["resource"]]

    _, report, _ = checkov_reports["default"]
    passed = {r["check_id"] for r in on_job(report["passed"])}
    # non-root, no privilege escalation, no capabilities, read-only root fs, seccomp, no token,
    # secrets as files
    assert {"CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_22", "CKV_K8S_31", "CKV_K8S_35"} <= passed
    assert on_job(report["failed"]) == []
    # pinned by digest and pulled Always, nothing left to skip on it
    _, production, _ = checkov_reports["production"]
    assert on_job(production["skipped"]) == [] and on_job(production["failed"]) == []


# --- credentials --------------------------------------------------------------------------------
async def _everything_prefect_kept() -> str:
    """Every flow run (with parameters), log and artifact on the Prefect server, as text."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runs = await client.read_flow_runs()
        artifacts = await client.read_artifacts()
        logs, page = [], None
        while page is None or len(page) == 200:  # the API pages at 200
            page = await client.read_logs(limit=200, offset=len(logs))
            logs += page
    return json.dumps([[r.model_dump(mode="json") for r in runs], [l.model_dump(mode="json") for l in logs],
                       [a.model_dump(mode="json") for a in artifacts]])


def test_credentials_never_reach_output_logs_or_artifacts(postgres, prefect_api, tmp_path):
    password, kaggle_key = postgres.password, "kaggle-KEY-5ec7e7-do-not-print"
    database = postgres.create_database("t_credentials")
    folder = tmp_path / "in"
    write_sample(folder, rows_per_file=200, files=("2019-Oct.csv",))
    (folder / "broken.csv").write_text("not,the,header\n")  # an error message travels too
    env = {**os.environ, **prefect_api.env, "ETL_DATA_DIR": str(tmp_path / "data"), "KAGGLE_USERNAME": "someone",
           "KAGGLE_KEY": kaggle_key, "DATABASE_URL": database, "PGPASSWORD": password}
    runs = [
        subprocess.run([CLI, "run", "--source", "local", "--path", str(folder), *extra], capture_output=True,
                       text=True, env=env, timeout=300)
        for extra in (["--json"], [])  # the JSON summary and the human table
    ]
    refused = subprocess.run(  # a connection error message: the URL holds a wrong password
        [CLI, "run", "--source", "local", "--path", str(folder), "--json",
         "--database-url", database.replace(password, password[::-1])],
        capture_output=True, text=True, env=env, timeout=300)
    assert [r.returncode for r in runs] == [1, 1] and refused.returncode == 2, [r.stderr[-1500:] for r in runs]
    assert json.loads(runs[0].stdout)["rows_loaded"] == 200  # the run really happened
    kept = asyncio.run(_everything_prefect_kept())
    assert "broken.csv" in kept and "wrong header" in kept  # the logs and artifacts were really read
    outputs = [r.stdout + r.stderr for r in [*runs, refused]] + [kept, Path(prefect_api.log_path).read_text()]
    for secret in (password, password[::-1], kaggle_key):
        leaked = [i for i, text in enumerate(outputs) if secret in text]
        assert not leaked, f"a credential leaked into outputs {leaked}"


# --- identifiers --------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, value", [
    ("ETL_TABLE", "events; drop table x"), ("ETL_TABLE", 'e"v'), ("ETL_TABLE", "Events"),
    ("ETL_SCHEMA", "public;--"), ("ETL_SCHEMA", "a b"), ("ETL_TABLE", "x" * 41), ("ETL_TABLE", ""),
])
def test_hostile_names_are_refused_before_any_sql(setting, value, postgres, prefect_server, tmp_path):
    database = postgres.create_database("t_names")
    env = {**os.environ, **prefect_server.env, "DATABASE_URL": database, setting: value,
           "ETL_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([CLI, "run", "--source", "sample", "--rows-per-file", "10"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2 and f"{setting}=" in done.stderr, done.stderr[-1500:]
    tables = postgres.run_sql("select count(*) from pg_class where relnamespace = 'public'::regnamespace", "t_names")
    assert tables.strip() == "0"


def test_reserved_words_as_names_are_quoted_everywhere(data_db, tmp_path):
    names = Names("order", "select")  # valid names that only work if every statement quotes them
    engine = sa.create_engine(data_db)
    try:
        ensure_schema(engine, names)
        (path,) = write_sample(tmp_path, rows_per_file=50, files=("2019-Oct.csv",))
        path.write_text(path.read_text() + "only,three,fields\n")
        assert (load_file(engine, names, path).rows_loaded, load_file(engine, names, path).status) == (50, "skipped")
    finally:
        engine.dispose()
    state = audit(data_db, names)
    assert state.counts("2019-Oct.csv") == (51, 50, 1) and state.problems == state.leftovers == []


# --- NetworkPolicies ----------------------------------------------------------------------------
POSTGRES_CLIENTS = {"prefect-server", "flow-run", "pgadmin", "backup", "test"}


def _pod_labels(docs: list[dict]) -> list[tuple[str, dict]]:
    """(object, pod labels) of every pod the chart can start, the worker's flow-run pods included."""
    pods = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        labels = pod_labels(doc)
        pods.append((f"{doc['kind']}/{doc['metadata']['name']}", labels))
    job = base_job_template(docs)["job_configuration"]["job_manifest"]
    pods.append(("flow-run", {**job["spec"]["template"]["metadata"]["labels"], "app.kubernetes.io/name": "sample"}))
    return pods


@pytest.mark.chart
@pytest.mark.parametrize("values", [{}, {"pgadmin": {"enabled": False}},
                                    {"networkPolicy": {"pgadminExtraFrom": [{"namespaceSelector": {}}]}}],
                         ids=["default", "pgadmin-off", "pgadmin-open-to-namespaces"])
def test_only_the_intended_pods_are_clients_of_postgres(values):
    docs = render(values)
    postgres = next(labels for _, labels in _pod_labels(docs) if labels["app.kubernetes.io/component"] == "postgresql")
    clients = {name for name, labels in _pod_labels(docs)
               if labels is not postgres and ingress_allowed(docs, postgres, labels, 5432)}
    allowed = {name for name, labels in _pod_labels(docs) if labels["app.kubernetes.io/component"] in POSTGRES_CLIENTS}
    assert clients == allowed and "flow-run" in clients
    assert not [n for n, l in _pod_labels(docs) if l["app.kubernetes.io/component"] == "worker" and n in clients]
    # ingress_allowed only follows same-namespace podSelectors: prove nothing else opens Postgres
    for policy in by_kind(docs, "NetworkPolicy"):
        selects_postgres = all(postgres.get(k) == v for k, v in policy["spec"]["podSelector"].get("matchLabels", {}).items())
        if not selects_postgres:
            continue
        for rule in policy["spec"].get("ingress") or []:
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule without 'from' admits everyone"
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{policy['metadata']['name']}: peer {peer} reaches Postgres"
            assert [p.get("port") for p in rule.get("ports") or []] == [5432]
