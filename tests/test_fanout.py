"""T2: one `load-file` flow run per file, in-process and fanned out, on a real Prefect server and PostgreSQL.

In-process (the CLI): subflows in threads, up to ETL_MAX_PARALLEL_FILES at once, each linked to
the pipeline run. Fanned out (ETL_FILE_DEPLOYMENT): the pipeline run starts one run of a
`load-file` deployment per file; a real Prefect process worker runs each as its own process
(the same engine path as a Kubernetes Job: `prefect flow-run execute`), and the server's
deployment concurrency limit decides how many start. Nothing is shared between those processes
but the database and the Prefect API.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
)
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions, FlowRun
from prefect.utilities.callables import parameter_schema

from fault_tools import audit
from flows import etl
from flows.deploy import deployment_specs
from flows.names import LOAD_FILE_FLOW
from flows.fanout import FILE_RESULT_ARTIFACT_KEY
from flows.sample import write_sample
from flows.csv_spec import MONTH_FILES
from flows.settings import get_settings
from helpers import CLI, REPO, overlap, process_worker, rows
from kaggle_standin import DOWNLOAD_PATH, KEY, LIST_PATH, STORAGE, USER

pytestmark = pytest.mark.timeout(900)

ROWS = 3000
LIMIT = 2  # the load-file deployment's concurrency limit here: 5 files must queue


def read_runs(**filters) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(**filters)


def children_of(parent_id) -> list[FlowRun]:
    """Flow runs linked to parent_id as subflows (through their parent task run)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        return [r for r in runs if r.parent_task_run_id
                and client.read_task_run(r.parent_task_run_id).flow_run_id == parent_id]


# --- in-process ---------------------------------------------------------------------------------


