"""The Prefect flows: fetch the source, one `load-file` subflow per file, then the run's artifacts.

Only paths and per-file results travel between tasks; rows stay in the load stage. What a run
needs beyond its parameters (settings, a progress callback) is a `RunOptions`, passed to
`make_flows` explicitly: the module's own flows, which deployments run, read the environment
once at the start of each flow run, so secrets never become flow parameters.

Two ways to run the files, both one `load-file` flow run per file, linked to the pipeline run:
- in-process (the CLI; ETL_FILE_DEPLOYMENT unset): up to ETL_MAX_PARALLEL_FILES subflows at once,
  in threads of this process;
- fanned out (the chart sets ETL_FILE_DEPLOYMENT): one flow run of the `load-file` deployment per
  file, each its own Kubernetes Job fetching only its own file. The deployment's concurrency
  limit (the server's, before a Job exists) bounds how many run at once. A child hands its
  result back as a small artifact on its own flow run: Jobs share no volume and no result
  storage, and the artifact survives a failed child (its state would not carry the result).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, cast

import psycopg2
import sqlalchemy as sa
from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from flows import events, sources
from flows.errors import ConfigError, FileRejected
from flows.load import FileResult, ensure_schema, load_file
from flows.report import RunReport, file_result
from flows.settings import Settings, redact
from flows.sql import Names
from flows.transform import printable

SUMMARY_ARTIFACT_KEY = "ecommerce-etl-summary"
QUARANTINE_ARTIFACT_KEY = "ecommerce-etl-quarantine"
# a `load-file` Job's result, for the pipeline run that started it (JSON in a markdown artifact)
FILE_RESULT_ARTIFACT_KEY = "ecommerce-etl-file-result"
FAN_OUT_POLL_SECONDS = 5.0

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
    return sa.create_engine(settings.required_database_url(), pool_pre_ping=True)


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
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if not isinstance(cause, psycopg2.OperationalError):
        return None
    message = " ".join(str(cause).split())
    return message if _PERMANENT_CONNECT_ERRORS.search(message) else None


def _config_error_if_permanent(exc: BaseException) -> None:
    message = _permanent_connect_error(exc)
    if message:
        raise ConfigError(
            f"cannot use the database: {message} (check DATABASE_URL or PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE)"
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


def _retried_task(name: str, retries: int, delays: float | list[float]):
    """A task whose prints are logged, never cached, and retried unless the error is a ConfigError."""
    return task(
        name=name,
        retries=retries,
        retry_delay_seconds=delays,
        log_prints=True,
        cache_policy=NO_CACHE,
        retry_condition_fn=_retry_unless_config_error,
    )


def _source_task(name: str):
    """Downloads and file listings: two retries, 10 s apart."""
    return _retried_task(name, 2, 10)


def _database_task(name: str):
    """PostgreSQL work: three retries, backing off (a restarting server takes a while)."""
    return _retried_task(name, 3, [2.0, 10.0, 30.0])


@_source_task("fetch-source")
def fetch_source(
    settings: Settings,
    source: str,
    path: str | None,
    url: str | list[str] | None,
    files: list[str] | None,
    rows_per_file: int | None,
) -> list[str]:
    found = sources.fetch(source, settings, path=path, url=url, rows_per_file=rows_per_file)
    chosen = sources.select_files(found, files)
    print(f"{source}: {len(chosen)} file(s): {', '.join(printable(p.name) for p in chosen)}")
    return [str(p) for p in chosen]


@_source_task("plan-files")
def plan_files(
    settings: Settings, source: str, path: str | None, url: str | list[str] | None, files: list[str] | None
) -> list[sources.PlannedFile]:
    """The files of a fanned-out run, by name, fetching none of them (each Job fetches its own)."""
    planned = sources.plan_files(source, settings, path=path, url=url, files=files)
    print(f"{source}: {len(planned)} file(s), one load-file Job each: {', '.join(printable(p.name) for p in planned)}")
    return planned


@_source_task("fetch-file")
def fetch_file(
    settings: Settings, source: str, file_name: str, path: str | None, url: str | None, rows_per_file: int | None
) -> str:
    fetched = sources.fetch_file(source, settings, file_name, path=path, url=url, rows_per_file=rows_per_file)
    if source != "local":
        print(f"{source}: fetched {printable(file_name)} ({fetched.stat().st_size:,} bytes)")
    return str(fetched)


@_database_task("ensure-schema")
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
            self.logger.info(
                "%s: %d%% (%d of %d MB)", self.name, 100 * self.done // self.total, self.done >> 20, self.total >> 20
            )
            self.next_log = (self.done * 10 // self.total + 1) / 10


@_database_task("copy-file-to-postgres")
def copy_file(options: RunOptions, path: str, table: str | None, run_id: str) -> dict:
    """One transaction per attempt, so a retry starts clean (see flows/load/)."""
    settings = options.settings
    file = Path(path)
    names = _names(settings, table)
    engine = _engine(settings)
    try:
        result = load_file(
            engine,
            names,
            file,
            run_id=run_id,
            progress=_ProgressLog(file, options.progress),
            parallel=settings.copy_parallelism,
        )
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
    started = flow_run.scheduled_start_time or datetime.now(UTC)
    return f"{source} {started.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _unloadable_name(name: str, seen: set[str]) -> str | None:
    """Why a file cannot be loaded because of its name alone (checked before its subflow starts)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"the file name {printable(name)!r} is not valid UTF-8: rename the file "
            "(the load ledger and the Prefect UI key files by name)"
        )
    if name in seen:  # the ledger is keyed by file name: a second one would replace the first
        return f"duplicate file name {name}: another file of this run has the same name"
    return None


