"""T2: the alert automations on a real Prefect server with its services on (triggers, actions,
late runs), notifying a real webhook receiver on 127.0.0.1.

The session's shared server runs --no-services, so this module starts its own (free port, own
PREFECT_HOME, its own database on the session PostgreSQL). Flows run as `ecommerce-etl`
subprocesses pointed at it: Prefect's event worker in this process would talk to the shared one.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest

from chart_render import base_job_template, render
from flows.alerts import BLOCK_NAME, TAG, alert_specs
from flows.settings import AlertSettings
from flows.sample import write_sample
from helpers import BIN, REPO, started_prefect_server, webhook_receiver

PENDING_MINUTES = 0.25  # 15 s: the shortest Prefect accepts is 10 s
POOL = "alerts-no-worker"


# --- the settings and the automations they ask for (no server) ---------------------------------
def test_alert_settings_and_specs(monkeypatch, tmp_path):
    from flows.errors import ConfigError
    from flows.settings import get_settings

    def load_alert_settings():
        return get_settings().alerts

    for name in (
        "ETL_ALERTS_ENABLED",
        "ETL_ALERT_WEBHOOK_URL",
        "ETL_ALERT_WEBHOOK_URL_FILE",
        "ETL_ALERT_PENDING_MINUTES",
        "ETL_ALERT_RUNNING_MINUTES",
        "ETL_ALERT_CRASHED_MINUTES",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(REPO / "tests")  # no .env here
    assert load_alert_settings().active is False  # locally: only with a webhook
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_URL", "https://hooks.example/x")
    assert load_alert_settings().active is True
    monkeypatch.setenv("ETL_ALERTS_ENABLED", "false")
    assert load_alert_settings().active is False
    # The chart's way: the URL in a file from the Secret, never in the environment.
    monkeypatch.delenv("ETL_ALERT_WEBHOOK_URL")
    monkeypatch.setenv("ETL_ALERTS_ENABLED", "true")
    url_file = tmp_path / "url"
    url_file.write_text("https://hooks.example/from-file\n")
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_URL_FILE", str(url_file))
    assert load_alert_settings().webhook_url.get_secret_value() == "https://hooks.example/from-file"
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_URL_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"ETL_ALERT_WEBHOOK_URL_FILE=.*absent: cannot read it"):
        load_alert_settings()
    monkeypatch.delenv("ETL_ALERT_WEBHOOK_URL_FILE")
    for name, value, fragment in (
        ("ETL_ALERT_PENDING_MINUTES", "0.1", r"ETL_ALERT_PENDING_MINUTES: 0\.1 minutes is below 10 seconds"),
        ("ETL_ALERT_RUNNING_MINUTES", "-1", "ETL_ALERT_RUNNING_MINUTES: Input should be"),
        ("ETL_ALERT_CRASHED_MINUTES", "0.1", r"ETL_ALERT_CRASHED_MINUTES: 0\.1 minutes is below 10 seconds"),
        ("ETL_ALERT_WEBHOOK_URL", "hooks.example/x", r"ETL_ALERT_WEBHOOK_URL.*http"),
    ):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(ConfigError, match=fragment):
                load_alert_settings()

    specs = {s.name: s for s in alert_specs(AlertSettings(pending_minutes=5, running_minutes=0))}
    assert set(specs) == {
        "ecommerce-etl: run failed",
        "ecommerce-etl: run crashed",
        "ecommerce-etl: quarantine high",
        "ecommerce-etl: run not started",
    }  # 0 minutes switches a trigger off
    assert "ecommerce-etl: run crashed" not in {s.name for s in alert_specs(AlertSettings(crashed_minutes=0))}
    # a crash alone never alerts (the run is re-run); a run that ends Failed, or stays Crashed, does
    assert specs["ecommerce-etl: run failed"].trigger["expect"] == ["prefect.flow-run.Failed"]
    crashed = specs["ecommerce-etl: run crashed"].trigger
    assert (crashed["after"], crashed["posture"], crashed["within"]) == (["prefect.flow-run.Crashed"], "Proactive", 300)
    assert {"prefect.flow-run.AwaitingRetry", "prefect.flow-run.Failed"} <= set(crashed["expect"])
    assert "prefect.flow-run.Crashed" not in crashed["expect"]
    for name in ("ecommerce-etl: run failed", "ecommerce-etl: run not started", "ecommerce-etl: run crashed"):
        related = specs[name].trigger["match_related"]
        assert related == {"prefect.resource.role": "flow", "prefect.resource.name": "ecommerce-etl"}
    assert specs["ecommerce-etl: run not started"].trigger["within"] == 300
    assert set(specs["ecommerce-etl: run not started"].trigger["after"]) == {
        "prefect.flow-run.Late",
        "prefect.flow-run.Pending",
        "prefect.flow-run.InfrastructurePending",
    }


# --- a webhook receiver ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def receiver():
    with webhook_receiver() as rec:
        yield rec


# --- a Prefect server with services --------------------------------------------------------------
@dataclass
class AlertServer:
    api_url: str
    env: dict
    database: str
    ui_url: str


@pytest.fixture(scope="module")
def alert_server(postgres, tmp_path_factory):
    home = tmp_path_factory.mktemp("alerts")
    ui_url = "http://prefect.example.test"
    extra = {
        "PREFECT_UI_URL": ui_url,  # links in the messages
        # Mark a workerless run Late after 5 s (default 15 s), so the wait stays short.
        "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "5",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "2",
    }
    database = f"prefect_alerts_{uuid.uuid4().hex[:8]}"
    try:
        with started_prefect_server(postgres, home, database, services=True, extra_env=extra) as server:
            yield AlertServer(api_url=server.api_url, env={**os.environ, **server.env}, database=database, ui_url=ui_url)
    finally:
        log = home / "server.log"
        print(f"alert server log tail:\n{log.read_text()[-3000:] if log.exists() else ''}", file=sys.stderr)


def _api(server: AlertServer, fn):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go():
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            async with get_client() as client:
                return await fn(client)

    return asyncio.run(go())


def _ours(client):
    async def read():
        return [a for a in await client.read_automations() if TAG in (a.tags or [])]

    return read()


@pytest.fixture(scope="module")
def deployed(alert_server, receiver, tmp_path_factory):
    """`ecommerce-etl deploy` (as the chart's hook runs it) with alerts on, run twice."""
    folder = tmp_path_factory.mktemp("alerts-deploy")
    template = folder / "base-job-template.json"
    template.write_text(json.dumps(base_job_template(render())))
    env = {
        **alert_server.env,
        "ETL_ALERT_WEBHOOK_URL": receiver.url,
        "ETL_ALERT_PENDING_MINUTES": str(PENDING_MINUTES),
        "ETL_ALERTS_ENABLED": "true",
    }
    argv = [
        str(BIN / "ecommerce-etl"),
        "deploy",
        "--pool",
        POOL,
        "--base-job-template",
        str(template),
        "--concurrency-limit",
        "1",
    ]
    runs = [subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=folder) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(r.stdout) for r in runs]


