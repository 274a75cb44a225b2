"""`ecommerce-etl`: run the pipeline, write the sample, register deployments, manage the local servers.

Exit codes: 0 every file loaded or skipped, 1 a file (or the source) failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time: `--help` stays fast
    from rich.progress import TaskID

    from flows.report import RunReport
    from flows.settings import Settings

EXIT_OK, EXIT_FILE_FAILED, EXIT_CONFIG = 0, 1, 2
PSQL_HINT = "make psql"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep its message, name the help
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    from flows.sources import SOURCES

    parser = _Parser(prog="ecommerce-etl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="fetch a source and load it into PostgreSQL")
    run.add_argument("--source", choices=SOURCES, default="sample")
    run.add_argument("--path", help="folder of .csv files (--source local)")
    run.add_argument(
        "--url",
        action="append",
        help="http(s) .csv, .csv.gz or .zip (--source url); repeat it for several files (one URL per file)",
    )
    run.add_argument("--files", help="comma-separated file names to load, e.g. 2019-Oct.csv,2019-Nov.csv")
    run.add_argument("--rows-per-file", type=_positive_int, help="sample rows per monthly file (--source sample)")
    run.add_argument(
        "--database-url",
        help="PostgreSQL URL; default DATABASE_URL, then PG* variables, "
        "then an embedded PostgreSQL under ETL_LOCAL_DIR",
    )
    run.add_argument("--table", help="target table (default ETL_TABLE or ecommerce_events)")
    run.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    sample = commands.add_parser("sample", help="write the deterministic sample CSVs")
    sample.add_argument("--out", required=True, type=Path)
    size = sample.add_mutually_exclusive_group()
    size.add_argument("--rows-per-file", type=_positive_int, default=20_000)
    size.add_argument(
        "--full", action="store_true", help="the real dataset's row counts: 20,692,840 rows in five files, about 2.4 GB"
    )
    sample.add_argument("--seed", type=int, default=20191001)

    deploy = commands.add_parser("deploy", help="create/update the Kubernetes work pool and deployments")
    deploy.add_argument("--pool", required=True, help="work pool name")
    deploy.add_argument("--base-job-template", required=True, type=Path, help="JSON base job template")
    deploy.add_argument("--schedule", help="cron schedule for the kaggle deployment, e.g. '0 3 * * *'")
    deploy.add_argument("--timezone", default="UTC")
    deploy.add_argument("--sample-rows", type=int, default=20_000)
    deploy.add_argument(
        "--max-parallel-files",
        type=_positive_int,
        default=3,
        help="concurrency limit of the load-file deployment: at most this many file Jobs at once",
    )
    deploy.add_argument(
        "--concurrency-limit",
        type=int,
        default=0,
        help="running pipeline runs per deployment (sample, kaggle), enforced by the server (0: no limit)",
    )
    deploy.add_argument("--wait", type=float, default=120, help="seconds to wait for the Prefect API")

    commands.add_parser("server", help="start (or reuse) the local Prefect server and UI on 127.0.0.1:ETL_PREFECT_PORT")
    commands.add_parser("stop", help="stop the local Prefect server and the embedded PostgreSQL")

    forget = commands.add_parser(
        "forget",
        help="remove a file's rows, quarantine rows and ledger entry (a renamed or deleted file's rows stay "
        "until then: exactly-once is keyed by file name)",
    )
    forget.add_argument("file", help="the file's name as loaded (a path is fine: its last part is the name)")
    forget.add_argument("--table", help="target table (default ETL_TABLE or ecommerce_events)")
    forget.add_argument("--database-url", help="PostgreSQL URL; default as for `run`")
    _add_metrics_parser(commands)
    return parser


def _add_metrics_parser(commands) -> None:
    from flows.metrics import DEFAULT_PORT

    metrics = commands.add_parser(
        "metrics",
        help="serve Prometheus metrics of the data (ledger, quarantine) and of the runs (Prefect API)",
    )
    metrics.add_argument("--address", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    metrics.add_argument("--port", type=_positive_int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    metrics.add_argument(
        "--cache-seconds", type=float, default=10.0, help="scrapes within this many seconds share one read"
    )
    metrics.add_argument(
        "--events-lookback-hours",
        type=_positive_int,
        default=168,
        help="how far back file events are read (a file's latest outcome); keep it within Prefect's event retention",
    )
    metrics.add_argument("--once", action="store_true", help="print one scrape on stdout and exit")


def _fail(message: str, code: int = EXIT_CONFIG) -> int:
    from flows.settings import redact

    print(f"ecommerce-etl: error: {redact(message)}", file=sys.stderr)
    return code


# --- where a run goes: the database and the Prefect server ------------------------------------


def _local_postgres(settings):
    from flows.localdb import LocalPostgres

    return LocalPostgres(settings.local_db_dir)


def _local_prefect(settings):
    from flows.localserver import LocalPrefectServer

    return LocalPrefectServer(settings.local_dir.resolve(), settings.prefect_port, _local_postgres(settings))


@dataclass
class Target:
    settings: Settings  # with the run's overrides applied
    database: str  # where the data goes, for people
    embedded_db: bool
    ui_url: str | None  # the Prefect UI the run is shown in


def _external_database(settings: Settings, args) -> tuple[Settings, str] | None:
    """The settings with the run's database when one is configured: --database-url, else DATABASE_URL/PG*."""
    from pydantic import SecretStr

    from flows.settings import normalise_database_url

    if args.database_url:
        url = normalise_database_url(args.database_url, "--database-url")
        return settings.model_copy(update={"database_url": SecretStr(url)}), "the PostgreSQL of --database-url"
    if settings.resolved_database_url():
        return settings, "the configured PostgreSQL"
    return None


