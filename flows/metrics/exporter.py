"""The exporter: both readers behind one Prometheus collector, cached for a few seconds, served over
HTTP (`/metrics`, and `/healthz` that never touches a source)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric

from flows.metrics.data import DataReader, DataSnapshot, TableData
from flows.metrics.families import FAMILIES
from flows.metrics.runs import WAITING, FileOutcome, RunsReader, RunsSnapshot

log = logging.getLogger("ecommerce_etl.metrics")

Sample = tuple[dict[str, str], float]


@dataclass
class Snapshot:
    data: DataSnapshot | None
    runs: RunsSnapshot | None
    up: dict[str, bool]
    seconds: dict[str, float]


class Exporter:
    """A prometheus_client collector. A scrape within `cache_seconds` of the last read gets the same
    figures, so several scrapers (or an HA Prometheus pair) cost one read."""

    def __init__(
        self,
        data: DataReader,
        runs: Callable[[], RunsReader] | None,
        cache_seconds: float = 10.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ):
        self.data = data
        self.runs = runs  # a new reader (and API client) per read; None: no Prefect API configured
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._read_at = 0.0

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None or time.monotonic() - self._read_at >= self.cache_seconds:
                self._snapshot = self._read()
                self._read_at = time.monotonic()
            return self._snapshot

    def _read(self) -> Snapshot:
        snapshot = Snapshot(data=None, runs=None, up={}, seconds={})
        started = time.perf_counter()
        try:
            snapshot.data = self.data.read()
            snapshot.up["database"] = True
        except Exception as exc:
            log.warning("cannot read the database: %s", _one_line(exc))
            snapshot.up["database"] = False
        snapshot.seconds["database"] = time.perf_counter() - started
        if self.runs is not None:
            started = time.perf_counter()
            try:
                snapshot.runs = self.runs().read(self.clock())
                snapshot.up["prefect"] = True
            except Exception as exc:
                log.warning("cannot read the Prefect API: %s", _one_line(exc))
                snapshot.up["prefect"] = False
            snapshot.seconds["prefect"] = time.perf_counter() - started
        return snapshot

    def collect(self) -> Iterator[Metric]:
        samples = samples_of(self.snapshot())
        for name, (help_text, labels) in FAMILIES.items():
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for label_values, value in samples.get(name, []):
                family.add_metric([label_values[label] for label in labels], value)
            yield family


def _one_line(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


# --- from snapshots to samples ------------------------------------------------------------------


def samples_of(snapshot: Snapshot) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}

    def add(name: str, labels: dict[str, str], value: float | None) -> None:
        assert name in FAMILIES, name
        if value is not None:
            out.setdefault(name, []).append((labels, float(value)))

    for source, up in snapshot.up.items():
        add("ecommerce_etl_exporter_source_up", {"source": source}, 1 if up else 0)
        add("ecommerce_etl_exporter_read_seconds", {"source": source}, snapshot.seconds[source])
    outcomes = snapshot.runs.file_outcomes if snapshot.runs else []
    if snapshot.data:
        add("ecommerce_etl_database_size_bytes", {}, snapshot.data.database_size_bytes)
        for table in snapshot.data.tables:
            _table_samples(add, table)
        outcomes = latest_outcomes(snapshot.data, outcomes)
        for (schema, table_name), at in last_success(snapshot.data, outcomes).items():
            add("ecommerce_etl_last_success_timestamp_seconds", {"schema": schema, "table": table_name}, at)
    for outcome in outcomes:
        labels = {"schema": outcome.schema, "table": outcome.table, "file": outcome.file, "status": outcome.status}
        add("ecommerce_etl_file_outcome", labels, 1)
        add("ecommerce_etl_file_outcome_timestamp_seconds", labels, outcome.at)
    if snapshot.runs:
        _runs_samples(add, snapshot.runs)
    return out


def _table_samples(add: Callable[[str, dict[str, str], float | None], None], table: TableData) -> None:
    labels = {"schema": table.schema, "table": table.table}
    add("ecommerce_etl_rows_loaded", labels, table.total("rows_loaded"))
    add("ecommerce_etl_rows_read", labels, table.total("rows_read"))
    add("ecommerce_etl_rows_quarantined", labels, table.total("rows_quarantined"))
    add("ecommerce_etl_files_loaded", labels, len(table.files))
    add("ecommerce_etl_last_load_timestamp_seconds", labels, table.last_loaded_at)
    for reason, count in table.quarantine_by_reason.items():
        add("ecommerce_etl_quarantined_rows_by_reason", {**labels, "reason": reason}, count)
    for f in table.files:
        file_labels = {**labels, "file": f.file}
        add("ecommerce_etl_file_rows_loaded", file_labels, f.rows_loaded)
        add("ecommerce_etl_file_rows_quarantined", file_labels, f.rows_quarantined)
        add("ecommerce_etl_file_size_bytes", file_labels, f.size_bytes)
        add("ecommerce_etl_file_loaded_timestamp_seconds", file_labels, f.loaded_at)
        add("ecommerce_etl_file_load_duration_seconds", file_labels, f.load_seconds)
        if f.load_seconds:
            add("ecommerce_etl_file_load_rows_per_second", file_labels, f.rows_read / f.load_seconds)
            if f.size_bytes is not None:
                add("ecommerce_etl_file_load_bytes_per_second", file_labels, f.size_bytes / f.load_seconds)


def _runs_samples(add: Callable[[str, dict[str, str], float | None], None], runs: RunsSnapshot) -> None:
    for d in runs.deployments:
        deployment = {"deployment": d.name}
        for (state_type, state), count in sorted(d.by_state.items()):
            add("ecommerce_etl_flow_runs", {**deployment, "state_type": state_type, "state": state}, count)
        for state in WAITING:
            oldest = d.oldest_waiting.get(state, 0.0)
            add("ecommerce_etl_flow_runs_waiting_oldest_seconds", {**deployment, "state": state}, oldest)
        add("ecommerce_etl_flow_runs_running_oldest_seconds", deployment, d.oldest_running)
        add("ecommerce_etl_flow_run_last_duration_seconds", deployment, d.last_duration)
        add("ecommerce_etl_flow_run_last_success_timestamp_seconds", deployment, d.last_success)
    for pool in runs.work_pools:
        add("ecommerce_etl_work_pool_ready", {"work_pool": pool.name}, 1 if pool.ready else 0)
        for status, count in sorted(pool.workers.items()):
            add("ecommerce_etl_work_pool_workers", {"work_pool": pool.name, "status": status}, count)
        add("ecommerce_etl_work_pool_last_heartbeat_timestamp_seconds", {"work_pool": pool.name}, pool.last_heartbeat)


def latest_outcomes(data: DataSnapshot, events: list[FileOutcome]) -> list[FileOutcome]:
    """Each file's latest outcome: its ledger entry (a load) or a later event (a skip, a failure, a
    load). A file that failed before its table existed is known from its event alone."""
    latest: dict[tuple[str, str, str], FileOutcome] = {}
    for table in data.tables:
        for f in table.files:
            latest[(table.schema, table.table, f.file)] = FileOutcome(
                table.schema, table.table, f.file, "loaded", f.loaded_at
            )
    for event in events:
        key = (event.schema, event.table, event.file)
        if event.schema == data.schema and (key not in latest or event.at >= latest[key].at):
            latest[key] = event
    return sorted(latest.values(), key=lambda o: (o.schema, o.table, o.file))


def last_success(data: DataSnapshot, outcomes: list[FileOutcome]) -> dict[tuple[str, str], float]:
    """Per (schema, table), the last time a file of it was loaded or found unchanged: how fresh the data is."""
    best: dict[tuple[str, str], float] = {}
    for table in data.tables:
        if table.last_loaded_at is not None:
            best[(table.schema, table.table)] = table.last_loaded_at
    for o in outcomes:
        key = (o.schema, o.table)
        if o.status in ("loaded", "skipped") and o.at > best.get(key, float("-inf")):
            best[key] = o.at
    return best


# --- serving ------------------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # scrapes every few seconds: no access log
        pass


def registry_of(exporter: Exporter) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    return registry


def exposition(exporter: Exporter) -> str:
    return generate_latest(registry_of(exporter)).decode()


def serve(exporter: Exporter, address: str, port: int, ready: Callable[[int], None] | None = None) -> None:
    metrics_app = make_wsgi_app(registry_of(exporter))

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path in ("/healthz", "/"):
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ecommerce-etl metrics exporter: scrape /metrics\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: scrape /metrics\n"]

    with make_server(address, port, app, server_class=_Server, handler_class=_QuietHandler) as server:
        if ready:
            ready(server.server_port)
        server.serve_forever()
