"""The Prefect flows: the pipeline flow `ecommerce-etl`, and `load-file`, one run per file.

    ecommerce_etl(source, path, url, files, table, rows_per_file)   the run: a RunRequest's parameters
    file_flow(file: FileRequest)                                    one file: fetch it, load it exactly once

The pipeline plans the source's files (flows/sources/), ensures the schema, then runs one `load-file`
flow per file, each fetching and loading only its own file, so a file that cannot be fetched or loaded
fails alone; then it publishes the run's artifacts and events. Two ways to run the files:
- in-process (the CLI; ETL_FILE_DEPLOYMENT unset, or a `local` folder): up to ETL_MAX_PARALLEL_FILES
  subflows at once, in threads of this process;
- fanned out (the chart sets ETL_FILE_DEPLOYMENT): one flow run of the `load-file` deployment per file,
  each its own Kubernetes Job; the deployment's concurrency limit (the server's, before a Job exists)
  bounds how many run at once (flows/fanout.py).

What a run needs beyond its parameters (settings, a progress callback) is a RunOptions: the CLI passes
its own with `run_options(...)`; a deployment run reads the environment once, when it starts, so secrets
never become flow parameters. The tasks are in flows/tasks.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import flow_run

from flows import events, fanout, recovery
from flows.contract import FileRequest, RunRequest, SourceName
from flows.load import FileResult
from flows.names import LOAD_FILE_FLOW, PIPELINE_FLOW, file_run_name
from flows.report import RunReport, failed_result, result_line
from flows.settings import Settings, get_settings
from flows.sources import source_for
from flows.tasks import RunOptions, copy_file, ensure_schema_task, fetch_file, names_for, plan_files
from flows.transform import file_name_problem, printable

__all__ = ["FileLoadFailed", "LoadFailed", "RunOptions", "ecommerce_etl", "file_flow", "run_options"]

SUMMARY_ARTIFACT_KEY = "ecommerce-etl-summary"
QUARANTINE_ARTIFACT_KEY = "ecommerce-etl-quarantine"
ERROR_CHARS_IN_MESSAGE = 300


class LoadFailed(Exception):
    """Ends a run in which some file failed; names each failed file and why, and carries the report."""

    def __init__(self, report: RunReport):
        failed = "; ".join(f"{f.file} ({(f.error or '')[:ERROR_CHARS_IN_MESSAGE]})" for f in report.failed)
        super().__init__(f"{len(report.failed)} of {len(report.files)} file(s) failed: {failed}")
        self.report = report


class FileLoadFailed(Exception):
    """Ends a `load-file` run whose file failed, so the UI shows it Failed; carries its result."""

    def __init__(self, result: FileResult):
        super().__init__(f"{result.file}: {result.error}")
        self.result = result


# --- what a run needs beyond its parameters ------------------------------------------------------

_OPTIONS: contextvars.ContextVar[RunOptions | None] = contextvars.ContextVar("ecommerce_etl_options", default=None)


@contextlib.contextmanager
def run_options(options: RunOptions) -> Iterator[None]:
    """Flows started inside use these settings and progress callback (the CLI's), not the environment."""
    token = _OPTIONS.set(options)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def _current_options() -> RunOptions:
    return _OPTIONS.get() or RunOptions(settings=get_settings())  # a deployment run: read once, at its start


# --- the flows ------------------------------------------------------------------------------------


def _parent_run_name() -> str:
    """'<source> <start time>', so that a person can tell runs apart in the UI."""
    source = flow_run.parameters.get("source", "sample")
    started = flow_run.scheduled_start_time or datetime.now(UTC)
    return f"{source} {started.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


@flow(name=PIPELINE_FLOW, flow_run_name=_parent_run_name, log_prints=True)
def ecommerce_etl(
    source: SourceName = "sample",
    path: str | None = None,
    url: str | list[str] | None = None,
    files: list[str] | None = None,
    table: str | None = None,
    rows_per_file: int | None = None,
) -> RunReport:
    """Load the cosmetics-shop events into PostgreSQL, every row exactly once."""
    request = RunRequest.of(
        "flow parameters", source=source, path=path, url=url, files=files, table=table, rows_per_file=rows_per_file
    )
    run = _current_options()
    settings = run.settings
    run_id = str(flow_run.get_id() or uuid.uuid4())
    report = RunReport(source=request.source, table=_qualified(settings, request.table))
    planned = plan_files(settings, request, run_id)
    ensure_schema_task(settings, request.table)
    # files that exist only where this run is (a local folder) load here, whatever the setting
    if settings.file_deployment and source_for(request.source, settings).fetched_anywhere:
        _fanned_out(run, report, planned)
    else:
        _in_process(run, report, planned)
    _publish(report, settings)
    if report.failed:
        raise LoadFailed(report)
    return report


def _file_run_name() -> str:
    file = flow_run.parameters.get("file")
    name = file.name if isinstance(file, FileRequest) else (file or {}).get("name", "file")
    return file_run_name(name)


@flow(name=LOAD_FILE_FLOW, flow_run_name=_file_run_name, log_prints=True)
def file_flow(file: FileRequest) -> FileResult:
    """Load one file of a source, exactly once: fetched where this run is (the sample's month, the file
    of the local folder, the file at its URL, that file of the Kaggle dataset), then loaded."""
    _START_GATE.started()
    run = _current_options()
    alone = flow_run.parent_flow_run_id is None  # e.g. rerun from the UI or `prefect deployment run`
    if alone:
        ensure_schema_task(run.settings, file.table)
    if not file.run_id:
        file = file.model_copy(update={"run_id": str(flow_run.get_id())})
    result = _fetch_and_load(run, file)
    if fanout.run_from_deployment():  # its own Job: the pipeline run reads the result from here
        fanout.publish_file_result(result)
    if alone:  # nobody else reports this file
        _emit_events(result, run.settings, file.table)
        report = RunReport(files=[result], source=file.source, table=_qualified(run.settings, file.table))
        _publish(report, run.settings)
    if result.status == "failed":
        raise FileLoadFailed(result)
    return result


def _fetch_and_load(run: RunOptions, file: FileRequest) -> FileResult:
    try:
        fetched = fetch_file(run.settings, file)
    except Exception as exc:  # its retries ran out, or it was refused: only this file fails
        get_run_logger().error("%s: fetching failed: %s", printable(file.name), exc)
        return failed_result(file.name, run.settings.redact(f"{type(exc).__name__}: {exc}"))
    return copy_file(run, fetched, file)


# --- the report, the events, the artifacts --------------------------------------------------------


def _admit(files: list[FileRequest], report: RunReport, settings: Settings) -> list[tuple[int, FileRequest]]:
    """A report row per file: pending, or failed at once when its name alone rules it out (its
    event is emitted then). Returns (report row, file) of the files to load, in order."""
    seen: set[str] = set()
    admitted = []
    for file in files:
        problem = _unloadable_name(file.name, seen)
        report.files.append(
            failed_result(file.name, problem) if problem else FileResult(file=file.name, status="pending")
        )
        if problem:
            _emit_events(report.files[-1], settings, file.table)
        else:
            seen.add(file.name)
            admitted.append((len(report.files) - 1, file))
    return admitted


def _unloadable_name(name: str, seen: set[str]) -> str | None:
    """Why a file cannot be loaded because of its name alone (checked before its subflow starts)."""
    problem = file_name_problem(name)
    if problem:
        return problem
    if name in seen:  # the ledger is keyed by file name: a second one would replace the first
        return f"duplicate file name {name}: another file of this run has the same name"
    return None


def _qualified(settings: Settings, table: str | None) -> str:
    names = names_for(settings, table)
    return f"{names.schema}.{names.table}"


def _emit_events(result: FileResult, settings: Settings, table: str | None, load_file_run: str | None = None) -> None:
    names = names_for(settings, table)
    related = [events.load_file_run(load_file_run)] if load_file_run else None
    events.emit_file_events(result, names.schema, names.table, settings.alert_quarantine_ratio, related)


def _outcome(name: str, outcome: object, settings: Settings) -> FileResult:
    """A `load-file` run's result: what it returned, what it failed with, or why it crashed."""
    if isinstance(outcome, FileLoadFailed):
        return outcome.result
    if isinstance(outcome, BaseException):  # e.g. the database stayed unreachable through every retry
        return failed_result(name, settings.redact(f"{type(outcome).__name__}: {outcome}"))
    if isinstance(outcome, FileResult):
        return outcome
    return failed_result(name, f"load-file returned {type(outcome).__name__}, not a result")


def _publish(report: RunReport, settings: Settings) -> None:
    create_table_artifact(
        key=SUMMARY_ARTIFACT_KEY,
        table=report.summary_rows(),
        description=f"Per-file load results of source `{report.source}`",
    )
    create_markdown_artifact(
        key=QUARANTINE_ARTIFACT_KEY,
        markdown=settings.redact(report.quarantine_markdown()),
        description="Quarantined rows per file and reason, with example lines",
    )


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


_START_GATE = _StartGate()


def _in_process(run: RunOptions, report: RunReport, planned: list[FileRequest]) -> None:
    """Up to ETL_MAX_PARALLEL_FILES subflows at once, each in a thread that carries this run's
    context (Prefect's run context lives in contextvars: a bare thread would lose the parent)."""
    runnable = _admit(planned, report, run.settings)
    if run.progress:  # every file's bar from the start, waiting ones too
        for _, file in runnable:
            run.progress(file.name, 0, 0)

    def one(index: int, file: FileRequest) -> None:
        with _START_GATE.starting():
            state = file_flow(file=file, return_state=True)
        report.files[index] = _outcome(file.name, state.result(raise_on_failure=False), run.settings)
        _emit_events(report.files[index], run.settings, file.table, load_file_run=str(state.state_details.flow_run_id))

    with ThreadPoolExecutor(run.settings.max_parallel_files, thread_name_prefix="load-file") as pool:
        futures = [pool.submit(contextvars.copy_context().run, one, i, f) for i, f in runnable]
        for future in futures:
            future.result()


def _fanned_out(run: RunOptions, report: RunReport, planned: list[FileRequest]) -> None:
    deployment = run.settings.file_deployment or ""
    fanout.check_file_deployment(deployment)
    startable = _admit(planned, report, run.settings)
    children = fanout.start_children(deployment, [f for _, f in startable])
    slot = {c.flow_run_id: (row, file) for (row, file), c in zip(startable, children, strict=True)}

    def done(child: fanout.Child, child_run: FlowRun, why: str | None) -> None:
        row, file = slot[child.flow_run_id]
        result = fanout.child_result(child, child_run, why)
        result.attempts = recovery.attempts(child_run)
        report.files[row] = result
        print(result_line(result))
        _emit_events(result, run.settings, file.table, load_file_run=str(child.flow_run_id))

    fanout.wait_for(children, done, run.settings.recovery)