def test_in_process_files_load_concurrently_each_its_own_subflow(prefect_api, data_db, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", data_db)
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ETL_MAX_PARALLEL_FILES", "3")
    monkeypatch.setenv("ETL_COPY_PARALLELISM", "1")
    calls: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def progress(name, done, total):
        with lock:
            calls.append((name, done, total))

    with etl.run_options(etl.RunOptions(get_settings(), progress=progress)):
        state = etl.ecommerce_etl(source="sample", rows_per_file=40_000, return_state=True)
    assert state.is_completed(), state
    summary = state.result().as_json()
    assert [f["file"] for f in summary["files"]] == list(MONTH_FILES)  # the report keeps the files' order
    assert summary["rows_loaded"] == 5 * 40_000 and summary["rows_quarantined"] == 0
    assert rows(data_db, "select count(*), count(distinct (source_file, source_line)) from ecommerce_events") == [
        (200_000, 200_000)]

    # every file's bar exists before the first file is done: the bars show every file at once
    last_call = {name: i for i, (name, _, _) in enumerate(calls)}
    first_done = min(last_call.values())
    assert {name for name, _, _ in calls[:first_done]} == set(MONTH_FILES)
    assert {(name, done) for name, done, _ in calls[:5]} == {(name, 0) for name in MONTH_FILES}  # announced first

    parent_id = state.state_details.flow_run_id
    subflows = children_of(parent_id)
    assert sorted(s.name for s in subflows) == sorted(f"load-{f}" for f in MONTH_FILES)
    assert {s.state.type.value for s in subflows} == {"COMPLETED"}
    spans = [(s.start_time.timestamp(), s.end_time.timestamp()) for s in subflows]
    most = overlap(spans)
    print(f"\nin-process: at most {most} of 5 subflows running at once (ETL_MAX_PARALLEL_FILES=3)", file=sys.stderr)
    assert 2 <= most <= 3


def test_in_process_limit_of_one_runs_files_one_after_another(prefect_api, data_db, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", data_db)
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ETL_MAX_PARALLEL_FILES", "1")
    state = etl.ecommerce_etl(source="sample", rows_per_file=500, return_state=True)
    assert state.is_completed(), state
    subflows = children_of(state.state_details.flow_run_id)
    assert len(subflows) == 5
    assert overlap([(s.start_time.timestamp(), s.end_time.timestamp()) for s in subflows]) == 1


# --- a kill during a concurrent load ------------------------------------------------------------


def active_copies(admin_url: str, database: str) -> int:
    return rows(admin_url, "select count(*) from pg_stat_activity where datname = '%s' and state = 'active'"
                           " and query like 'COPY %%'" % database)[0][0]


def test_kill_during_a_concurrent_load_then_rerun_gives_the_clean_result(prefect_server, postgres, tmp_path,
                                                                         record_property):
    folder = tmp_path / "in"
    # each COPY (about 1 s per 150,000 rows here) must outlast the next file's subflow start (about 1 s on a
    # busy machine), or two never run at once
    write_sample(folder, rows_per_file=400_000, files=MONTH_FILES[:3])
    reference_url = postgres.create_database("fanout_kill_reference")
    killed_url = postgres.create_database("fanout_kill")
    env = {**os.environ, **prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "data"),
           "ETL_MAX_PARALLEL_FILES": "3", "ETL_COPY_PARALLELISM": "1"}

    def cli(url: str) -> subprocess.Popen:
        return subprocess.Popen([CLI, "run", "--source", "local", "--path", str(folder), "--database-url", url,
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)

    clean = cli(reference_url)
    out, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err[-3000:]
    reference = audit(reference_url)

    run = cli(killed_url)
    deadline = time.monotonic() + 300
    copies = 0
    while (copies := active_copies(postgres.admin_url(), "fanout_kill")) < 2:  # two files' COPYs at once
        assert run.poll() is None, f"the run ended before two files loaded at once:\n{run.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "never saw two COPYs at once"
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate(timeout=60)
    after_kill = audit(killed_url)
    record_property("copies_at_kill", copies)
    assert after_kill.problems == [] and after_kill.duplicated == 0
    assert len(after_kill.ledger) < 3  # the kill landed before every file was in

    rerun = cli(killed_url)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    statuses = {f["file"]: f["status"] for f in json.loads(out)["files"]}
    assert statuses == {f: "skipped" if f in after_kill.ledger else "loaded" for f in MONTH_FILES[:3]}
    final = audit(killed_url)
    assert final.problems == [] and final.leftovers == [] and final.duplicated == 0
    assert {f: final.counts(f) for f in MONTH_FILES[:3]} == {f: reference.counts(f) for f in MONTH_FILES[:3]}
    assert {f: v[0] for f, v in final.ledger.items()} == {f: v[0] for f, v in reference.ledger.items()}
    assert final.quarantine == reference.quarantine


# --- fanned out: a load-file deployment run per file, run by a real process worker --------------


@pytest.fixture(scope="module")
def fanout(prefect_server, postgres, tmp_path_factory):
    """A process work pool, the load-file deployment on it (with the production concurrency
    settings from flows.deploy, at LIMIT) and a worker; yields what the tests need."""
    work = tmp_path_factory.mktemp("fanout")
    database = postgres.create_database("fanout_worker")
    pool, name = f"t2-process-{uuid.uuid4().hex[:6]}", f"t2-{uuid.uuid4().hex[:6]}"
    (spec,) = [s for s in deployment_specs(ROWS, max_parallel_files=LIMIT) if s.flow == LOAD_FILE_FLOW]
    with get_client(sync_client=True) as client:
        from prefect.workers.process import ProcessWorker

        client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name(spec.flow), name=name, work_pool_name=pool,
            entrypoint=spec.entrypoint,
            parameter_openapi_schema=parameter_schema(etl.file_flow).model_dump_for_openapi(),
            enforce_parameter_schema=True, concurrency_limit=spec.concurrency_limit,
            concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            job_variables={"working_dir": str(REPO)},
        )
    env = {**os.environ, **prefect_server.env, "DATABASE_URL": database, "ETL_DATA_DIR": str(work / "child-data"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
           # the kaggle client talks to the local stand-in (tests/kaggle_standin.py) when one runs
           "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY}
    log = work / "worker.log"
    with process_worker(pool, env, log):
        yield {"deployment": f"{LOAD_FILE_FLOW}/{name}", "deployment_id": deployment_id, "database": database,
               "work": work, "worker_log": log}


def fanned_out_pipeline(fanout, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", fanout["database"])
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "parent-data"))
    monkeypatch.setenv("ETL_FILE_DEPLOYMENT", fanout["deployment"])
    monkeypatch.setattr("flows.fanout.POLL_SECONDS", 1.0)
    return etl.ecommerce_etl


def deployment_runs(fanout, parent_id) -> list[FlowRun]:
    runs = read_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[fanout["deployment_id"]])),
                     limit=200)
    return [r for r in runs if r.id in {c.id for c in children_of(parent_id)}]


