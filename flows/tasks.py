"""The pipeline's Prefect tasks: plan the files, fetch one file, ensure the schema, load one file.

Each gets what it needs as arguments (Settings, a RunOptions). Each is retried on network and
database errors, never when a retry cannot help: a wrong setting, a bad file, or a refused login
or missing database, which becomes a ConfigError naming the settings to check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import sqlalchemy as sa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import faulthook
from flows.contract import FileRequest, RunRequest
from flows.errors import ConfigError, FileRejected
from flows.load import FileResult, ensure_schema, load_file
from flows.report import result_line
from flows.settings import DEFAULT_COPY_PARALLELISM, Settings
from flows.sources import source_for
from flows.sql import Names
from flows.transform import printable

# (file name, bytes done, total bytes): how a caller such as the CLI draws progress bars
FileProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunOptions:
    """What a run needs beyond its parameters, passed explicitly (never through the environment)."""

    settings: Settings
    progress: FileProgress | None = None


def _engine(settings: Settings) -> sa.Engine:
    return sa.create_engine(settings.required_database_url(), pool_pre_ping=True)


def names_for(settings: Settings, table: str | None) -> Names:
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


@_source_task("plan-files")
def plan_files(settings: Settings, request: RunRequest, run_id: str) -> list[FileRequest]:
    """The run's files, by name, fetching none of them (each is fetched by its own unit of work)."""
    planned = source_for(request.source, settings).plan(request, run_id)
    print(f"{request.source}: {len(planned)} file(s): {', '.join(printable(f.name) for f in planned)}")
    return planned


@_source_task("fetch-file")
def fetch_file(settings: Settings, file: FileRequest) -> Path:
    """Only this file, where this process runs."""
    source = source_for(file.source, settings)
    fetched = source.fetch(file)
    said = source.describe_fetch(file, fetched)
    if said:
        print(printable(said))
    return fetched


@_database_task("ensure-schema")
def ensure_schema_task(settings: Settings, table: str | None) -> None:
    engine = _engine(settings)
    try:
        ensure_schema(engine, names_for(settings, table))
    except sa.exc.OperationalError as exc:
        _config_error_if_permanent(exc)
        raise
    finally:
        engine.dispose()


class _ProgressLog:
    """Byte progress of one file: a log line every 10 %, and the caller's callback on every step."""

    def __init__(self, name: str, file: Path, callback: FileProgress | None):
        self.name = name
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
def copy_file(options: RunOptions, path: Path, file: FileRequest) -> FileResult:
    """One transaction per attempt, so a retry starts clean (see flows/load/)."""
    settings = options.settings
    engine = _engine(settings)
    try:
        result = load_file(
            engine,
            names_for(settings, file.table),
            path,
            source_file=file.name,
            run_id=file.run_id,
            progress=_ProgressLog(file.name, path, options.progress),
            parallel=settings.copy_parallelism or DEFAULT_COPY_PARALLELISM,
            checkpoint=faulthook.checkpoint(file.name),  # None unless the chaos harness enabled it
        )
    finally:
        engine.dispose()
    if result.error:
        result.error = settings.redact(result.error)
    print(result_line(result))
    return result