def _embedded_database(settings: Settings) -> tuple[Settings, str, bool]:
    """No database configured: the embedded server under ETL_LOCAL_DIR, database ecommerce."""
    from pydantic import SecretStr

    server = _local_postgres(settings).start()
    server.ensure_database("ecommerce")
    where = f"the embedded PostgreSQL in {settings.local_db_dir.resolve()} (database ecommerce)"
    return settings.model_copy(update={"database_url": SecretStr(server.url("ecommerce"))}), where, True


def _prefect_ui(settings) -> str:
    """Point Prefect at the user's server, or at the local one (started or reused); returns the UI URL.

    This runs before anything imports prefect, which reads PREFECT_API_URL once, on import."""
    from flows.localserver import configured_api_url

    api = configured_api_url()
    if api:
        return api.rstrip("/").removesuffix("/api")
    server = _local_prefect(settings)
    if not server.is_running():
        print(
            f"Starting the local Prefect server on {server.ui_url} (the first start sets up its database; "
            f"log: {server.log_file})",
            file=sys.stderr,
        )
    server.ensure_running()
    os.environ["PREFECT_API_URL"] = server.api_url
    return server.ui_url


def _check_database(settings: Settings) -> None:
    """One connection before anything starts: a wrong or unreachable database fails now, clearly."""
    import sqlalchemy as sa

    engine = sa.create_engine(settings.required_database_url(), connect_args={"connect_timeout": 10})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        reason = " ".join(str(exc.orig).split())
        from flows.errors import ConfigError

        raise ConfigError(
            f"cannot use the database: {reason} (check DATABASE_URL or PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE)"
        ) from None
    finally:
        engine.dispose()


def _prepare(args) -> Target:
    """Every check that needs no Prefect, then the servers; raises ConfigError naming the setting."""
    from flows.settings import get_settings
    from flows.sources import check_arguments, kaggle_login

    settings = get_settings()
    settings.checked_names()
    if args.table:
        from flows.schema import check_identifier

        check_identifier(args.table, "--table")
    check_arguments(args.source, args.path, args.url)
    if args.source == "kaggle":
        kaggle_login(settings)  # fail now, not after starting servers
    external = _external_database(settings, args)
    if external:
        _check_database(external[0])
    ui_url = _prefect_ui(settings)  # refuses a foreign program on its port before starting anything
    settings, where, embedded = (*external, False) if external else _embedded_database(settings)
    return Target(settings=settings, database=where, embedded_db=embedded, ui_url=ui_url)


# --- output ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    """Rich progress bars, one per file, fed by the load stage (on stderr, so --json stays clean);
    yields the callback for RunOptions.progress, or None."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bars.add_task(name, total=total or None)
        bars.update(tasks[name], completed=done)

    with bars:
        yield update


