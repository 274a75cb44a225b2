"""Faults on a real PostgreSQL and a real Prefect server: SIGKILL at many points of a multi-file
load, Postgres restarts, two runs at once, transient and permanent connection errors.

After every fault and its rerun: each file's rows read = loaded + quarantined = the reference
(clean) load, no (source_file, source_line) twice, no orphan ledger entry, partition, staging
table or sequence, and the same quarantined lines with the same reasons.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from fault_tools import NAMES, Trap, audit

from flows import etl, tasks
from flows.load import Tuning, ensure_schema, load_file
from flows.sample import write_sample
from flows.settings import get_settings
from helpers import CLI, started_postgres

TOOLS = Path(__file__).with_name("fault_tools.py")
pytestmark = pytest.mark.integration  # a PostgreSQL of its own, restarted mid-load

FILES = ("2019-Oct.csv", "2019-Nov.csv", "2019-Dec.csv")
CHUNK_BYTES = Tuning().chunk_bytes
# Nov is larger than one COPY chunk, so a kill at a byte offset lands mid-COPY.
ROWS = {"2019-Oct.csv": 1500, "2019-Nov.csv": 10_000, "2019-Dec.csv": 800}
# (file, line, replacement): a value COPY refuses on the fast path (31 November, Nov), structural errors
# that force the careful path (Dec).
BAD_LINES = {
    "2019-Nov.csv": {500: lambda l: "2019-11-31" + l[10:]},
    "2019-Dec.csv": {
        10: lambda l: "only,three,fields\n",
        20: lambda l: l.replace(" UTC", ""),
        30: lambda l: l.replace(l.split(",")[1], "bogus", 1),
        40: lambda l: l.replace(l.split(",")[6], "NaN", 1),
    },
}


def write_source(folder: Path) -> list[Path]:
    paths = []
    for name in FILES:
        (path,) = write_sample(folder, rows_per_file=ROWS[name], files=(name,))
        lines = path.read_text().splitlines(keepends=True)
        for number, change in BAD_LINES.get(name, {}).items():
            lines[number - 1] = change(lines[number - 1])
        path.write_text("".join(lines))
        paths.append(path)
    return paths


def load_all(url: str, paths: list[Path], **kw) -> list:
    engine = sa.create_engine(url)
    try:
        ensure_schema(engine, NAMES)
        return [load_file(engine, NAMES, p, **kw) for p in paths]
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> list[Path]:
    return write_source(tmp_path_factory.mktemp("faults-source"))


@pytest.fixture(scope="module")
def reference(postgres, source):
    """A clean load: what every fault scenario must end with. Checked against the source itself."""
    url = postgres.create_database("faults_reference")
    results = load_all(url, source)
    state = audit(url)
    assert state.problems == state.leftovers == [] and state.duplicated == 0
    for path, result in zip(source, results):
        records = len(path.read_text().splitlines()) - 1
        bad = len(BAD_LINES.get(path.name, {}))
        assert result.status == "loaded"
        assert state.counts(path.name) == (records, records - bad, bad), path.name
        assert sorted(state.quarantine.get(path.name, {})) == sorted(BAD_LINES.get(path.name, {}))
    assert [r.load_path for r in results] == ["fast", "fast", "careful"]
    return state


def check_final(url: str, reference, record_property, changed: dict | None = None) -> None:
    """Everything as in the reference load; `changed` = {file: extra rows} for files edited since."""
    state = audit(url)
    changed = changed or {}
    lost = 0
    for name in FILES:
        read, loaded, quarantined = reference.counts(name)
        expected = (read + changed.get(name, 0), loaded + changed.get(name, 0), quarantined)
        lost += abs(expected[0] - state.counts(name)[0])
        assert state.counts(name) == expected, name
    record_property("lost", lost)
    record_property("duplicated", state.duplicated)
    assert state.problems == [] and state.leftovers == []
    assert state.duplicated == 0
    assert state.quarantine == reference.quarantine  # same lines, same reasons


# --- SIGKILL ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KillPoint:
    file: int = 0  # which file's load (1-based; 0 = ensure_schema)
    step: str | None = None  # the named step of the load (flows/load/pipeline.py) where the kill lands
    when: str = "before"
    byte: tuple[int, int] | None = None  # (file number, byte offset) within the COPY stream
    after_file: int | None = None
    committed: int = 0  # files of this run committed when the kill lands
    edit_first: bool = False  # file 1 was loaded before and changed since: the kill hits its replacement


def at(file: int, step: str, when: str = "before", committed: int | None = None, **kw) -> KillPoint:
    return KillPoint(file, step, when, committed=file - 1 if committed is None else committed, **kw)


KILL_POINTS = {
    "schema-ddl": KillPoint(0, "schema.create"),
    "f1-after-lock-and-ledger-check": at(1, "check-ledger", "after"),
    "f1-after-dropping-orphans": at(1, "drop-orphans", "after"),
    "f1-before-create-segment": at(1, "stage-fast.create"),
    "f1-before-copy": at(1, "stage-fast.copy"),
    "f1-after-segment-commit": at(1, "stage-fast.commit", "after"),
    "f1-after-commit": at(1, "commit.transaction", "after", committed=1),
    "f2-mid-copy": KillPoint(byte=(2, CHUNK_BYTES + 4096), committed=1),
    "f2-after-copy": at(2, "stage-fast.copy", "after"),
    "f2-before-drop-category-column": at(2, "stage-fast.finish"),
    "f2-before-assemble-partition": at(2, "commit.assemble"),
    "f2-before-attach-partition": at(2, "commit.attach"),
    "f2-after-attach-partition": at(2, "commit.attach", "after"),
    "between-f2-and-f3": KillPoint(after_file=2, committed=2),
    "f3-before-careful-copy": at(3, "stage-careful.copy"),
    "f3-after-careful-copy": at(3, "stage-careful.copy", "after"),
    "f3-after-quarantine-write": at(3, "commit.quarantine", "after"),
    "f3-before-ledger-insert": at(3, "commit.ledger"),
    "f3-after-ledger-insert": at(3, "commit.ledger", "after"),
    "f3-before-commit": at(3, "commit.transaction"),
    "f1-replace-before-drop-old-partition": at(1, "commit.drop-old", edit_first=True),
    "f1-replace-after-attach": at(1, "commit.attach", "after", edit_first=True),
}
EDIT_ROWS = 5


def run_child(url: str, paths: list[Path], point: KillPoint) -> subprocess.CompletedProcess:
    trap = {"file": point.file, "step": point.step, "when": point.when} if point.step else None
    spec = {"url": url, "files": [str(p) for p in paths], "trap": trap, "byte": point.byte, "after_file": point.after_file}
    return subprocess.run([sys.executable, str(TOOLS), json.dumps(spec)], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("name", list(KILL_POINTS))
def test_sigkill_then_rerun_loads_everything_exactly_once(name, source, reference, data_db, tmp_path, record_property):
    point = KILL_POINTS[name]
    paths = source
    ledger_before = {}
    if point.edit_first:  # loaded once, then the first file grows: the kill hits the swap
        paths = [Path(shutil.copy(p, tmp_path / p.name)) for p in source]
        load_all(data_db, paths)
        ledger_before = {f: v[0] for f, v in audit(data_db).ledger.items()}
        lines = paths[0].read_text().splitlines(keepends=True)
        paths[0].write_text("".join(lines + lines[1:1 + EDIT_ROWS]))

    done = run_child(data_db, paths, point)
    record_property("kill_point", name)
    assert done.returncode == -9, f"the kill point was never reached: rc={done.returncode}\n{done.stderr[-2000:]}"

    # what the dead process left: whole files or nothing, and no debris
    after_kill = audit(data_db)
    assert after_kill.problems == []
    committed = {p.name for p in paths[:point.committed]}
    assert set(after_kill.ledger) == set(ledger_before) | committed
    # an interrupted replacement keeps the old version whole
    assert {f: after_kill.ledger[f][0] for f in set(ledger_before) - committed} == \
        {f: c for f, c in ledger_before.items() if f not in committed}

    rerun = load_all(data_db, paths)
    edited = {paths[0].name} if point.edit_first else set()
    assert [r.status for r in rerun] == [
        "skipped" if p.name in after_kill.ledger and p.name not in edited else "loaded" for p in paths]
    check_final(data_db, reference, record_property, {FILES[0]: EDIT_ROWS} if point.edit_first else None)


# --- Postgres restarts (own server: the session one is shared) ----------------------------------
@pytest.fixture(scope="module")
def own_pg():
    with started_postgres("restarts", "restart-Pw-7781") as handle:
        yield handle


COPY_RETRY_DELAYS = [1.0, 3.0, 6.0]


@pytest.fixture
def flow_env(monkeypatch, tmp_path, prefect_api):
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "data"))
    # Short but not zero: 10 s in all, enough for a restart on a busy machine (with [0] the three
    # retries of a file that started during the restart ran out in 40 ms, while the server was down).
    monkeypatch.setattr(etl.copy_file, "retry_delay_seconds", COPY_RETRY_DELAYS)
    return monkeypatch


def test_postgres_restart_mid_copy_is_retried_by_the_task(own_pg, source, reference, flow_env, record_property):
    url = own_pg.create_database("restart_flow")
    flow_env.setenv("DATABASE_URL", url)
    before = own_pg.started_at()
    restarts: list[float] = []  # seconds each restart took
    lock = threading.Lock()  # progress can be reported from several COPY threads

    def restart_mid_copy(name, done, total):
        with lock:
            if name == FILES[1] and done > CHUNK_BYTES and not restarts:
                started = time.monotonic()
                own_pg.restart()
                restarts.append(time.monotonic() - started)

    with etl.run_options(etl.RunOptions(get_settings(), progress=restart_mid_copy)):
        summary = etl.ecommerce_etl(source="local", path=str(source[0].parent)).as_json()
    assert restarts and own_pg.started_at() != before  # the server really went down mid-COPY
    record_property("restart_seconds", round(restarts[0], 2))
    assert [f["status"] for f in summary["files"]] == ["loaded"] * 3
    check_final(url, reference, record_property)


@pytest.mark.parametrize("file, step, when", [
    (2, "commit.attach", "before"),
    (3, "commit.ledger", "after"),
    (1, "commit.transaction", "before"),
], ids=["f2-attach", "f3-after-ledger-insert", "f1-commit"])
def test_postgres_restart_in_a_transaction_then_load_file_again(own_pg, source, reference, file, step, when,
                                                                record_property):
    url = own_pg.create_database(f"restart_f{file}_" + step.replace(".", "_").replace("-", "_"))
    before = own_pg.started_at()
    trap = Trap(step, own_pg.restart, file, when)
    engine = sa.create_engine(url)  # no pre-ping: the dead connection must not be pooled again
    ensure_schema(engine, NAMES)
    failures = []
    try:
        for number, path in enumerate(source, start=1):
            for _attempt in range(2):  # what the task's retry does: call load_file again
                try:
                    assert load_file(engine, NAMES, path, checkpoint=trap.checkpoint(number)).status == "loaded"
                    break
                except (psycopg2.Error, sa.exc.DBAPIError) as exc:  # load_file raises the driver's errors raw
                    failures.append(exc)
    finally:
        engine.dispose()
    assert trap.fired and own_pg.started_at() != before
    assert len(failures) == 1, failures  # exactly the attempt the restart broke...
    assert isinstance(failures[0], psycopg2.OperationalError)  # ...reported as what happened
    record_property("restarts", 1)
    check_final(url, reference, record_property)


# --- two runs at once ---------------------------------------------------------------------------
def test_two_cli_runs_at_once_load_each_file_once(prefect_server, data_db, source, reference, tmp_path, record_property):
    env = {**os.environ, **prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "data")}
    args = [CLI, "run", "--source", "local", "--path", str(source[0].parent), "--database-url", data_db, "--json"]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [e[-2000:] for _, e in outputs]
    statuses: dict[str, list[str]] = {}
    for out, _err in outputs:
        for f in json.loads(out)["files"]:
            statuses.setdefault(f["file"], []).append(f["status"])
    assert {f: sorted(s) for f, s in statuses.items()} == {name: ["loaded", "skipped"] for name in FILES}
    record_property("concurrent_runs", 2)
    check_final(data_db, reference, record_property)


# --- transient and permanent connection errors --------------------------------------------------
def test_database_down_at_start_is_retried_until_it_is_back(own_pg, source, reference, flow_env, record_property):
    url = own_pg.create_database("transient")
    flow_env.setenv("DATABASE_URL", url)
    flow_env.setattr(etl.ensure_schema_task, "retry_delay_seconds", [2, 2, 2])
    attempts = []

    def first_attempt_meets_a_stopped_server(engine, names):
        attempts.append(own_pg.server.is_running())
        if len(attempts) == 1:
            own_pg.server.stop()
            threading.Timer(0.5, own_pg.server.start).start()  # back before the retry
        return ensure_schema(engine, names)

    flow_env.setattr(tasks, "ensure_schema", first_attempt_meets_a_stopped_server)
    summary = etl.ecommerce_etl(source="local", path=str(source[0].parent)).as_json()
    assert len(attempts) == 2  # the refused connection was retried once, not given up on
    assert [f["status"] for f in summary["files"]] == ["loaded"] * 3
    check_final(url, reference, record_property)


@pytest.mark.parametrize("break_url, message", [
    (lambda url: url.replace("restart-Pw-7781", "wrong-Pw-0000"), 'password authentication failed for user "postgres"'),
    (lambda url: url.rsplit("/", 1)[0] + "/no_such_db", 'database "no_such_db" does not exist'),
], ids=["bad-password", "missing-database"])
def test_permanent_connection_errors_fail_fast_with_a_clear_message(own_pg, prefect_server, break_url, message, tmp_path, source):
    url = break_url(own_pg.admin_url("postgres"))
    attempts = own_pg.log_count(message)
    env = {**os.environ, **prefect_server.env, "ETL_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([CLI, "run", "--source", "local", "--path", str(source[0].parent), "--database-url", url, "--json"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]  # Prefect logs the failed run above it
    assert last.startswith("ecommerce-etl: error: cannot use the database:") and message in last, last
    assert own_pg.log_count(message) - attempts == 1  # one connection attempt: no retry storm
    assert "wrong-Pw-0000" not in done.stdout + done.stderr and own_pg.password not in done.stdout + done.stderr
