"""The Prefect flows: fetch the source, one `load-file` subflow per file, then the run's artifacts.

Only paths and per-file results travel between tasks; rows stay in the load stage. What a run
needs beyond its parameters (settings, a progress callback) is a `RunOptions`, passed to
`make_flows` explicitly: the module's own flows, which deployments run, read the environment
once at the start of each flow run, so secrets never become flow parameters.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

import psycopg2
import sqlalchemy as sa
from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows import events, sources
from flows.errors import ConfigError, FileRejected
from flows.load import FileResult, ensure_schema, load_file
from flows.report import RunReport, file_result
from flows.settings import Settings, redact
from flows.sql import Names
from flows.transform import printable

SUMMARY_ARTIFACT_KEY = "ecommerce-etl-summary"
QUARANTINE_ARTIFACT_KEY = "ecommerce-etl-quarantine"

# (file name, bytes done, total bytes): how a caller such as the CLI draws progress bars
FileProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunOptions:
    settings: Settings
    progress: FileProgress | None = None


ERROR_CHARS_IN_MESSAGE = 300


class LoadFailed(Exception):
    """Ends a run in which some file failed; names each failed file and why, and carries the report."""

    def __init__(self, report: RunReport):
        failed = "; ".join(f"{f.file} ({(f.error or '')[:ERROR_CHARS_IN_MESSAGE]})" for f in report.failed)
        super().__init__(f"{len(report.failed)} of {len(report.files)} file(s) failed: {failed}")
        self.report = report


class FileLoadFailed(Exception):
    """Ends a `load-file` run whose file failed, so the UI shows it Failed; carries its result."""

    def __init__(self, result: dict):
        super().__init__(f"{result['file']}: {result['error']}")
        self.result = result


def _engine(settings: Settings) -> sa.Engine:
    url = settings.resolved_database_url()
    if not url:
        raise ConfigError("no database configured: set DATABASE_URL or PGHOST/PGUSER/PGPASSWORD/PGDATABASE")
    return sa.create_engine(url, pool_pre_ping=True)


def _names(settings: Settings, table: str | None) -> Names:
    schema, default_table = settings.checked_names()
    # a bad name is blamed on where it came from: the flow's `table` parameter or ETL_TABLE
    return Names(schema, table or default_table, table_setting="the flow's table parameter" if table else "ETL_TABLE")


# Refusals no retry can fix. libpq reports them as connection failures with only a message,
# no SQLSTATE, so they are told apart by its text.
_PERMANENT_CONNECT_ERRORS = re.compile(
    r'password authentication failed|no password supplied|database "[^"]*" does not exist'
    r'|role "[^"]*" does not exist|no pg_hba\.conf entry'
)


def _permanent_connect_error(exc: BaseException) -> str | None:
    """libpq's message when exc is a refused login or a missing database, else None."""
    if isinstance(exc, sa.exc.DBAPIError):
        exc = exc.orig
    if not isinstance(exc, psycopg2.OperationalError):
        return None
    message = " ".join(str(exc).split())
    return message if _PERMANENT_CONNECT_ERRORS.search(message) else None


def _config_error_if_permanent(exc: BaseException) -> None:
    message = _permanent_connect_error(exc)
    if message:
        raise ConfigError(
            f"cannot use the database: {message} "
            "(check DATABASE_URL or PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE)"
        ) from None


def _retry_unless_config_error(task, task_run, state) -> bool:
    """Network and database errors are worth a retry; a wrong setting, a refused login or a bad
    file is not."""
    try:
        state.result()
    except (ConfigError, FileRejected):
        return False
    except Exception as exc:
        return _permanent_connect_error(exc) is None
    return True


@task(name="fetch-source", retries=2, retry_delay_seconds=10, log_prints=True, cache_policy=NO_CACHE,
      retry_condition_fn=_retry_unless_config_error)
def fetch_source(settings: Settings, source: str, path: str | None, url: str | None, files: list[str] | None,
                 rows_per_file: int | None) -> list[str]:
    found = sources.fetch(source, settings, path=path, url=url, rows_per_file=rows_per_file)
    chosen = sources.select_files(found, files)
    print(f"{source}: {len(chosen)} file(s): {', '.join(printable(p.name) for p in chosen)}")
    return [str(p) for p in chosen]


@task(name="ensure-schema", retries=3, retry_delay_seconds=[2, 10, 30], log_prints=True, cache_policy=NO_CACHE,
      retry_condition_fn=_retry_unless_config_error)
def ensure_schema_task(settings: Settings, table: str | None) -> None:
    engine = _engine(settings)
    try:
        ensure_schema(engine, _names(settings, table))
    except sa.exc.OperationalError as exc:
        _config_error_if_permanent(exc)
        raise
    finally:
        engine.dispose()


