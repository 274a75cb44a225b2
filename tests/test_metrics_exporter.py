"""T2: `ecommerce-etl metrics` against a real PostgreSQL and a real Prefect server (services on, basic
auth on, its own /api/metrics on), scraped over HTTP as Prometheus would.

The figures are checked against the database itself (count(*) of the table, the quarantine rows
classified by flows.transform.reason_class) and against the API (the runs the test made).
"""

from __future__ import annotations

import collections
import csv
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chart_render import base_job_template, render
from flows.metrics.families import FAMILIES
from flows.sample import write_sample
from flows.transform import reason_class
from helpers import BIN, free_port, rows, scalar, started_prefect_server

POOL = "metrics-no-worker"
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


# starts a Prefect server of its own (besides the session PostgreSQL)
pytestmark = pytest.mark.integration


@dataclass
class Server:
    api_url: str
    auth: tuple[str, str]
    env: dict  # a Prefect client's environment (auth string included)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """A Prefect server with its services (events are persisted by one), basic auth and /api/metrics."""
    auth = ("ops", secrets.token_urlsafe(12))
    extra = {
        "PREFECT_SERVER_API_AUTH_STRING": ":".join(auth),
        "PREFECT_SERVER_METRICS_ENABLED": "true",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "5",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "2",
    }
    home = tmp_path_factory.mktemp("metrics-server")
    database = f"prefect_metrics_{uuid.uuid4().hex[:8]}"
    try:
        with started_prefect_server(postgres, home, database, services=True, extra_env=extra) as started:
            env = {**os.environ, **started.env, "PREFECT_API_AUTH_STRING": ":".join(auth)}
            yield Server(api_url=started.api_url, auth=auth, env=env)
    finally:
        log = home / "server.log"
        print(f"server log tail:\n{log.read_text()[-3000:] if log.exists() else ''}", file=sys.stderr)


# --- scraping ----------------------------------------------------------------------------------
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def pick(series: Series, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in series.items() if n == name and want <= set(lbl)}