def _failed(name: str, error: str) -> FileResult:
    return FileResult(file=printable(name), status="failed", error=error)


def _emit_events(result: FileResult, settings: Settings, table: str | None, load_file_run: str | None = None) -> None:
    names = _names(settings, table)
    related = [events.load_file_run(load_file_run)] if load_file_run else None
    events.emit_file_events(result.as_dict(), names.schema, names.table, settings.alert_quarantine_ratio, related)


def _outcome(name: str, outcome: object, settings: Settings) -> FileResult:
    """A `load-file` run's result: what it returned, what it failed with, or why it crashed."""
    if isinstance(outcome, FileLoadFailed):
        return file_result(outcome.result)
    if isinstance(outcome, BaseException):  # e.g. the database stayed unreachable through every retry
        return _failed(name, redact(f"{type(outcome).__name__}: {outcome}", settings))
    if isinstance(outcome, dict):
        return file_result(outcome)
    return _failed(name, f"load-file returned {type(outcome).__name__}, not a result")


def _publish(report: RunReport, settings: Settings) -> None:
    create_table_artifact(
        key=SUMMARY_ARTIFACT_KEY,
        table=report.summary_rows(),
        description=f"Per-file load results of source `{report.source}`",
    )
    create_markdown_artifact(
        key=QUARANTINE_ARTIFACT_KEY,
        markdown=redact(report.quarantine_markdown(), settings),
        description="Quarantined rows per file and reason, with example lines",
    )


# --- a `load-file` Job's result, handed to the pipeline run through an artifact -------------------

_RESULT_JSON = re.compile(r"```json\n(.*)\n```", re.S)


def publish_file_result(result: dict) -> None:
    """On the `load-file` run itself: readable in the UI, parsed by the pipeline run."""
    body = json.dumps(result, indent=1, default=str)
    create_markdown_artifact(
        key=FILE_RESULT_ARTIFACT_KEY,
        description=f"Result of loading {result['file']}",
        markdown=f"# {_inline(result['file'])}: {result['status']}\n\n```json\n{body}\n```\n",
    )


def parse_file_result(markdown: str) -> FileResult | None:
    match = _RESULT_JSON.search(markdown or "")
    return file_result(json.loads(match.group(1))) if match else None


def _inline(text: str) -> str:
    return " ".join(text.split())


# --- in-process: subflows in threads ----------------------------------------------------------


class _StartGate:
    """Lets one in-process subflow at a time through its start.

    Prefect numbers a parent's subflow-tracking task runs from a counter in the parent's run
    context, unguarded; two threads starting subflows at once could draw the same number and
    share one flow run. A thread holds the gate until its subflow's body begins (the run then
    exists), and the loads themselves overlap."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = threading.local()

    @contextlib.contextmanager
    def starting(self):
        self._lock.acquire()
        self._held.value = True
        try:
            yield
        finally:
            self.started()  # the subflow may have failed before its body ran

    def started(self) -> None:
        if getattr(self._held, "value", False):
            self._held.value = False
            self._lock.release()


def _announce(paths: list[str], progress: FileProgress | None) -> None:
    """Every file's progress bar from the start, waiting ones included."""
    for p in paths if progress else []:
        file = Path(p)
        progress(file.name, 0, file.stat().st_size if file.is_file() else 0)  # type: ignore[misc]


# --- fanned out: one `load-file` deployment run per file ------------------------------------------


@dataclass(frozen=True)
class _Child:
    file: str
    flow_run_id: uuid.UUID
    task_run_id: uuid.UUID | None  # the parent's task run that links the child in the UI


def _run_from_deployment() -> bool:
    """This flow run itself was created from a deployment (not a subflow of one)."""
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