class _ProgressLog:
    """Byte progress of one file: a log line every 10 %, and the caller's callback on every step."""

    def __init__(self, file: Path, callback: FileProgress | None):
        self.name = file.name
        self.total = file.stat().st_size if file.exists() else 0
        self.callback = callback
        self.done = 0
        self.next_log = 0.1
        self.logger = get_run_logger()

    def __call__(self, advance: int) -> None:
        self.done += advance
        if advance < 0:
            self.logger.info("%s: structural problems, reading it again on the careful path", self.name)
            self.next_log = 0.1
        if self.callback:
            self.callback(self.name, self.done, self.total)
        if self.total and self.done / self.total >= self.next_log:
            self.logger.info("%s: %d%% (%d of %d MB)", self.name, 100 * self.done // self.total,
                             self.done >> 20, self.total >> 20)
            self.next_log = (self.done * 10 // self.total + 1) / 10


@task(name="copy-file-to-postgres", retries=3, retry_delay_seconds=[2, 10, 30], log_prints=True,
      cache_policy=NO_CACHE, retry_condition_fn=_retry_unless_config_error)
def copy_file(options: RunOptions, path: str, table: str | None, run_id: str) -> dict:
    """One transaction per attempt, so a retry starts clean (see flows/load/)."""
    settings = options.settings
    file = Path(path)
    names = _names(settings, table)
    engine = _engine(settings)
    try:
        result = load_file(engine, names, file, run_id=run_id, progress=_ProgressLog(file, options.progress),
                           parallel=settings.copy_parallelism)
    finally:
        engine.dispose()
    if result.error:
        result.error = redact(result.error, settings)
    _log_result(result)
    return result.as_dict()


def _log_result(result: FileResult) -> None:
    if result.status == "failed":
        print(f"{result.file}: FAILED: {result.error}")
    elif result.status == "skipped":
        print(f"{result.file}: skipped, unchanged since it was loaded ({result.checksum})")
    else:
        print(
            f"{result.file}: {result.rows_loaded} rows loaded, {result.rows_quarantined} quarantined "
            f"in {result.seconds:.1f}s ({result.rows_per_second:,.0f} rows/s, {result.path} path)"
        )


def _parent_run_name() -> str:
    """'<source> <start time>', so that a person can tell runs apart in the UI."""
    source = flow_run.parameters.get("source", "sample")
    started = flow_run.scheduled_start_time or datetime.now(timezone.utc)
    return f"{source} {started.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def _unloadable_name(path: str) -> str | None:
    """Why a file cannot be loaded because of its name alone (checked before its subflow starts)."""
    name = Path(path).name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return (f"the file name {printable(name)!r} is not valid UTF-8: rename the file "
                "(the load ledger and the Prefect UI key files by name)")
    return None


def _failed(path: str, error: str) -> FileResult:
    return FileResult(file=printable(Path(path).name), status="failed", error=error)


def _emit_events(result: FileResult, settings: Settings, table: str | None, load_file_run: str | None = None) -> None:
    names = _names(settings, table)
    related = [events.load_file_run(load_file_run)] if load_file_run else None
    events.emit_file_events(result.as_dict(), names.schema, names.table, settings.alert_quarantine_ratio, related)


def _outcome(path: str, outcome: object, settings: Settings) -> FileResult:
    """A `load-file` run's result: what it returned, what it failed with, or why it crashed."""
    if isinstance(outcome, FileLoadFailed):
        return file_result(outcome.result)
    if isinstance(outcome, BaseException):  # e.g. the database stayed unreachable through every retry
        return _failed(path, redact(f"{type(outcome).__name__}: {outcome}", settings))
    return file_result(outcome)


def _publish(report: RunReport, settings: Settings) -> None:
    create_table_artifact(key=SUMMARY_ARTIFACT_KEY, table=report.summary_rows(),
                          description=f"Per-file load results of source `{report.source}`")
    create_markdown_artifact(key=QUARANTINE_ARTIFACT_KEY, markdown=redact(report.quarantine_markdown(), settings),
                             description="Quarantined rows per file and reason, with example lines")


class Flows(NamedTuple):
    pipeline: Flow
    load_file: Flow


def make_flows(options: RunOptions | None = None) -> Flows:
    """The `ecommerce-etl` flow and its `load-file` subflow, bound to `options`; with None, each
    flow run reads its settings from the environment once, when it starts (deployments)."""

    def current() -> RunOptions:
        return options or RunOptions(settings=Settings())

    @flow(name="load-file", flow_run_name="load-{file_name}", log_prints=True)
    def load_one_file(path: str, file_name: str, table: str | None = None, run_id: str = "") -> dict:
        run = current()
        result = copy_file(run, path, table, run_id)
        if flow_run.parent_flow_run_id is None:  # run on its own: nobody else reports this file
            _emit_events(file_result(result), run.settings, table)
        if result["status"] == "failed":
            raise FileLoadFailed(result)
        return result

    @flow(name="ecommerce-etl", flow_run_name=_parent_run_name, log_prints=True)
    def ecommerce_etl(
        source: str = "sample",
        path: str | None = None,
        url: str | None = None,
        files: list[str] | None = None,
        table: str | None = None,
        rows_per_file: int | None = None,
    ) -> dict:
        """Load the cosmetics-shop events into PostgreSQL, every row exactly once."""
        run = current()
        settings = run.settings
        run_id = str(flow_run.get_id() or uuid.uuid4())
        paths = fetch_source(settings, source, path, url, files, rows_per_file)
        ensure_schema_task(settings, table)
        names = _names(settings, table)
        report = RunReport(source=source, table=f"{names.schema}.{names.table}")
        seen: set[str] = set()
        for p in paths:
            name = Path(p).name
            problem = _unloadable_name(p)
            if not problem and name in seen:  # the ledger is keyed by file name: a second one would replace the first
                problem = f"duplicate file name {name}: another file of this run has the same name"
            if problem:
                report.files.append(_failed(p, problem))
                _emit_events(report.files[-1], settings, table)
                continue
            seen.add(name)
            state = load_one_file(p, name, table, run_id, return_state=True)
            report.files.append(_outcome(p, state.result(raise_on_failure=False), settings))
            _emit_events(report.files[-1], settings, table, load_file_run=str(state.state_details.flow_run_id))
        _publish(report, settings)
        if report.failed:
            raise LoadFailed(report)
        return report.as_json()

    return Flows(ecommerce_etl, load_one_file)


# What deployments run (entrypoint flows/etl.py:ecommerce_etl): settings from the environment.
ecommerce_etl, load_one_file = make_flows()