def _print_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    from flows.report import SUMMARY_COLUMNS

    table = Table(title="ecommerce-etl")
    for title, _ in SUMMARY_COLUMNS:
        table.add_column(title, justify="left" if title in ("file", "status", "error") else "right")
    for row in report.summary_rows():
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    totals = report.totals
    table.add_row(
        "total",
        "",
        *(f"{totals[k]:,}" for k in ("rows_read", "rows_loaded", "rows_quarantined", "rows_skipped")),
        "",
        "",
        "",
    )
    # a log file or pipe has no width of its own: wide enough that numbers are never cut
    Console(stderr=True, width=None if sys.stderr.isatty() else 160).print(table)


@dataclass
class Outcome:
    code: int
    report: RunReport | None = None
    error: str | None = None
    flow_run_url: str | None = None

    def as_json(self) -> dict:
        from flows.settings import redact

        status = {EXIT_OK: "ok", EXIT_FILE_FAILED: "failed"}.get(self.code, "error")
        body = (
            self.report.as_json()
            if self.report
            else {"files": [], "rows_read": 0, "rows_loaded": 0, "rows_quarantined": 0, "rows_skipped": 0}
        )
        return {
            "status": status,
            "exit_code": self.code,
            "error": redact(self.error) if self.error else None,
            "flow_run_url": self.flow_run_url,
            **body,
        }


def _emit(outcome: Outcome, as_json: bool, target: Target | None, table: str) -> int:
    if as_json:
        print(json.dumps(outcome.as_json()))
    if outcome.error:
        _fail(outcome.error, outcome.code)
    if as_json:
        return outcome.code
    if outcome.report:
        _print_table(outcome.report)
    if target:
        query = f"`{PSQL_HINT}`" if target.embedded_db else "psql with your DATABASE_URL"
        print(f"Data: {target.database}, table {table}; query it with {query}", file=sys.stderr)
    if outcome.flow_run_url:
        print(f"Flow run in the Prefect UI: {outcome.flow_run_url}", file=sys.stderr)
    return outcome.code


# --- commands ----------------------------------------------------------------------------------


def _run_flow(args, target: Target, progress) -> Outcome:
    from flows.errors import ConfigError
    from flows.etl import LoadFailed, RunOptions, make_flows

    files = [f.strip() for f in args.files.split(",") if f.strip()] if args.files else None
    pipeline = make_flows(RunOptions(settings=target.settings, progress=progress)).pipeline
    url = args.url[0] if args.url and len(args.url) == 1 else args.url
    state = pipeline(
        source=args.source,
        path=args.path,
        url=url,
        files=files,
        table=args.table,
        rows_per_file=args.rows_per_file,
        return_state=True,
    )
    assert state is not None  # return_state=True always returns the run's final State
    url = f"{target.ui_url}/runs/flow-run/{state.state_details.flow_run_id}" if target.ui_url else None
    result = state.result(raise_on_failure=False)
    if isinstance(result, LoadFailed):
        return Outcome(EXIT_FILE_FAILED, report=result.report, flow_run_url=url)
    if isinstance(result, ConfigError):
        return Outcome(EXIT_CONFIG, error=str(result), flow_run_url=url)
    if isinstance(result, BaseException):  # the source failed (404, corrupt archive...) or retries ran out
        return Outcome(EXIT_FILE_FAILED, error=f"{type(result).__name__}: {result}", flow_run_url=url)
    from flows.report import RunReport, file_result

    report = RunReport(files=[file_result(f) for f in result["files"]], source=args.source)
    return Outcome(EXIT_OK, report=report, flow_run_url=url)


def cmd_run(args) -> int:
    from flows.errors import ConfigError

    target = None
    try:
        target = _prepare(args)
        with contextlib.redirect_stdout(sys.stderr), _progress_bars(not args.json and sys.stderr.isatty()) as bars:
            outcome = _run_flow(args, target, bars)
    except ConfigError as exc:
        outcome = Outcome(EXIT_CONFIG, error=str(exc))
    except Exception as exc:
        outcome = Outcome(EXIT_FILE_FAILED, error=f"{type(exc).__name__}: {exc}")
    table = args.table or (target.settings.table if target else "ecommerce_events")
    return _emit(outcome, args.json, target, table)