def test_deploy_registers_each_automation_once_and_keeps_the_url_out_of_the_block(
    deployed, alert_server, receiver, postgres
):
    first, second = deployed
    expected = {s.name for s in alert_specs(AlertSettings(pending_minutes=PENDING_MINUTES))}
    assert set(first["automations"].values()) == {"created"} and set(first["automations"]) == expected
    assert set(second["automations"].values()) == {"updated"}, second
    assert first["alerts"] == second["alerts"] == "webhook"

    ours = _api(alert_server, _ours)
    assert sorted(a.name for a in ours) == sorted(expected), "exactly one copy of each automation"
    assert all(a.enabled and a.actions[0].type == "send-notification" for a in ours)

    async def block(client):
        document = await client.read_block_document_by_name(BLOCK_NAME, "custom-webhook", include_secrets=False)
        deployment = await client.read_deployment_by_name("ecommerce-etl/sample")
        return document, deployment

    document, deployment = _api(alert_server, block)
    assert document.data["url"] == "{{webhook_url}}"
    assert receiver.url not in json.dumps(document.model_dump(mode="json"))
    stored = postgres.run_sql(
        "select data::text from block_document where name = 'ecommerce-etl-alerts'", alert_server.database
    )
    assert stored.strip() and receiver.url not in stored and "127.0.0.1" not in stored
    # The server-side bound on concurrent runs.
    assert deployment.global_concurrency_limit.limit == 1


