"""The Prefect flow: fetch the source, then one subflow per file, then a summary artifact.

Only paths and per-file counts travel between tasks; rows stay in the load stage.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Callable

import psycopg2
import sqlalchemy as sa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from flows import sources
from flows.events import emit_file_events
from flows.load import FileResult, ensure_schema, load_file
from flows.errors import ConfigError, FileRejected
from flows.settings import get_settings, redact
from flows.sql import Names

# The CLI sets this to drive its progress bars: (file name, bytes done, total bytes).
progress_sink: Callable[[str, int, int], None] | None = None

SUMMARY_ARTIFACT_KEY = "ecommerce-etl-summary"


class LoadFailed(Exception):
    """Raised at the end of a run in which some file failed; carries the whole summary."""

    def __init__(self, summary: dict):
        failed = [f["file"] for f in summary["files"] if f["status"] == "failed"]
        super().__init__(f"{len(failed)} file(s) failed: {', '.join(failed)}", summary)
        self.summary = summary


def _engine() -> sa.Engine:
    url = get_settings().resolved_database_url()
    if not url:
        raise ConfigError("no database configured: set DATABASE_URL or PGHOST/PGUSER/PGPASSWORD/PGDATABASE")
    return sa.create_engine(url, pool_pre_ping=True)


def _names(table: str | None) -> Names:
    settings = get_settings()
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


@task(name="fetch-source", retries=2, retry_delay_seconds=10, log_prints=True,
      retry_condition_fn=_retry_unless_config_error)
def fetch_source(source: str, path: str | None, url: str | None, files: list[str] | None,
                 rows_per_file: int | None) -> list[str]:
    found = sources.fetch(source, get_settings(), path=path, url=url, rows_per_file=rows_per_file)
    chosen = sources.select_files(found, files)
    print(f"{source}: {len(chosen)} file(s): {', '.join(p.name for p in chosen)}")
    return [str(p) for p in chosen]


@task(name="ensure-schema", retries=3, retry_delay_seconds=[2, 10, 30], log_prints=True,
      retry_condition_fn=_retry_unless_config_error)
def ensure_schema_task(table: str | None) -> None:
    engine = _engine()
    try:
        ensure_schema(engine, _names(table))
    except sa.exc.OperationalError as exc:
        _config_error_if_permanent(exc)
        raise
    finally:
        engine.dispose()


@task(name="copy-file-to-postgres", retries=3, retry_delay_seconds=[2, 10, 30], log_prints=True,
      retry_condition_fn=_retry_unless_config_error)
def copy_file(path: str, table: str | None, run_id: str) -> dict:
    """One transaction per attempt, so a retry starts clean (see flows/load/)."""
    file = Path(path)
    total = file.stat().st_size if file.exists() else 0
    done = 0
    next_log = 0.1
    logger = get_run_logger()

    def progress(advance: int) -> None:
        nonlocal done, next_log
        done += advance
        if advance < 0:
            logger.info("%s: structural problems, reading it again on the careful path", file.name)
            next_log = 0.1
        if progress_sink:
            progress_sink(file.name, done, total)
        if total and done / total >= next_log:  # a log line every 10 % for long files
            logger.info("%s: %d%% (%d of %d MB)", file.name, 100 * done // total, done >> 20, total >> 20)
            next_log = (done * 10 // total + 1) / 10

    engine = _engine()
    names = _names(table)
    settings = get_settings()
    try:
        result = load_file(engine, names, file, run_id=run_id, progress=progress,
                           parallel=settings.copy_parallelism)
    finally:
        engine.dispose()
    if result.error:
        result.error = redact(result.error, settings)
    emit_file_events(result.as_dict(), names.schema, names.table, settings.alert_quarantine_ratio)
    if result.status == "failed":
        print(f"{result.file}: FAILED: {result.error}")
    elif result.status == "skipped":
        print(f"{result.file}: skipped, unchanged since it was loaded ({result.checksum})")
    else:
        print(
            f"{result.file}: {result.rows_loaded} rows loaded, {result.rows_quarantined} quarantined "
            f"in {result.seconds:.1f}s ({result.rows_per_second:,.0f} rows/s, {result.path} path)"
        )
    return result.as_dict()


@flow(name="load-file", flow_run_name="load-{file_name}", log_prints=True)
def load_one_file(path: str, file_name: str, table: str | None, run_id: str) -> dict:
    return copy_file(path, table, run_id)


def _summary(results: list[dict]) -> dict:
    keys = ("file", "status", "rows_read", "rows_loaded", "rows_quarantined", "error")
    files = [{k: r.get(k) for k in keys} for r in results]
    return {
        "files": files,
        **{k: sum(f[k] for f in files) for k in ("rows_read", "rows_loaded", "rows_quarantined")},
    }


def _publish(results: list[dict], source: str) -> None:
    rows = [
        {
            "file": r["file"],
            "status": r["status"],
            "rows read": r["rows_read"],
            "rows loaded": r["rows_loaded"],
            "rows quarantined": r["rows_quarantined"],
            "rows skipped": r["rows_skipped"],
            "seconds": round(r["seconds"], 2),
            "rows/s": round(r["rows_per_second"]) if r["status"] == "loaded" else 0,
            "error": r.get("error") or "",
        }
        for r in results
    ]
    create_table_artifact(
        key=SUMMARY_ARTIFACT_KEY,
        table=rows,
        description=f"Per-file load results of source `{source}`",
    )


@flow(name="ecommerce-etl", log_prints=True)
def ecommerce_etl(
    source: str = "sample",
    path: str | None = None,
    url: str | None = None,
    files: list[str] | None = None,
    table: str | None = None,
    rows_per_file: int | None = None,
) -> dict:
    """Load the cosmetics-shop events into PostgreSQL, every row exactly once."""
    run_id = str(flow_run.get_id() or uuid.uuid4())
    paths = fetch_source(source, path, url, files, rows_per_file)
    ensure_schema_task(table)
    results, seen = [], set()
    for p in paths:
        name = Path(p).name
        if name in seen:  # the ledger is keyed by file name, so a second one would replace the first
            results.append(FileResult(
                file=name, status="failed",
                error=f"duplicate file name {name}: another file of this run has the same name").as_dict())
            continue
        seen.add(name)
        results.append(load_one_file(p, name, table, run_id))
    for r in results:
        if r.get("error"):
            r["error"] = redact(r["error"])
    _publish(results, source)
    summary = _summary(results)
    if any(r["status"] == "failed" for r in results):
        raise LoadFailed(summary)
    return summary
