"""T2: runs whose process dies without a SIGTERM heal themselves, on a real Prefect server (with its
services: triggers, actions) and a real PostgreSQL, with a real process worker running each flow run in
a process of its own (the engine path of a Kubernetes Job) and a webhook receiving the alerts.

- a crashed `load-file` run (its engine SIGKILLed mid-COPY by the fault hook) is re-run, as the same flow
  run, by the pipeline run waiting for it, and the run completes with exact rows and no alert; one that
  crashes on every attempt fails its file once ETL_FILE_RETRIES are spent, and the `run failed` alert fires;
- a crashed pipeline run (its process SIGKILLed while it waits for its files, which the fault hook's
  `hold` keeps loading until the test lets them go) is reported by the `run crashed` alert when nothing
  re-runs it, is re-run as the same flow run by `ecommerce-etl recover` (finding its files' runs again:
  none starts twice), and is marked Failed, with an alert, once ETL_PIPELINE_RETRIES are spent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from flows import faulthook, recovery
from flows.alerts import register_alerts
from flows.names import LOAD_FILE_ENTRYPOINT, LOAD_FILE_FLOW, PIPELINE_ENTRYPOINT
from flows.settings import AlertSettings
from helpers import REPO, cli, process_worker, rows, started_prefect_server, webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROWS = 20_000
FILE_RETRIES = 1
PIPELINE_RETRIES = 1
CRASHED_MINUTES = 0.25  # the "run crashed" alert after 15 s without a re-run


@dataclass
class Healing:
    api_url: str
    env: dict  # a client's environment (the CLI's)
    database: str  # the data database
    hook: Path  # the fault hook's folder (ETL_CHAOS_FAULT_HOOK_DIR of every flow run)
    pipeline: str  # deployment name
    receiver: object
    worker_log: Path


def _client_call(api_url: str, fn):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return fn(client)


@pytest.fixture(scope="module")
def healing(postgres, tmp_path_factory):
    home = tmp_path_factory.mktemp("healing")
    hook = home / "fault-hook"
    hook.mkdir()
    data = postgres.create_database("t_self_healing")
    extra = {"PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2"}
    with (
        webhook_receiver() as receiver,
        started_prefect_server(postgres, home, f"prefect_heal_{uuid.uuid4().hex[:8]}", services=True,
                               extra_env=extra) as server,
    ):
        settings = AlertSettings(enabled=True, webhook_url=SecretStr(receiver.url), pending_minutes=0,
                                 running_minutes=0, crashed_minutes=CRASHED_MINUTES)

        async def alerts():
            from prefect.client.orchestration import get_client
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: server.api_url}):
                async with get_client() as client:
                    return await register_alerts(client, settings)

        assert asyncio.run(alerts())["alerts"] == "webhook"
        pool, name = f"t2-heal-{uuid.uuid4().hex[:6]}", "t2-heal"

        def deploy(client):
            from prefect.client.schemas.actions import WorkPoolCreate
            from prefect.workers.process import ProcessWorker

            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
            for flow_name, entrypoint in (("ecommerce-etl", PIPELINE_ENTRYPOINT), (LOAD_FILE_FLOW, LOAD_FILE_ENTRYPOINT)):
                client.create_deployment(flow_id=client.create_flow_from_name(flow_name), name=name,
                                         work_pool_name=pool, entrypoint=entrypoint,
                                         job_variables={"working_dir": str(REPO)})

        _client_call(server.api_url, deploy)
        env = {**os.environ, **server.env}
        flow_env = {
            **env,
            "DATABASE_URL": data,
            "ETL_DATA_DIR": str(home / "data"),
            "ETL_FILE_DEPLOYMENT": f"{LOAD_FILE_FLOW}/{name}",
            "ETL_FILE_RETRIES": str(FILE_RETRIES),
            # the chart's default: a process worker reports a crash a second time, seconds after the
            # supervisor did; that report must land before the re-run starts (see flows/recovery.verdict)
            "ETL_RETRY_DELAY_SECONDS": "10",
            "ETL_CHAOS_FAULT_HOOK_DIR": str(hook),
            "ETL_COPY_PARALLELISM": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        }
        log = home / "worker.log"
        with process_worker(pool, flow_env, log):
            yield Healing(server.api_url, env, data, hook, f"ecommerce-etl/{name}", receiver, log)


def start(h: Healing, files: list[str], table: str):
    def create(client):
        deployment = client.read_deployment_by_name(h.pipeline)
        parameters = {"source": "sample", "rows_per_file": ROWS, "files": files, "table": table}
        return client.create_flow_run_from_deployment(deployment.id, parameters=parameters)

    return _client_call(h.api_url, create)


def read(h: Healing, run_id):
    return _client_call(h.api_url, lambda c: c.read_flow_run(run_id))


def states(h: Healing, run_id):
    return _client_call(h.api_url, lambda c: sorted(c.read_flow_run_states(run_id), key=lambda s: s.timestamp))


def children(h: Healing, parent_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    def find(client):
        wanted = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        return client.read_flow_runs(flow_run_filter=wanted)

    return {r.name: r for r in _client_call(h.api_url, find)}


def wait(h: Healing, run_id, until, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not until(run := read(h, run_id)):
        assert time.monotonic() < deadline, f"{what}: run is {run.state!r}\n{h.worker_log.read_text()[-4000:]}"
        time.sleep(1)
    return run


def final(h: Healing, run_id, timeout: float = 300):
    return wait(h, run_id, lambda r: r.state.is_final() and not r.state.is_crashed(), "final", timeout)


def exact(h: Healing, table: str, files: list[str]) -> None:
    counted = rows(h.database, f"select source_file, count(*), count(distinct source_line) from {table} group by 1")
    assert sorted(map(tuple, counted)) == sorted((f, ROWS, ROWS) for f in files)
    ledger = rows(h.database, f"select source_file, rows_loaded from {table}_ledger")
    assert sorted(map(tuple, ledger)) == sorted((f, ROWS) for f in files)


def kill_flow_run_processes(run_id) -> int:
    """SIGKILL every process of a flow run (the process worker gives it PREFECT__FLOW_RUN_ID)."""
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed


def summary_attempts(h: Healing, run_id) -> dict:
    """The attempts column of the run's summary artifact (the table the UI shows)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.etl import SUMMARY_ARTIFACT_KEY

    def find(client):
        wanted = ArtifactFilter(key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT_KEY]),
                                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        return client.read_artifacts(artifact_filter=wanted)

    (artifact,) = _client_call(h.api_url, find)
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return {row["file"]: row["attempts"] for row in table}