def one(series: Series, name: str, **labels: str) -> float:
    found = pick(series, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {found}"
    return next(iter(found.values()))


@dataclass
class Exporter:
    url: str
    process: subprocess.Popen

    def scrape(self) -> Series:
        response = httpx.get(f"{self.url}/metrics", timeout=60)
        response.raise_for_status()
        assert response.headers["content-type"].startswith("text/plain")
        return parse(response.text)

    def wait_for(self, check, timeout: float = 90) -> Series:
        """Scrape until check(series) holds (events reach the API a few seconds after a run)."""
        deadline = time.monotonic() + timeout
        while True:
            series = self.scrape()
            if check(series):
                return series
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen within {timeout}s; last scrape:\n{_show(series)}")
            time.sleep(2)


def _show(series: Series) -> str:
    return "\n".join(f"{n}{dict(lbl)} {v}" for (n, lbl), v in sorted(series.items()))


@pytest.fixture(scope="module")
def data_url(postgres) -> str:
    return postgres.create_database("t_metrics_exporter")


@pytest.fixture(scope="module")
def exporter(server, data_url, tmp_path_factory):
    port = free_port()
    env = {**server.env, "DATABASE_URL": data_url}
    argv = [
        str(BIN / "ecommerce-etl"),
        "metrics",
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--cache-seconds",
        "0",
    ]
    log = tmp_path_factory.mktemp("exporter") / "exporter.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield Exporter(url, process)
    finally:
        process.terminate()
        assert process.wait(20) == 0, "SIGTERM ends the exporter cleanly"
        print(f"exporter log:\n{log.read_text()[-3000:]}", file=sys.stderr)


def run_pipeline(server: Server, data_url: str, folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**server.env, "DATABASE_URL": data_url, "ETL_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [str(BIN / "ecommerce-etl"), "run", "--source", "local", "--path", str(folder), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _inputs(folder: Path) -> None:
    """Two sample months, one with bad rows of several reason classes, and a file with a wrong header."""
    write_sample(folder, {"2019-Oct.csv": 300, "2019-Nov.csv": 200}, 7, files=("2019-Oct.csv", "2019-Nov.csv"))
    header, *records = list(csv.reader((folder / "2019-Nov.csv").read_text().splitlines()))
    for i, record in enumerate(records):
        if i % 10 == 0:
            record[header.index("price")] = f"price-{i}"
        elif i % 10 == 1:
            record[header.index("event_time")] = "2019-11-31 00:00:00 UTC"
        elif i % 10 == 2:
            record.append("extra")
    with (folder / "2019-Nov.csv").open("w", newline="") as out:
        csv.writer(out).writerows([header, *records])
    (folder / "broken.csv").write_text("not,the,header\n1,2,3\n")


# --- the tests ---------------------------------------------------------------------------------
def test_exporter_figures_equal_the_database_and_the_api(server, exporter, data_url, tmp_path):
    before = exporter.scrape()
    assert one(before, "ecommerce_etl_exporter_source_up", source="database") == 1
    assert one(before, "ecommerce_etl_exporter_source_up", source="prefect") == 1
    assert not pick(before, "ecommerce_etl_rows_loaded"), "no target yet: no table series"

    folder = tmp_path / "in"
    _inputs(folder)
    done = run_pipeline(server, data_url, folder, tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]  # broken.csv failed, the months loaded
    by_file = {f["file"]: f for f in json.loads(done.stdout)["files"]}
    assert by_file["broken.csv"]["status"] == "failed" and by_file["2019-Nov.csv"]["rows_quarantined"] == 60

    table = {"schema": "public", "table": "ecommerce_events"}
    series = exporter.wait_for(
        lambda s: (
            pick(s, "ecommerce_etl_file_outcome", file="broken.csv", status="failed")
            and pick(s, "ecommerce_etl_flow_runs", deployment="(none)", state_type="FAILED")
        )
    )
    # the data: equal to the tables themselves
    count = scalar(data_url, "select count(*) from ecommerce_events")
    assert count == 300 + 200 - 60
    assert one(series, "ecommerce_etl_rows_loaded", **table) == count
    assert one(series, "ecommerce_etl_rows_read", **table) == 500
    quarantined = [r for (r,) in rows(data_url, "select reason from ecommerce_events_quarantine")]
    assert one(series, "ecommerce_etl_rows_quarantined", **table) == len(quarantined) == 60
    by_reason = {dict(lbl)["reason"]: v for lbl, v in pick(series, "ecommerce_etl_quarantined_rows_by_reason").items()}
    assert by_reason == dict(collections.Counter(map(reason_class, quarantined)))
    assert len(by_reason) == 3 and not any(f"price-{i}" in r for r in by_reason for i in range(200))
    assert one(series, "ecommerce_etl_files_loaded", **table) == 2
    assert one(series, "ecommerce_etl_file_rows_loaded", **table, file="2019-Oct.csv") == 300
    for file, read in (("2019-Oct.csv", 300), ("2019-Nov.csv", 200)):
        seconds = one(series, "ecommerce_etl_file_load_duration_seconds", file=file)
        assert 0 < seconds < 120
        assert one(series, "ecommerce_etl_file_load_rows_per_second", file=file) == pytest.approx(read / seconds)
        size = (folder / file).stat().st_size
        assert one(series, "ecommerce_etl_file_size_bytes", file=file) == size
        assert one(series, "ecommerce_etl_file_load_bytes_per_second", file=file) == pytest.approx(size / seconds)
    loaded_at = scalar(data_url, "select extract(epoch from max(loaded_at))::float8 from ecommerce_events_ledger")
    assert one(series, "ecommerce_etl_last_load_timestamp_seconds", **table) == pytest.approx(loaded_at)
    assert one(series, "ecommerce_etl_last_success_timestamp_seconds", **table) >= loaded_at
    assert one(series, "ecommerce_etl_database_size_bytes") > 1_000_000
    outcomes = {dict(lbl)["file"]: dict(lbl)["status"] for lbl in pick(series, "ecommerce_etl_file_outcome")}
    assert outcomes == {"2019-Oct.csv": "loaded", "2019-Nov.csv": "loaded", "broken.csv": "failed"}
    # the runs: the pipeline run failed (a file failed); it ran without a deployment
    assert one(series, "ecommerce_etl_flow_runs", deployment="(none)", state_type="FAILED") >= 1
    assert one(series, "ecommerce_etl_flow_run_last_duration_seconds", deployment="(none)") > 0
    _bounded_labels(series)

    # The file fixed and loaded again: its failure is over, nothing else changed.
    (folder / "broken.csv").write_text((folder / "2019-Oct.csv").read_text().splitlines()[0] + "\n")
    done = run_pipeline(server, data_url, folder, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    def statuses(s: Series) -> dict[str, str]:
        return {dict(lbl)["file"]: dict(lbl)["status"] for lbl in pick(s, "ecommerce_etl_file_outcome")}

    # the run's three events reach the server's event store in batches: wait for all of them, not the first
    rerun = {"2019-Oct.csv": "skipped", "2019-Nov.csv": "skipped", "broken.csv": "loaded"}
    series = exporter.wait_for(lambda s: statuses(s) == rerun)
    assert not pick(series, "ecommerce_etl_file_outcome", status="failed")
    assert one(series, "ecommerce_etl_rows_loaded", **table) == scalar(
        data_url, "select count(*) from ecommerce_events"
    )
    assert one(series, "ecommerce_etl_files_loaded", **table) == 3
    assert one(series, "ecommerce_etl_flow_run_last_success_timestamp_seconds", deployment="(none)") > loaded_at


def _bounded_labels(series: Series) -> None:
    """Only the catalogued metrics and labels, and no run id in any label value."""
    for name, labels in series:
        assert name in FAMILIES, name
        assert [k for k, _ in labels] == sorted(FAMILIES[name][1]), (name, labels)
        assert not any(UUID_TEXT.search(v) for _, v in labels), (name, labels)


def test_waiting_runs_and_an_idle_work_pool(server, exporter, tmp_path):
    """Deployments registered as the chart's hook does, into a pool no worker polls: a run of the
    sample deployment turns Late, and the exporter says for how long; the pool is not ready."""
    template = tmp_path / "base-job-template.json"
    template.write_text(json.dumps(base_job_template(render())))
    argv = [str(BIN / "ecommerce-etl"), "deploy", "--pool", POOL, "--base-job-template", str(template)]
    deployed = subprocess.run(argv, env=server.env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    series = exporter.scrape()
    sample = {"deployment": "ecommerce-etl/sample"}
    assert one(series, "ecommerce_etl_flow_runs_waiting_oldest_seconds", **sample, state="Late") == 0
    assert one(series, "ecommerce_etl_work_pool_ready", work_pool=POOL) == 0
    assert one(series, "ecommerce_etl_work_pool_workers", work_pool=POOL, status="online") == 0

    started = time.time()
    created = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "ecommerce-etl/sample"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    series = exporter.wait_for(
        lambda s: one(s, "ecommerce_etl_flow_runs_waiting_oldest_seconds", **sample, state="Late") > 0, timeout=60
    )
    late = one(series, "ecommerce_etl_flow_runs_waiting_oldest_seconds", **sample, state="Late")
    assert 0 < late <= time.time() - started + 1
    assert one(series, "ecommerce_etl_flow_runs", **sample, state_type="SCHEDULED", state="Late") == 1
    assert one(series, "ecommerce_etl_flow_runs_waiting_oldest_seconds", **sample, state="Pending") == 0
    _bounded_labels(series)


def test_server_metrics_endpoint_requires_the_auth_string(server):
    """The server's own /api/metrics (process and internal counters) is behind basic auth, unlike
    /api/health: a scraper needs the credentials."""
    assert httpx.get(f"{server.api_url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{server.api_url}/metrics", timeout=10).status_code == 401
    response = httpx.get(f"{server.api_url}/metrics", auth=server.auth, timeout=10)
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert "process_cpu_seconds" in names or "python_info" in names, sorted(names)[:20]


def test_a_source_that_cannot_be_read_is_reported_not_fatal(server, tmp_path):
    """Database down: `--once` exits 1 and says so in the figures; the Prefect side still reads."""
    env = {**server.env, "DATABASE_URL": f"postgresql://nobody:x@127.0.0.1:{free_port()}/nothing"}
    argv = [str(BIN / "ecommerce-etl"), "metrics", "--once"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    series = parse(done.stdout)
    assert one(series, "ecommerce_etl_exporter_source_up", source="database") == 0
    assert one(series, "ecommerce_etl_exporter_source_up", source="prefect") == 1
    assert not pick(series, "ecommerce_etl_rows_loaded")
    assert "x@" not in done.stderr and "cannot read the database" in done.stderr


# --- the SQL reason class (flows/sql.py) against flows.transform.reason_class ------------------
def _reasons():
    from hypothesis import strategies as st

    from flows.csv_spec import CSV_COLUMNS
    from flows.transform.fields import MAX_FIELD_CHARS, check_field
    from flows.transform.records import MAX_RECORD_BYTES

    columns = st.sampled_from([c.name for c in CSV_COLUMNS])
    # every value the loader can put into a reason: valid UTF-8 without NUL (others get a fixed wording)
    values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
    tricky = st.sampled_from(['" is not ', '" has no ', "\n", '"', "\\1", "found 3", " UTC", "é", "a\nb"])
    value = st.lists(st.one_of(values, tricky), max_size=4).map("".join)
    field = st.builds(check_field, columns, value).filter(bool)
    fixed = st.sampled_from(
        [
            f"record runs past {MAX_RECORD_BYTES} bytes (unclosed quote?)",
            f"price: field of {MAX_FIELD_CHARS + 1} characters exceeds {MAX_FIELD_CHARS}",
            "brand: field of 70000 characters exceeds 65536",
            "user_session: contains a NUL byte",
            "event_time: contains bytes that are not UTF-8",
        ]
    )
    counts = st.integers(0, 400).map(lambda n: f"expected 9 fields, found {n}")
    unparseable = value.map(lambda text: f"unparseable CSV: {text}")
    return st.lists(st.one_of(field, fixed, counts, unparseable), min_size=1, max_size=30)


def test_sql_reason_class_agrees_with_python(postgres):
    """The exporter groups quarantine rows in SQL; the reports group them in Python. Same classes."""
    import psycopg2
    from hypothesis import given, settings

    from flows import sql as q

    connection = psycopg2.connect(postgres.admin_url().replace("+psycopg2", ""))
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(_reasons())
    def agree(reasons):
        with connection.cursor() as cur:
            cur.execute(q.reason_classes(), (reasons,))
            in_sql = [c for (c,) in cur.fetchall()]
        assert in_sql == [reason_class(r) for r in reasons]
        seen.update(in_sql)

    try:
        agree()
    finally:
        connection.close()
    # the examples reached every rule: value removed, count removed, length kept, unparseable
    assert {"unparseable CSV", "expected 9 fields", "price: field longer than 65536 characters"} <= seen
    assert any(": value is not " in c for c in seen) and any(": value has no " in c for c in seen)


def test_the_ledger_records_each_loads_duration_also_in_an_older_ledger(engine, tmp_path):
    """load_seconds (the exporter's rows and bytes per second) is written by every load; a ledger from
    before it (or before size_bytes) gets the columns at the next run, and its old entries read as
    unknown."""
    import sqlalchemy as sa

    from flows.load import ensure_schema, load_file
    from flows.metrics.data import DataReader
    from flows.sql import Names

    names = Names("public", "ecommerce_events")
    first, second = write_sample(tmp_path, 500, 3, files=("2019-Oct.csv", "2019-Nov.csv"))
    assert load_file(engine, names, first).status == "loaded"
    with engine.begin() as conn:
        conn.execute(sa.text("alter table ecommerce_events_ledger drop column load_seconds, drop column size_bytes"))
    old = {f.file: f for f in DataReader(engine, "public").read().tables[0].files}
    assert old["2019-Oct.csv"].load_seconds is None and old["2019-Oct.csv"].size_bytes is None
    ensure_schema(engine, names)  # what every run does first
    result = load_file(engine, names, second)
    ledger = {f.file: f for f in DataReader(engine, "public").read().tables[0].files}
    assert ledger["2019-Oct.csv"].load_seconds is None
    assert 0 < ledger["2019-Nov.csv"].load_seconds <= result.seconds
    assert ledger["2019-Nov.csv"].size_bytes == second.stat().st_size