def test_failed_parent_run_posts_once_naming_it_and_high_quarantine_posts(
    deployed, alert_server, receiver, postgres, tmp_path
):
    folder = tmp_path / "in"
    (good,) = write_sample(folder, rows_per_file=40, files=("2019-Oct.csv",))
    # A third of the rows with a price Postgres cannot type: quarantined, share 0.33 > 0.05.
    header, *records = list(csv.reader(good.read_text().splitlines()))
    for i, record in enumerate(records):
        if i % 3 == 0:
            record[header.index("price")] = "not-a-price"
    with (folder / "2019-Nov.csv").open("w", newline="") as out:
        csv.writer(out).writerows([header, *records])
    (folder / "broken.csv").write_text("not,the,header\n1,2,3\n")
    env = {
        **alert_server.env,
        "DATABASE_URL": postgres.create_database("t_alerts"),
        "ETL_DATA_DIR": str(tmp_path / "data"),
        "ETL_ALERT_QUARANTINE_RATIO": "0.05",
    }
    done = subprocess.run(
        [str(BIN / "ecommerce-etl"), "run", "--source", "local", "--path", str(folder), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    by_file = {f["file"]: f for f in summary["files"]}
    assert by_file["broken.csv"]["status"] == "failed" and by_file["2019-Nov.csv"]["rows_quarantined"] > 5

    async def parent_run(client):
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName

        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["ecommerce-etl"])))
        return [r for r in runs if r.state and r.state.is_failed()]

    (parent,) = _api(alert_server, parent_run)

    # A failed per-file child run (flow load-file, as the fan-out will run them) must not alert.
    async def failed_child(client):
        from prefect import flow
        from prefect.states import Failed, Running

        @flow(name="load-file")
        def load_file_child():  # only its name matters: the run is driven through the API
            pass

        child = await client.create_flow_run(
            load_file_child, name=f"load-child-{uuid.uuid4().hex[:6]}", state=Running()
        )
        await client.set_flow_run_state(child.id, Failed(message="2019-Dec.csv: child failed"), force=True)
        return child

    child = _api(alert_server, failed_child)

    started = time.monotonic()
    posts = receiver.wait_for(parent.name, timeout=90)
    print(f"failed-run alert after {time.monotonic() - started:.1f}s", file=sys.stderr)
    body = posts[0]["json"]
    assert "Failed" in body["subject"] and parent.name in body["subject"]
    assert "broken.csv" in body["body"], body  # the parent's message names the failed file
    assert f"{alert_server.ui_url}/runs/flow-run/{parent.id}" in body["body"]
    assert body["text"].startswith(body["subject"])

    quarantine = receiver.wait_for("2019-Nov.csv: 14 of 40 rows quarantined", timeout=60)
    assert "share 0.35, alert above 0.05" in quarantine[0]["json"]["body"]

    time.sleep(15)  # a second alert for the same run would have arrived by now
    assert len(receiver.naming(parent.name)) == 1, receiver.naming(parent.name)
    assert len(receiver.naming("rows quarantined")) == 1, "one alert per file over the ratio"
    assert receiver.naming(child.name) == [], "a child run's failure alerted on its own"


def test_run_for_a_pool_without_a_worker_is_reported_late(deployed, alert_server, receiver):
    async def create(client):
        deployment = await client.read_deployment_by_name("ecommerce-etl/sample")
        return await client.create_flow_run_from_deployment(deployment.id)

    run = _api(alert_server, create)
    started = time.monotonic()
    posts = receiver.wait_for(run.name, timeout=120)
    waited = time.monotonic() - started
    body = posts[0]["json"]
    assert f"still Late after {PENDING_MINUTES:g} minutes" in body["subject"], body
    assert POOL in body["body"] and str(run.id) in body["body"]
    assert waited >= PENDING_MINUTES * 60, "fired before the run was Late for the configured time"
    time.sleep(10)
    assert len(receiver.naming(run.name)) == 1


def test_turning_alerts_off_removes_the_automations_and_the_webhook_block(deployed, alert_server, tmp_path):
    template = tmp_path / "base-job-template.json"
    template.write_text(json.dumps(base_job_template(render())))
    env = {**alert_server.env, "ETL_ALERTS_ENABLED": "false"}
    done = subprocess.run(
        [str(BIN / "ecommerce-etl"), "deploy", "--pool", POOL, "--base-job-template", str(template)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alerts"] == "off"
    assert _api(alert_server, _ours) == []

    async def block_names(client):
        return [d.name for d in await client.read_block_documents()]

    assert BLOCK_NAME not in _api(alert_server, block_names)