def state_names(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        return [s.name for s in client.read_flow_run_states(flow_run_id)]


def test_fan_out_runs_one_deployment_run_per_file_within_the_limit(fanout, prefect_api, monkeypatch, tmp_path,
                                                                   record_property):
    pipeline = fanned_out_pipeline(fanout, monkeypatch, tmp_path)
    started = time.monotonic()
    state = pipeline(source="sample", rows_per_file=ROWS, return_state=True)
    seconds = time.monotonic() - started
    assert state.is_completed(), f"{state}\n{fanout['worker_log'].read_text()[-4000:]}"
    summary = state.result().as_json()
    assert [(f["file"], f["status"], f["rows_loaded"]) for f in summary["files"]] == [
        (f, "loaded", ROWS) for f in MONTH_FILES]
    # nothing was fetched where the pipeline ran: each child fetched its own file
    assert not (tmp_path / "parent-data").exists()

    parent_id = state.state_details.flow_run_id
    children = deployment_runs(fanout, parent_id)
    assert sorted(c.name for c in children) == sorted(f"load-{f}" for f in MONTH_FILES)
    assert {c.state.type.value for c in children} == {"COMPLETED"}
    assert {c.parameters["file"]["name"] for c in children} == set(MONTH_FILES)
    most = overlap([(c.start_time.timestamp(), c.end_time.timestamp()) for c in children])
    held_back = [c.name for c in children if "AwaitingConcurrencySlot" in state_names(c.id)]
    print(f"\nfan-out: 5 files, at most {most} running at once (limit {LIMIT}), {len(held_back)} held back by "
          f"the server, {seconds:.1f}s", file=sys.stderr)
    record_property("fanout_max_running", most)
    assert most <= LIMIT
    assert held_back, "no file waited for a slot: the deployment concurrency limit was not in play"

    # Each child loaded the same bytes as that month of the whole sample.
    whole = write_sample(tmp_path / "whole", rows_per_file=ROWS)
    ledger = dict(rows(fanout["database"], "select source_file, checksum from ecommerce_events_ledger"))
    # the ledger's checksum (flows/load/SPEC.md): SHA-256 of the 4 MiB blocks' SHA-256s; these files are one block
    assert all(p.stat().st_size < 4 << 20 for p in whole)
    def checksum(data: bytes) -> str:
        return "sha256-blocks4194304:" + hashlib.sha256(hashlib.sha256(data).digest()).hexdigest()

    assert ledger == {p.name: checksum(p.read_bytes()) for p in whole}

    # The summary artifact has one row per file; the parent emitted the per-file events.
    with get_client(sync_client=True) as client:
        (summary_artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[etl.SUMMARY_ARTIFACT_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[parent_id])))
    table = json.loads(summary_artifact.data) if isinstance(summary_artifact.data, str) else summary_artifact.data
    assert [(r["file"], r["rows loaded"]) for r in table] == [(f, ROWS) for f in MONTH_FILES]

    # A rerun of the parent skips every file: no new rows.
    again = pipeline(source="sample", rows_per_file=ROWS, return_state=True)
    assert again.is_completed(), again
    assert {f.status for f in again.result().files} == {"skipped"}
    assert rows(fanout["database"], "select count(*) from ecommerce_events") == [(5 * ROWS,)]


def run_child_alone(fanout, parameters: dict, timeout: float = 300) -> FlowRun:
    """What `prefect deployment run load-file/... --param ...` does: a run of the deployment on its own."""
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(fanout["deployment_id"], parameters=parameters)
        deadline = time.monotonic() + timeout
        while not (run := client.read_flow_run(run.id)).state.is_final():
            assert time.monotonic() < deadline, f"{run.state!r}\n{fanout['worker_log'].read_text()[-3000:]}"
            time.sleep(1)
    return run