def _check_file_deployment(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ConfigError(
                f"ETL_FILE_DEPLOYMENT names the deployment {name!r}, which the Prefect server does not have: "
                "register it with `ecommerce-etl deploy` (the chart's hook does), or unset ETL_FILE_DEPLOYMENT "
                "to load the files in-process"
            ) from None


def _start_children(
    deployment: str,
    planned: list[sources.PlannedFile],
    source: str,
    rows_per_file: int | None,
    table: str | None,
    run_id: str,
) -> list[_Child]:
    children = []
    for planned_file in planned:
        parameters = {
            "file_name": planned_file.name,
            "source": source,
            "url": planned_file.url,
            "rows_per_file": rows_per_file,
            "table": table,
            "run_id": run_id,
        }
        child = cast(
            FlowRun,
            run_deployment(
                deployment,
                parameters={k: v for k, v in parameters.items() if v is not None},
                timeout=0,
                flow_run_name=f"load-{planned_file.name}",
                tags=["ecommerce-etl"],
                idempotency_key=f"{run_id}:{planned_file.name}",  # a retried parent finds its children again
            ),
        )
        children.append(_Child(planned_file.name, child.id, child.parent_task_run_id))
        print(f"{planned_file.name}: load-file run {child.name} ({child.id}) created")
    return children


def _wait_for(children: list[_Child], on_done: Callable[[_Child, FlowRun], None]) -> None:
    """Poll until every child is in a final state; `on_done` as each one ends."""
    by_id = {c.flow_run_id: c for c in children}
    logger = get_run_logger()
    last_counts = None
    with get_client(sync_client=True) as client:
        while by_id:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(by_id))))
            for run in runs:
                if run.state and run.state.is_final():
                    on_done(by_id.pop(run.id), run)
            counts: dict[str, int] = {}
            for run in runs:
                if run.id in by_id:
                    name = (run.state.name or run.state.type.value) if run.state else "Unknown"
                    counts[name] = counts.get(name, 0) + 1
            if by_id and counts != last_counts:
                logger.info(
                    "%d of %d file(s) done; waiting: %s",
                    len(children) - len(by_id),
                    len(children),
                    ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                )
                last_counts = counts
            if by_id:
                time.sleep(FAN_OUT_POLL_SECONDS)


