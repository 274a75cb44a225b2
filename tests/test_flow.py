"""T2: the Prefect flow and the CLI against a real Prefect server process and a real PostgreSQL."""

import asyncio
import json
import os
import subprocess

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

from flows import etl
from flows.sample import write_sample
from flows.settings import get_settings
from helpers import CLI, one_json_object, rows, serving



@pytest.fixture
def pipeline_env(monkeypatch, data_db, tmp_path, prefect_api):
    monkeypatch.setenv("DATABASE_URL", data_db)
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "data"))
    return data_db


async def _artifact_and_subflows(flow_run_id):
    async with get_client() as client:
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[etl.SUMMARY_ARTIFACT_KEY])))
        parent = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        children = await client.read_flow_runs()
        subflows = [r for r in children if r.parent_task_run_id and r.name.startswith("load-")]
        return artifacts, parent[0], subflows


def test_flow_loads_sample_publishes_artifact_and_rerun_skips(pipeline_env):
    state = etl.ecommerce_etl(source="sample", rows_per_file=2000, return_state=True)
    assert state.is_completed(), state
    summary = state.result().as_json()
    assert summary["rows_read"] == summary["rows_loaded"] == 10_000 and summary["rows_quarantined"] == 0
    assert [f["file"] for f in summary["files"]] == ["2019-Oct.csv", "2019-Nov.csv", "2019-Dec.csv", "2020-Jan.csv", "2020-Feb.csv"]
    assert rows(pipeline_env, "select count(*) from ecommerce_events") == [(10_000,)]

    artifacts, parent, subflows = asyncio.run(_artifact_and_subflows(state.state_details.flow_run_id))
    assert parent.state.is_completed()
    latest = max(artifacts, key=lambda a: a.created)
    table = json.loads(latest.data) if isinstance(latest.data, str) else latest.data
    assert {r["file"]: r["rows loaded"] for r in table} == {f["file"]: 2000 for f in summary["files"]}
    assert {"2019-Oct.csv", "2020-Feb.csv"} <= {s.name.removeprefix("load-") for s in subflows}

    again = etl.ecommerce_etl(source="sample", rows_per_file=2000, return_state=True)
    assert {f.status for f in again.result().files} == {"skipped"}
    artifacts, _, _ = asyncio.run(_artifact_and_subflows(again.state_details.flow_run_id))
    latest = max(artifacts, key=lambda a: a.created)
    table = json.loads(latest.data) if isinstance(latest.data, str) else latest.data
    assert [(r["status"], r["rows skipped"], r["rows loaded"]) for r in table] == [("skipped", 2000, 0)] * 5
    assert rows(pipeline_env, "select count(*) from ecommerce_events") == [(10_000,)]


def test_task_retry_after_a_failure_mid_load_leaves_no_duplicates(pipeline_env, tmp_path, monkeypatch):
    write_sample(tmp_path / "in", rows_per_file=40_000, files=("2019-Oct.csv",))
    failures = []

    def fail_once(name, done, total):
        if not failures and done > 0:
            failures.append(name)
            raise ConnectionResetError("injected: connection lost mid-COPY")

    monkeypatch.setattr(etl.copy_file, "retry_delay_seconds", [0])
    with etl.run_options(etl.RunOptions(get_settings(), progress=fail_once)):
        summary = etl.ecommerce_etl(source="local", path=str(tmp_path / "in")).as_json()
    assert failures == ["2019-Oct.csv"]  # the first attempt really failed...
    assert summary["files"][0]["status"] == "loaded"  # ...and the retry loaded it
    assert rows(pipeline_env, "select count(*), count(distinct source_line) from ecommerce_events") == [(40_000, 40_000)]


def _cli(args, env_extra, **kw):
    env = {**os.environ, **env_extra}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300, **kw)