def test_a_child_rerun_alone_loads_exactly_its_file_once(fanout, prefect_api, tmp_path):
    # Nov is regenerated with one more row: the lone run must replace Nov, and only Nov.
    before = dict(rows(fanout["database"], "select source_file, count(*) from ecommerce_events group by 1"))
    assert before == dict.fromkeys(MONTH_FILES, ROWS), "runs after the fan-out test"
    params = {"file": {"name": "2019-Nov.csv", "source": "sample", "rows_per_file": ROWS + 1}}
    run = run_child_alone(fanout, params)
    assert run.state.is_completed(), f"{run.state!r}\n{fanout['worker_log'].read_text()[-3000:]}"
    after = dict(rows(fanout["database"], "select source_file, count(*) from ecommerce_events group by 1"))
    assert after == {**before, "2019-Nov.csv": ROWS + 1}
    state = audit(fanout["database"])
    assert state.problems == [] and state.duplicated == 0
    # Run alone, it reports the file itself: its own summary artifact.
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))}
    assert {etl.SUMMARY_ARTIFACT_KEY, etl.QUARANTINE_ARTIFACT_KEY, FILE_RESULT_ARTIFACT_KEY} <= keys
    # Again: unchanged, so skipped.
    again = run_child_alone(fanout, params)
    assert again.state.is_completed()
    assert dict(rows(fanout["database"], "select source_file, count(*) from ecommerce_events group by 1")) == after


@pytest.fixture
def web(tmp_path):
    """An HTTP server of CSV files; records every path requested."""
    root = tmp_path / "www"
    root.mkdir()
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):  # noqa: N802 - http.server's name
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", requested
    server.shutdown()
    server.server_close()


def test_fan_out_with_a_failing_file_fails_the_run_and_loads_the_others(fanout, prefect_api, monkeypatch, tmp_path,
                                                                        web):
    root, base, requested = web
    good = write_sample(root, rows_per_file=400, files=MONTH_FILES[:3])
    (root / "2020-Jan.csv").write_text("time,type\n2020-01-01 00:00:00 UTC,view\n")  # wrong header
    urls = [f"{base}/{p.name}" for p in good] + [f"{base}/2020-Jan.csv"]
    pipeline = fanned_out_pipeline(fanout, monkeypatch, tmp_path)
    state = pipeline(source="url", url=urls, table="url_events", return_state=True)
    assert state.is_failed(), state
    failure = state.result(raise_on_failure=False)
    assert isinstance(failure, etl.LoadFailed) and "2020-Jan.csv (wrong header" in str(failure)
    assert [(f.file, f.status) for f in failure.report.files] == [
        (p.name, "loaded") for p in good] + [("2020-Jan.csv", "failed")]
    assert rows(fanout["database"], "select source_file, count(*) from url_events group by 1 order by 1") == sorted(
        (p.name, 400) for p in good)
    # each child downloaded its own URL, once
    assert sorted(requested) == sorted(f"/{Path(u).name}" for u in urls)
    children = {c.name: c.state.type.value for c in deployment_runs(fanout, state.state_details.flow_run_id)}
    assert children == {**{f"load-{p.name}": "COMPLETED" for p in good}, "load-2020-Jan.csv": "FAILED"}


def test_fan_out_of_kaggle_downloads_each_file_in_its_own_child(fanout, prefect_api, monkeypatch, tmp_path,
                                                                kaggle_standin):
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    pipeline = fanned_out_pipeline(fanout, monkeypatch, tmp_path)
    state = pipeline(source="kaggle", table="kaggle_events", return_state=True)
    assert state.is_completed(), f"{state}\n{fanout['worker_log'].read_text()[-4000:]}"
    assert [(f.file, f.rows_loaded) for f in state.result().files] == [(f, 300) for f in MONTH_FILES]
    requests = kaggle_standin.requests
    # the parent listed the files through the client; it downloaded nothing
    assert [r["path"] for r in requests].count(LIST_PATH) == 1 and not (tmp_path / "parent-data").exists()
    # each child asked for its own file, and was served only that file
    downloads = [r for r in requests if r["path"] == DOWNLOAD_PATH]
    assert sorted(r["body"].get("fileName") for r in downloads) == sorted(MONTH_FILES)  # never the whole dataset
    served = [r for r in requests if r["path"].startswith(STORAGE)]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in served) == sorted(f"{f}.zip" for f in MONTH_FILES)
    for r in served:
        with zipfile.ZipFile(io.BytesIO(r["served"])) as zf:
            assert zf.namelist() == [r["path"].rsplit("/", 1)[1].removesuffix(".zip")]
    loaded = dict(rows(fanout["database"], "select source_file, count(*) from kaggle_events group by 1"))
    assert loaded == dict.fromkeys(MONTH_FILES, 300)