def _child_result(child: _Child, run: FlowRun) -> FileResult:
    """What the child's artifact says, else why it ended without one (crashed, cancelled...)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[FILE_RESULT_ARTIFACT_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            )
        )
        result = parse_file_result(str(artifacts[-1].data)) if artifacts else None
        if child.task_run_id:  # the UI's graph shows the child's outcome on its linking task
            outcome: State = (
                Completed()
                if run.state and run.state.is_completed()
                else Failed(message=f"load-file run {run.name} ended {run.state.name if run.state else 'unknown'}")
            )
            client.set_task_run_state(child.task_run_id, outcome, force=True)
    if result:
        return result
    state = run.state
    why = f"{state.name}: {state.message}" if state and state.message else (state.name if state else "no state")
    return _failed(child.file, f"its load-file run {run.name} ended without a result ({why})")


class Flows(NamedTuple):
    pipeline: Flow
    load_file: Flow


def make_flows(options: RunOptions | None = None) -> Flows:
    """The `ecommerce-etl` flow and its `load-file` subflow, bound to `options`; with None, each
    flow run reads its settings from the environment once, when it starts (deployments)."""
    gate = _StartGate()

    def current() -> RunOptions:
        return options or RunOptions(settings=Settings())

    def load(
        run: RunOptions,
        file_name: str,
        source: str,
        path: str | None,
        url: str | None,
        rows_per_file: int | None,
        table: str | None,
        run_id: str,
    ) -> dict:
        try:
            fetched = fetch_file(run.settings, source, file_name, path, url, rows_per_file)
        except Exception as exc:
            get_run_logger().error("%s: fetching failed: %s", printable(file_name), exc)
            return _failed(file_name, redact(f"{type(exc).__name__}: {exc}", run.settings)).as_dict()
        return copy_file(run, fetched, table, run_id)

    @flow(name="load-file", flow_run_name="load-{file_name}", log_prints=True)
    def load_one_file(
        file_name: str,
        source: str = "local",
        path: str | None = None,
        url: str | None = None,
        rows_per_file: int | None = None,
        table: str | None = None,
        run_id: str = "",
    ) -> dict:
        """Load one file of a source, exactly once: the file named `file_name` in the `path` folder
        (local), the sample's month, the file at `url`, or that file of the Kaggle dataset."""
        gate.started()
        run = current()
        alone = flow_run.parent_flow_run_id is None  # e.g. rerun from the UI or `prefect deployment run`
        if alone:
            ensure_schema_task(run.settings, table)
        result = load(run, file_name, source, path, url, rows_per_file, table, run_id or str(flow_run.get_id()))
        if _run_from_deployment():  # its own Job: the pipeline run reads the result from here
            publish_file_result(result)
        if alone:  # nobody else reports this file
            _emit_events(file_result(result), run.settings, table)
            names = _names(run.settings, table)
            _publish(RunReport([file_result(result)], source, f"{names.schema}.{names.table}"), run.settings)
        if result["status"] == "failed":
            raise FileLoadFailed(result)
        return result

    def in_process(run: RunOptions, report: RunReport, paths: list[str], table: str | None, run_id: str) -> None:
        """Up to ETL_MAX_PARALLEL_FILES subflows at once, each in a thread that carries this run's
        context (Prefect's run context lives in contextvars: a bare thread would lose the parent)."""
        seen: set[str] = set()
        runnable: list[tuple[int, str]] = []
        for p in paths:
            problem = _unloadable_name(Path(p).name, seen)
            report.files.append(_failed(Path(p).name, problem) if problem else FileResult(Path(p).name, "pending"))
            if problem:
                _emit_events(report.files[-1], run.settings, table)
            else:
                seen.add(Path(p).name)
                runnable.append((len(report.files) - 1, p))
        _announce([p for _, p in runnable], run.progress)

        def one(index: int, p: str) -> None:
            file = Path(p)
            with gate.starting():
                state = load_one_file(
                    file.name, "local", str(file.parent), None, None, table, run_id, return_state=True
                )
            report.files[index] = _outcome(file.name, state.result(raise_on_failure=False), run.settings)
            _emit_events(report.files[index], run.settings, table, load_file_run=str(state.state_details.flow_run_id))

        with ThreadPoolExecutor(run.settings.max_parallel_files, thread_name_prefix="load-file") as pool:
            futures = [pool.submit(contextvars.copy_context().run, one, i, p) for i, p in runnable]
            for future in futures:
                future.result()

    def fanned_out(
        run: RunOptions,
        report: RunReport,
        planned: list[sources.PlannedFile],
        source: str,
        rows_per_file: int | None,
        table: str | None,
        run_id: str,
    ) -> None:
        deployment = run.settings.file_deployment or ""
        _check_file_deployment(deployment)
        seen: set[str] = set()
        startable = []
        for planned_file in planned:
            problem = _unloadable_name(planned_file.name, seen)
            report.files.append(
                _failed(planned_file.name, problem) if problem else FileResult(planned_file.name, "pending")
            )
            if problem:
                _emit_events(report.files[-1], run.settings, table)
            else:
                seen.add(planned_file.name)
                startable.append(planned_file)
        children = _start_children(deployment, startable, source, rows_per_file, table, run_id)
        slot = {c.flow_run_id: [f.file for f in report.files].index(c.file) for c in children}

        def done(child: _Child, child_run: FlowRun) -> None:
            result = _child_result(child, child_run)
            report.files[slot[child.flow_run_id]] = result
            _log_result(result)
            _emit_events(result, run.settings, table, load_file_run=str(child.flow_run_id))

        _wait_for(children, done)

    @flow(name="ecommerce-etl", flow_run_name=_parent_run_name, log_prints=True)
    def ecommerce_etl(
        source: str = "sample",
        path: str | None = None,
        url: str | list[str] | None = None,
        files: list[str] | None = None,
        table: str | None = None,
        rows_per_file: int | None = None,
    ) -> dict:
        """Load the cosmetics-shop events into PostgreSQL, every row exactly once."""
        run = current()
        settings = run.settings
        run_id = str(flow_run.get_id() or uuid.uuid4())
        names = _names(settings, table)
        report = RunReport(source=source, table=f"{names.schema}.{names.table}")
        # A `local` folder exists only where this run is: its files load here, whatever the setting.
        if settings.file_deployment and source != "local":
            planned = plan_files(settings, source, path, url, files)
            ensure_schema_task(settings, table)
            fanned_out(run, report, planned, source, rows_per_file, table, run_id)
        else:
            paths = fetch_source(settings, source, path, url, files, rows_per_file)
            ensure_schema_task(settings, table)
            in_process(run, report, paths, table, run_id)
        _publish(report, settings)
        if report.failed:
            raise LoadFailed(report)
        return report.as_json()

    return Flows(ecommerce_etl, load_one_file)


# What deployments run (entrypoints flows/etl.py:ecommerce_etl and flows/etl.py:load_one_file):
# settings from the environment.
ecommerce_etl, load_one_file = make_flows()
