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
  limit (the server's, before a Job exists) bounds how many run at once (flows/fanout.py).

The tasks themselves are in flows/tasks.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, TypeVar

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import flow_run

from flows import events, fanout, recovery, sources
from flows.load import FileResult
from flows.report import RunReport, failed_result, file_result
from flows.settings import Settings, redact
from flows.tasks import (
    FileProgress,
    RunOptions,
    copy_file,
    ensure_schema_task,
    fetch_file,
    fetch_source,
    log_result,
    names_for,
    plan_files,
)
from flows.transform import printable

__all__ = ["FileLoadFailed", "LoadFailed", "RunOptions", "ecommerce_etl", "load_one_file", "make_flows"]

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

    def __init__(self, result: dict):
        super().__init__(f"{result['file']}: {result['error']}")
        self.result = result


def _parent_run_name() -> str:
    """'<source> <start time>', so that a person can tell runs apart in the UI."""
    source = flow_run.parameters.get("source", "sample")
    started = flow_run.scheduled_start_time or datetime.now(UTC)
    return f"{source} {started.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


_File = TypeVar("_File")


def _admit(
    files: list[_File], name_of: Callable[[_File], str], report: RunReport, settings: Settings, table: str | None
) -> list[tuple[int, _File]]:
    """A report row per file: pending, or failed at once when its name alone rules it out (its
    event is emitted then). Returns (report row, file) of the files to load, in order."""
    seen: set[str] = set()
    admitted = []
    for file in files:
        name = name_of(file)
        problem = _unloadable_name(name, seen)
        report.files.append(failed_result(name, problem) if problem else FileResult(name, "pending"))
        if problem:
            _emit_events(report.files[-1], settings, table)
        else:
            seen.add(name)
            admitted.append((len(report.files) - 1, file))
    return admitted


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


def _emit_events(result: FileResult, settings: Settings, table: str | None, load_file_run: str | None = None) -> None:
    names = names_for(settings, table)
    related = [events.load_file_run(load_file_run)] if load_file_run else None
    events.emit_file_events(result.as_dict(), names.schema, names.table, settings.alert_quarantine_ratio, related)


def _outcome(name: str, outcome: object, settings: Settings) -> FileResult:
    """A `load-file` run's result: what it returned, what it failed with, or why it crashed."""
    if isinstance(outcome, FileLoadFailed):
        return file_result(outcome.result)
    if isinstance(outcome, BaseException):  # e.g. the database stayed unreachable through every retry
        return failed_result(name, redact(f"{type(outcome).__name__}: {outcome}", settings))
    if isinstance(outcome, dict):
        return file_result(outcome)
    return failed_result(name, f"load-file returned {type(outcome).__name__}, not a result")


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
            return failed_result(file_name, redact(f"{type(exc).__name__}: {exc}", run.settings)).as_dict()
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
        if fanout.run_from_deployment():  # its own Job: the pipeline run reads the result from here
            fanout.publish_file_result(result)
        if alone:  # nobody else reports this file
            _emit_events(file_result(result), run.settings, table)
            names = names_for(run.settings, table)
            _publish(RunReport([file_result(result)], source, f"{names.schema}.{names.table}"), run.settings)
        if result["status"] == "failed":
            raise FileLoadFailed(result)
        return result

    def in_process(run: RunOptions, report: RunReport, paths: list[str], table: str | None, run_id: str) -> None:
        """Up to ETL_MAX_PARALLEL_FILES subflows at once, each in a thread that carries this run's
        context (Prefect's run context lives in contextvars: a bare thread would lose the parent)."""
        runnable = _admit(paths, lambda p: Path(p).name, report, run.settings, table)
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
        fanout.check_file_deployment(deployment)
        startable = _admit(planned, lambda f: f.name, report, run.settings, table)
        children = fanout.start_children(deployment, [f for _, f in startable], source, rows_per_file, table, run_id)
        slot = {c.flow_run_id: row for (row, _), c in zip(startable, children, strict=True)}

        def done(child: fanout.Child, child_run: FlowRun, why: str | None) -> None:
            result = fanout.child_result(child, child_run, why)
            result.attempts = recovery.attempts(child_run)
            report.files[slot[child.flow_run_id]] = result
            log_result(result)
            _emit_events(result, run.settings, table, load_file_run=str(child.flow_run_id))

        fanout.wait_for(children, done)

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
        names = names_for(settings, table)
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