def retried_events(h: Healing, file: str) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    def find(client):
        wanted = EventFilter(event=EventNameFilter(name=[recovery.FILE_RETRIED]),
                             resource=EventResourceFilter(id=[f"ecommerce.file.{file}"]))
        return client.read_events(filter=wanted, limit=20).events

    return _client_call(h.api_url, find)


def test_a_crashed_file_run_is_rerun_and_only_spent_retries_alert(healing):
    h = healing
    (h.hook / "kill").write_text("2019-Nov.csv")  # the first load of Nov dies mid-COPY, once
    run = start(h, ["2019-Oct.csv", "2019-Nov.csv"], "t_heal_file")
    done = final(h, run.id)
    histories = {n: [(s.name, (s.message or "")[:60]) for s in states(h, c.id)] for n, c in children(h, run.id).items()}
    assert done.state.is_completed(), f"{done.state.message}\n{histories}"
    assert (h.hook / "kill.fired").exists()
    files = children(h, run.id)
    nov, oct_ = files["load-2019-Nov.csv"], files["load-2019-Oct.csv"]
    history = states(h, nov.id)
    names = [s.name for s in history]
    crash = names.index("Crashed")
    assert names[crash + 1] == "AwaitingRetry" and names[-1] == "Completed", names
    assert recovery.MARK in history[crash + 1].message and "re-run 1 of 1" in history[crash + 1].message
    assert names.count("Running") == 2, names  # two attempts; a repeated crash report is not a third
    assert (nov.run_count, oct_.run_count) == (2, 1)  # the same flow run, started twice; Oct once
    exact(h, "t_heal_file", ["2019-Oct.csv", "2019-Nov.csv"])
    assert summary_attempts(h, run.id) == {"2019-Oct.csv": 1, "2019-Nov.csv": 2}  # the attempts, in the UI
    (event,) = retried_events(h, "2019-Nov.csv")
    assert event.payload["retry"] == 1 and event.payload["retries"] == FILE_RETRIES

    (h.hook / "kill-every").write_text("2019-Dec.csv")  # every load of Dec dies
    try:
        spent = start(h, ["2019-Dec.csv", "2019-Oct.csv"], "t_heal_spent")
        failed = final(h, spent.id)
    finally:
        (h.hook / "kill-every").unlink()
    assert failed.state.is_failed(), failed.state
    assert "2019-Dec.csv" in failed.state.message and "crashed 2 time(s)" in failed.state.message
    dec = children(h, spent.id)["load-2019-Dec.csv"]
    dec_history = states(h, dec.id)
    assert [s.name for s in dec_history].count("Running") == FILE_RETRIES + 1  # attempts
    assert recovery.verdict(dec_history, recovery.RetryPolicy(FILE_RETRIES)).crashes == FILE_RETRIES + 1
    # the other file still loaded, once
    assert rows(h.database, "select count(*) from t_heal_spent") == [(ROWS,)]

    post = h.receiver.wait_for(failed.name, timeout=120)[0]["json"]
    assert "Failed" in post["subject"] and "2019-Dec.csv" in post["body"]
    assert h.receiver.naming(done.name) == [], "a run that healed itself alerted"