def test_cli_json_and_exit_codes(prefect_server, data_db, tmp_path):
    folder = tmp_path / "in"
    write_sample(folder, rows_per_file=500, files=("2019-Oct.csv",))
    (folder / "broken.csv").write_text("not,the,header\n1,2,3\n")
    env = {**prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "data")}

    done = _cli(["run", "--source", "local", "--path", str(folder), "--database-url", data_db, "--json"], env)
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)  # exactly one JSON object on stdout
    assert out["rows_read"] == out["rows_loaded"] == 500
    by_file = {f["file"]: f for f in out["files"]}
    assert by_file["2019-Oct.csv"]["status"] == "loaded"
    assert by_file["broken.csv"]["status"] == "failed" and "wrong header" in by_file["broken.csv"]["error"]

    ok = _cli(["run", "--source", "local", "--path", str(folder), "--files", "2019-Oct.csv",
               "--database-url", data_db, "--json"], env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["files"][0]["status"] == "skipped"


@pytest.mark.parametrize(
    "args, env_extra, message",
    [
        (["run", "--database-url", "mysql://u:hunter2@h/d"], {}, "--database-url uses 'mysql'"),
        (["run", "--table", "x;drop"], {"DATABASE_URL": "postgresql://u@h/d"}, "--table='x;drop' is not a valid name"),
        (["run", "--source", "local"], {"DATABASE_URL": "postgresql://u@h/d"}, "--source local needs --path"),
        (["run", "--source", "nope"], {}, "invalid choice"),
        (["run", "--source", "local", "--path", "/nonexistent"], {"DATABASE_URL": "postgresql://u@h/d"}, "is not a folder"),
    ],
)
def test_cli_config_errors_exit_2_and_name_the_setting(args, env_extra, message, prefect_server):
    done = _cli(args, {**prefect_server.env, **env_extra})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_cli_json_is_one_object_when_the_database_is_unreachable(prefect_server, tmp_path):
    import socket
    import time

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once the socket is closed
    started = time.monotonic()
    done = _cli(["run", "--json", "--database-url", f"postgresql://etl:pw@127.0.0.1:{port}/ecommerce"],
                {**prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "data")})
    out = one_json_object(done)
    assert done.returncode == 2 and out["status"] == "error" and out["exit_code"] == 2, done.stderr[-2000:]
    assert "cannot use the database" in out["error"] and "DATABASE_URL" in out["error"]
    assert "pw@" not in done.stdout + done.stderr
    assert time.monotonic() - started < 60  # no retry storm before the answer


@pytest.mark.parametrize("extra, message", [
    ([], "no file to load, looked for *.csv"),
    (["--files", "2019-Nov.csv"], "--files names 2019-Nov.csv, which the source does not have"),
])
def test_cli_an_empty_selection_exits_2_with_one_json_object_naming_what_was_looked_for(
        extra, message, prefect_server, data_db, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    if extra:
        write_sample(folder, rows_per_file=10, files=("2019-Oct.csv",))
    done = _cli(["run", "--source", "local", "--path", str(folder), *extra, "--database-url", data_db, "--json"],
                {**prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "data")})
    out = one_json_object(done)
    assert done.returncode == 2 and out["status"] == "error" and out["exit_code"] == 2, done.stderr[-2000:]
    assert message in out["error"], out["error"]
    assert out["files"] == [] and out["rows_loaded"] == 0


def test_cli_json_is_one_object_when_the_source_fails(prefect_server, data_db, tmp_path):
    with serving({}) as web:  # every path: 404
        done = _cli(["run", "--source", "url", "--url", f"{web.url}/2019-Oct.csv", "--database-url", data_db,
                     "--json"], {**prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "data")})
    out = one_json_object(done)
    assert done.returncode == 1 and out["status"] == "failed", done.stderr[-2000:]
    (file,) = out["files"]
    assert (file["file"], file["status"]) == ("2019-Oct.csv", "failed") and "HTTP 404" in file["error"]
    assert out["flow_run_url"].startswith(prefect_server.api_url.removesuffix("/api") + "/runs/flow-run/")


@pytest.mark.parametrize("value", ["-5", "0", "ten"])
def test_cli_refuses_a_non_positive_row_count_before_anything_starts(value):
    done = _cli(["run", "--json", "--rows-per-file", value], {})
    assert done.returncode == 2 and "--rows-per-file" in done.stderr and "Traceback" not in done.stderr