def cmd_sample(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from flows.sample import FULL_ROWS, write_sample
    from flows.schema import MONTH_FILES

    rows = FULL_ROWS if args.full else dict.fromkeys(MONTH_FILES, args.rows_per_file)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with bar:
        tasks = {name: bar.add_task(f"sample {name}", total=n) for name, n in rows.items()}
        paths = write_sample(args.out, rows, args.seed, progress=lambda name, n: bar.advance(tasks[name], n))
    for path in paths:
        print(path)
    return EXIT_OK


def cmd_deploy(args) -> int:
    """Alerts come from the environment (ETL_ALERT_WEBHOOK_URL is a secret): flows/alerts.py."""
    from flows.alerts import load_alert_settings
    from flows.deploy import read_base_job_template, register
    from flows.errors import ConfigError

    try:
        template = read_base_job_template(args.base_job_template)
        alerts = load_alert_settings()
        result = asyncio.run(
            register(
                args.pool,
                template,
                schedule=args.schedule,
                timezone=args.timezone,
                sample_rows=args.sample_rows,
                max_parallel_files=args.max_parallel_files,
                concurrency_limit=args.concurrency_limit,
                alerts=alerts,
                wait_seconds=args.wait,
            )
        )
    except ConfigError as exc:
        return _fail(str(exc))
    print(json.dumps(result))
    return EXIT_OK


def cmd_server(args) -> int:
    from flows.errors import ConfigError
    from flows.settings import get_settings

    try:
        server = _local_prefect(get_settings())
        action = server.ensure_running()
    except ConfigError as exc:
        return _fail(str(exc))
    print(f"Prefect UI ({action}): {server.ui_url}  (log: {server.log_file}; stop it with `make stop`)")
    return EXIT_OK


def cmd_stop(args) -> int:
    from flows.errors import ConfigError
    from flows.settings import get_settings

    try:
        settings = get_settings()
    except ConfigError as exc:
        return _fail(str(exc))
    server_was_up = _local_prefect(settings).stop()
    postgres = _local_postgres(settings)
    db_was_up = postgres.is_running()
    postgres.stop()
    print(
        f"local Prefect server: {'stopped' if server_was_up else 'was not running'}; "
        f"embedded PostgreSQL: {'stopped' if db_was_up else 'was not running'}"
    )
    return EXIT_OK


def cmd_forget(args) -> int:
    """Remove one file's rows through the ledger, in one transaction under the file's lock."""
    import sqlalchemy as sa

    from flows.errors import ConfigError
    from flows.load import forget_file
    from flows.settings import get_settings
    from flows.sql import Names

    try:
        settings = get_settings()
        schema, default_table = settings.checked_names()
        names = Names(schema, args.table or default_table, table_setting="--table" if args.table else "ETL_TABLE")
        external = _external_database(settings, args)
        settings = external[0] if external else _embedded_database(settings)[0]
    except ConfigError as exc:
        return _fail(str(exc))
    engine = sa.create_engine(settings.required_database_url())
    try:
        forgotten = forget_file(engine, names, Path(args.file).name)
    except sa.exc.ProgrammingError as exc:  # no ledger table: nothing was ever loaded into this target
        return _fail(
            f"{names.schema}.{names.table} has no ledger to forget {args.file} from "
            f"({' '.join(str(exc.orig).split())})",
            EXIT_FILE_FAILED,
        )
    finally:
        engine.dispose()
    if not forgotten.found:
        return _fail(
            f"{forgotten.file} is not in the ledger of {names.schema}.{names.table}: nothing to forget",
            EXIT_FILE_FAILED,
        )
    print(
        f"forgot {forgotten.file}: {forgotten.rows_loaded} rows and {forgotten.rows_quarantined} quarantined rows "
        f"removed from {names.schema}.{names.table}, ledger entry deleted"
    )
    return EXIT_OK


def cmd_metrics(args) -> int:
    import datetime as dt

    from flows.errors import ConfigError
    from flows.metrics import ExporterOptions, run

    options = ExporterOptions(
        address=args.address,
        port=args.port,
        cache_seconds=args.cache_seconds,
        events_lookback=dt.timedelta(hours=args.events_lookback_hours),
        once=args.once,
    )
    try:
        return run(options)
    except ConfigError as exc:
        return _fail(str(exc))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    commands = {
        "run": cmd_run,
        "sample": cmd_sample,
        "deploy": cmd_deploy,
        "server": cmd_server,
        "stop": cmd_stop,
        "forget": cmd_forget,
        "metrics": cmd_metrics,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
