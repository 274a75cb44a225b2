"""T2 + browser: `make run` as a new user meets it, and what the run shows in the Prefect UI.

`ecommerce-etl run` (what `make run` calls) runs in a subprocess with an empty home, no
PREFECT_API_URL (the test session's is removed), a fresh local state folder and a free
ETL_PREFECT_PORT. It must start the local Prefect server (UI and services on, metadata in the
embedded PostgreSQL) on its first try, keep the runs there, reuse the server next time, and stop
cleanly. Headless Chromium then looks at the runs as a person would; screenshots go to
test-results/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import browser
from flows.localdb import LocalPostgres
from flows.csv_spec import MONTH_FILES
from helpers import CLI, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # the CLI starts its own servers

SAMPLE_ROWS = 300
FLOW_RUN_URL = re.compile(r"^http://127\.0\.0\.1:(\d+)/runs/flow-run/([0-9a-f-]{36})$")


@dataclass
class FrontDoor:
    root: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ETL_", "DATABASE_URL", "PG"))}
        env.update({"HOME": str(self.root / "home"), "ETL_LOCAL_DIR": str(self.root / ".data"),
                    "ETL_DATA_DIR": str(self.root / "data"), "ETL_PREFECT_PORT": str(self.port),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        return env

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=self.root, timeout=timeout,
                              env={**self.env, **(env or {})})

    def run_json(self, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
        done = self.cli("run", *args, "--json")
        out = json.loads(done.stdout)  # exactly one JSON object, whatever happened
        return done, out

    def server_pid(self) -> int:
        return int((self.root / ".data" / "prefect-server.pid").read_text().split()[0])

    def postgres(self) -> LocalPostgres:
        return LocalPostgres(self.root / ".data" / "postgres")

    def post(self, path: str, body: dict) -> list | dict:
        response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def front_door(tmp_path_factory):
    root = tmp_path_factory.mktemp("front-door")
    (root / "home").mkdir()
    door = FrontDoor(root, free_port())
    yield door
    door.cli("stop", timeout=120)


@pytest.fixture(scope="module")
def first_run(front_door) -> tuple[subprocess.CompletedProcess, dict, float]:
    started = time.monotonic()
    done, out = front_door.run_json("--source", "sample", "--rows-per-file", str(SAMPLE_ROWS))
    return done, out, time.monotonic() - started


def _flow_run_id(out: dict, port: int) -> str:
    match = FLOW_RUN_URL.match(out["flow_run_url"] or "")
    assert match and int(match[1]) == port, out["flow_run_url"]
    return match[2]


def _children(door: FrontDoor, parent_id: str) -> list[dict]:
    return door.post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent_id]}}})


def _artifacts(door: FrontDoor, flow_run_id: str) -> dict[str, dict]:
    found = door.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return {a["key"]: a for a in found}


# --- the front door -----------------------------------------------------------------------------


def test_first_run_on_a_fresh_machine_keeps_the_run_in_the_local_ui(front_door, first_run):
    done, out, seconds = first_run
    print(f"\nfirst run (fresh home, server start included): {seconds:.1f}s", file=sys.stderr)
    assert done.returncode == 0, done.stderr[-4000:]
    assert out["status"] == "ok" and out["rows_loaded"] == 5 * SAMPLE_ROWS
    assert f"Flow run in the Prefect UI: {out['flow_run_url']}" not in done.stdout  # --json: stdout is the object
    parent_id = _flow_run_id(out, front_door.port)

    parent = httpx.get(f"{front_door.api}/flow_runs/{parent_id}", timeout=30).json()
    assert parent["state"]["type"] == "COMPLETED"
    assert re.fullmatch(r"sample \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", parent["name"]), parent["name"]
    children = _children(front_door, parent_id)
    assert sorted(c["name"] for c in children) == sorted(f"load-{f}" for f in MONTH_FILES)
    assert {c["state"]["type"] for c in children} == {"COMPLETED"}

    artifacts = _artifacts(front_door, parent_id)
    summary = artifacts["ecommerce-etl-summary"]["data"]
    summary = json.loads(summary) if isinstance(summary, str) else summary
    assert {r["file"]: r["rows loaded"] for r in summary} == dict.fromkeys(MONTH_FILES, SAMPLE_ROWS)
    assert "Nothing quarantined" in artifacts["ecommerce-etl-quarantine"]["data"]


def test_psql_opens_the_embedded_database_the_run_loaded(front_door, first_run):
    done = front_door.cli("psql", "-c", "select source_file, count(*) from ecommerce_events group by 1 order by 1",
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in MONTH_FILES:
        assert f" {name} | {SAMPLE_ROWS:>5}" in done.stdout, done.stdout
    assert "(5 rows)" in done.stdout


def test_the_local_server_keeps_its_metadata_in_the_embedded_postgres(front_door, first_run):
    pg = front_door.postgres()
    assert int(pg.psql("SELECT count(*) FROM flow_run", database="prefect")) >= 6  # the parent and 5 subflows
    assert pg.psql("SHOW fsync").strip() == "on"  # it holds the user's data: durable
    assert pg.psql("SHOW full_page_writes").strip() == "on"
    assert (front_door.root / ".data" / "prefect-server.log").stat().st_size > 0
    assert not (front_door.root / ".data" / "prefect-home" / "prefect.db").exists()  # not SQLite


def test_events_name_the_file_and_relate_the_runs(front_door, first_run):
    _, out, _ = first_run
    parent_id = _flow_run_id(out, front_door.port)
    children = {c["id"]: c["name"] for c in _children(front_door, parent_id)}
    body = {"filter": {"event": {"prefix": ["ecommerce.file."]},
                       "related": {"id": [f"prefect.flow-run.{parent_id}"]}}, "limit": 50}
    deadline = time.monotonic() + 60
    while len(events := front_door.post("/events/filter", body)["events"]) < len(MONTH_FILES):
        assert time.monotonic() < deadline, f"events so far: {events}"  # the server persists them in batches
        time.sleep(2)
    assert sorted(e["resource"]["prefect.resource.id"] for e in events) == sorted(
        f"ecommerce.file.public.ecommerce_events.{f}" for f in MONTH_FILES)
    for event in events:
        assert event["event"] == "ecommerce.file.loaded"
        assert event["payload"]["rows_loaded"] == SAMPLE_ROWS and event["payload"]["rows_quarantined"] == 0
        related = {r["prefect.resource.role"]: r for r in event["related"]}
        assert related["flow-run"]["prefect.resource.id"] == f"prefect.flow-run.{parent_id}"
        assert related["flow"]["prefect.resource.name"] == "ecommerce-etl"
        child = related["load-file-run"]["prefect.resource.id"].removeprefix("prefect.flow-run.")
        assert children[child] == f"load-{event['resource']['ecommerce.file']}"


def test_second_run_reuses_the_server_and_skips_every_file(front_door, first_run):
    pid = front_door.server_pid()
    started = time.monotonic()
    done, out = front_door.run_json("--source", "sample", "--rows-per-file", str(SAMPLE_ROWS))
    print(f"\nwarm run: {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {f["status"] for f in out["files"]} == {"skipped"}
    assert front_door.server_pid() == pid
    assert _prefect_servers_on(front_door.port) == [pid]


def test_stop_then_run_works_again(front_door, first_run):
    pid = front_door.server_pid()
    stopped = front_door.cli("stop")
    assert stopped.returncode == 0 and "local Prefect server: stopped" in stopped.stdout, stopped.stdout
    assert "embedded PostgreSQL: stopped" in stopped.stdout
    assert not _alive(pid) and not front_door.postgres().is_running()
    assert front_door.cli("stop").stdout.count("was not running") == 2

    done, out = front_door.run_json("--source", "sample", "--rows-per-file", str(SAMPLE_ROWS))
    assert done.returncode == 0, done.stderr[-3000:]
    assert {f["status"] for f in out["files"]} == {"skipped"}  # the data survived the stop
    assert _prefect_servers_on(front_door.port) == [front_door.server_pid()]


def test_a_foreign_program_on_the_port_is_named_not_used(front_door, tmp_path):
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        done = front_door.cli("run", "--json", env={"ETL_PREFECT_PORT": str(port),
                                                    "ETL_LOCAL_DIR": str(tmp_path / ".data")})
    assert done.returncode == 2, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["status"] == "error" and out["files"] == []
    assert f"port {port}" in out["error"] and "ETL_PREFECT_PORT" in out["error"]
    assert not LocalPostgres(tmp_path / ".data" / "postgres").is_running()  # refused before starting anything


def test_a_user_set_prefect_api_url_is_used_unchanged(front_door, first_run, prefect_server, data_db):
    """The session's server (not the local one) gets the run; no local server starts."""
    folder = front_door.root / "own-server"
    done = front_door.cli("run", "--source", "sample", "--rows-per-file", "50", "--database-url", data_db, "--json",
                          env={"PREFECT_API_URL": prefect_server.api_url, "ETL_LOCAL_DIR": str(folder)})
    assert done.returncode == 0, done.stderr[-3000:]
    url = json.loads(done.stdout)["flow_run_url"]
    assert url.startswith(prefect_server.api_url.removesuffix("/api") + "/runs/flow-run/"), url
    assert not (folder / "prefect-server.pid").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _prefect_servers_on(port: int) -> list[int]:
    """Pids of `prefect server start` processes for this port."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server" in argv and b"start" in argv and str(port).encode() in argv and _alive(int(proc.name)):
            found.append(int(proc.name))
    return found


# --- what a person sees -------------------------------------------------------------------------


def test_browser_shows_the_completed_run_its_subflows_and_the_summary(front_door, first_run):
    _, out, _ = first_run
    parent_id = _flow_run_id(out, front_door.port)
    with browser.browser_page() as page:
        browser.open_flow_run(page, front_door.ui, parent_id, "Completed")
        assert page.get_by_text(re.compile(r"^sample \d{4}-")).first.is_visible()
        browser.screenshot(page, "local-flow-run-completed")

        browser.open_tab(page, "Subflow Runs")
        for name in MONTH_FILES:
            page.get_by_text(f"load-{name}", exact=True).first.wait_for()
        assert page.get_by_text("5 Flow runs").first.is_visible()
        browser.screenshot(page, "local-flow-run-subflows")

        browser.open_tab(page, "Artifacts")
        page.get_by_text("ecommerce-etl-summary", exact=True).first.click()
        page.get_by_text("rows loaded").first.wait_for()
        for name in MONTH_FILES:
            row = page.locator("tr", has_text=name)
            assert str(SAMPLE_ROWS) in row.first.inner_text(), row.first.inner_text()
        browser.screenshot(page, "local-summary-artifact")


def test_browser_shows_a_failed_run_and_why(front_door, first_run):
    folder = front_door.root / "bad"
    folder.mkdir()
    (folder / "2019-Oct.csv").write_text("event_time,event_type,product_id\n2019-10-01 00:00:00 UTC,view,1\n")
    done, out = front_door.run_json("--source", "local", "--path", str(folder))
    assert done.returncode == 1 and out["status"] == "failed", done.stderr[-3000:]
    with browser.browser_page() as page:
        browser.open_flow_run(page, front_door.ui, _flow_run_id(out, front_door.port), "Failed")
        page.get_by_text(re.compile("2019-Oct.csv \\(wrong header")).first.wait_for()
        browser.screenshot(page, "local-flow-run-failed")
        browser.open_tab(page, "Artifacts")
        page.get_by_text("ecommerce-etl-quarantine", exact=True).first.click()
        page.get_by_text("2019-Oct.csv: failed").first.wait_for()
        browser.screenshot(page, "local-quarantine-report-failed-file")