def test_a_crashed_pipeline_run_is_rerun_as_the_same_flow_run_and_failed_once_spent(healing):
    h = healing
    recover_env = {"ETL_PIPELINE_RETRIES": str(PIPELINE_RETRIES), "ETL_RETRY_DELAY_SECONDS": "1", **h.env}
    files = ["2019-Oct.csv", "2019-Nov.csv"]

    def crash_while_waiting(run_id, attempt: int) -> dict:
        wait(h, run_id, lambda r: r.state.is_running() and r.run_count == attempt, f"attempt {attempt} running")
        deadline = time.monotonic() + 120
        while len(found := children(h, run_id)) < len(files):
            assert time.monotonic() < deadline, f"its files' runs were not started: {found}"
            time.sleep(0.5)
        assert kill_flow_run_processes(run_id) >= 1
        wait(h, run_id, lambda r: r.state.is_crashed(), "reported Crashed")
        return {name: child.id for name, child in found.items()}

    hold = h.hook / faulthook.HOLD
    hold.write_text("")  # every file's load waits before its COPY: the crash lands while the run waits
    try:
        run = start(h, files, "t_heal_parent")
        first_children = crash_while_waiting(run.id, 1)
        crashed = read(h, run.id)
        # nothing re-runs it here (no recovery running): after CRASHED_MINUTES the `run crashed` alert says so
        post = h.receiver.wait_for(crashed.name, timeout=120)[0]["json"]
        assert "not re-run" in post["subject"]

        recovered = cli("recover", "--once", env=recover_env)
        assert recovered.returncode == 0 and f"{run.id}): re-run" in recovered.stdout, recovered.stdout + recovered.stderr
        wait(h, run.id, lambda r: r.state.is_running() and r.run_count == 2, "the re-run running")
    finally:
        hold.unlink()
    done = final(h, run.id)
    histories = {n: [(s.name, (s.message or "")[:60]) for s in states(h, c.id)] for n, c in children(h, run.id).items()}
    assert done.state.is_completed(), f"{done.state.message}\n{histories}"
    assert done.id == run.id and done.run_count == 2
    again = children(h, run.id)
    assert {n: c.id for n, c in again.items()} == first_children, "the re-run started its files again"
    assert all(c.run_count == 1 for c in again.values()), {n: c.run_count for n, c in again.items()}
    exact(h, "t_heal_parent", files)
    assert [p for p in h.receiver.naming(done.name) if "Failed" in p["json"]["subject"]] == []

    hold.write_text("")  # both attempts crash while their files still load
    try:
        spent = start(h, files, "t_heal_parent_spent")
        crash_while_waiting(spent.id, 1)
        assert f"{spent.id}): re-run" in cli("recover", "--once", env=recover_env).stdout
        crash_while_waiting(spent.id, 2)
    finally:
        hold.unlink()
    gave_up = cli("recover", "--once", env=recover_env)
    assert f"{spent.id}): failed" in gave_up.stdout, gave_up.stdout + gave_up.stderr
    failed = read(h, spent.id)
    assert failed.state.is_failed() and "crashed 2 time(s)" in failed.state.message
    assert f"flowRun.pipelineRetries={PIPELINE_RETRIES}" in failed.state.message
    posts = h.receiver.wait_for(failed.name, timeout=120)
    assert any("Failed" in p["json"]["subject"] for p in posts), posts
