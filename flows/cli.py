"""`ecommerce-etl`: run the pipeline, write the sample, register deployments.

Exit codes: 0 every file loaded or skipped, 1 a file failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FILE_FAILED, EXIT_CONFIG = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep its message, name the help
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from flows.sources import SOURCES

    parser = _Parser(prog="ecommerce-etl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="fetch a source and load it into PostgreSQL")
    run.add_argument("--source", choices=SOURCES, default="sample")
    run.add_argument("--path", help="folder of .csv files (--source local)")
    run.add_argument("--url", help="http(s) .csv, .csv.gz or .zip (--source url)")
    run.add_argument("--files", help="comma-separated file names to load, e.g. 2019-Oct.csv,2019-Nov.csv")
    run.add_argument("--rows-per-file", type=int, help="sample rows per monthly file (--source sample)")
    run.add_argument("--database-url", help="PostgreSQL URL; default DATABASE_URL, then PG* variables, "
                                            "then an embedded PostgreSQL under ETL_LOCAL_DB_DIR")
    run.add_argument("--table", help="target table (default ETL_TABLE or ecommerce_events)")
    run.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    sample = commands.add_parser("sample", help="write the deterministic sample CSVs")
    sample.add_argument("--out", required=True, type=Path)
    sample.add_argument("--rows-per-file", type=int, default=20_000)
    sample.add_argument("--seed", type=int, default=20191001)

    deploy = commands.add_parser("deploy", help="create/update the Kubernetes work pool and deployments")
    deploy.add_argument("--pool", required=True, help="work pool name")
    deploy.add_argument("--base-job-template", required=True, type=Path, help="JSON base job template")
    deploy.add_argument("--schedule", help="cron schedule for the kaggle deployment, e.g. '0 3 * * *'")
    deploy.add_argument("--timezone", default="UTC")
    deploy.add_argument("--sample-rows", type=int, default=20_000)
    deploy.add_argument("--wait", type=float, default=120, help="seconds to wait for the Prefect API")

    forget = commands.add_parser(
        "forget", help="remove a file's rows, quarantine rows and ledger entry (a renamed or deleted file's rows stay "
                       "until then: exactly-once is keyed by file name)")
    forget.add_argument("file", help="the file's name as loaded (a path is fine: its last part is the name)")
    forget.add_argument("--table", help="target table (default ETL_TABLE or ecommerce_events)")
    forget.add_argument("--database-url", help="PostgreSQL URL; default as for `run`")
    return parser


def _fail(message: str, code: int = EXIT_CONFIG) -> int:
    from flows.settings import redact

    print(f"ecommerce-etl: error: {redact(message)}", file=sys.stderr)
    return code


def _local_database(settings) -> str:
    from flows.localdb import LocalPostgres

    server = LocalPostgres(settings.local_db_dir).start()
    server.psql("SELECT 1")
    if server.psql("SELECT 1 FROM pg_database WHERE datname = 'ecommerce'").strip() != "1":
        server.psql("CREATE DATABASE ecommerce")
    return server.url("ecommerce")


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    """Rich progress bars fed by the load stage (on stderr, so --json stays clean)."""
    from flows import etl

    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=False)
    tasks: dict[str, int] = {}

    def sink(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bars.add_task(name, total=total or None)
        bars.update(tasks[name], completed=done)

    etl.progress_sink = sink
    try:
        with bars:
            yield
    finally:
        etl.progress_sink = None


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ecommerce-etl")
    for column in ("file", "status", "rows read", "rows loaded", "rows quarantined", "error"):
        table.add_column(column)
    for f in summary["files"]:
        table.add_row(f["file"], f["status"], f"{f['rows_read']:,}", f"{f['rows_loaded']:,}",
                      f"{f['rows_quarantined']:,}", f["error"] or "")
    table.add_row("total", "", f"{summary['rows_read']:,}", f"{summary['rows_loaded']:,}",
                  f"{summary['rows_quarantined']:,}", "")
    Console(stderr=True).print(table)


def cmd_run(args) -> int:
    from flows.errors import ConfigError
    from flows.settings import get_settings, normalise_database_url

    try:
        if args.database_url:
            os.environ["DATABASE_URL"] = normalise_database_url(args.database_url, "--database-url")
        settings = get_settings()
        settings.checked_names()
        if args.table:
            from flows.schema import check_identifier

            check_identifier(args.table, "--table")
        from flows.sources import check_arguments, kaggle_login

        check_arguments(args.source, args.path, args.url)
        if args.source == "kaggle":
            kaggle_login(settings)  # fail now, not after starting servers
        if settings.resolved_database_url() is None:
            os.environ["DATABASE_URL"] = _local_database(settings)
            where_db = f"embedded PostgreSQL in {settings.local_db_dir.resolve()} (database ecommerce)"
        else:
            where_db = "the configured PostgreSQL"
        files = [f.strip() for f in args.files.split(",") if f.strip()] if args.files else None
    except ConfigError as exc:
        return _fail(str(exc))

    from flows.etl import LoadFailed, ecommerce_etl

    code = EXIT_OK
    with contextlib.redirect_stdout(sys.stderr), _progress_bars(not args.json and sys.stderr.isatty()):
        try:
            summary = ecommerce_etl(source=args.source, path=args.path, url=args.url, files=files,
                                    table=args.table, rows_per_file=args.rows_per_file)
        except LoadFailed as exc:
            summary, code = exc.summary, EXIT_FILE_FAILED
        except ConfigError as exc:
            return _fail(str(exc))
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
        api = os.environ.get("PREFECT_API_URL")
        print(f"Data: {where_db}, table {args.table or settings.table}", file=sys.stderr)
        print(f"Prefect UI: {api.removesuffix('/api')}" if api else
              "Prefect: ran on an ephemeral local server; start `make server` and set "
              "PREFECT_API_URL=http://127.0.0.1:4200/api to keep runs in a UI", file=sys.stderr)
    return code


def cmd_sample(args) -> int:
    from flows.sample import write_sample

    for path in write_sample(args.out, args.rows_per_file, args.seed):
        print(path)
    return EXIT_OK


def cmd_deploy(args) -> int:
    from flows.deploy import read_base_job_template, register
    from flows.errors import ConfigError

    try:
        template = read_base_job_template(args.base_job_template)
        result = asyncio.run(register(args.pool, template, schedule=args.schedule, timezone=args.timezone,
                                      sample_rows=args.sample_rows, wait_seconds=args.wait))
    except ConfigError as exc:
        return _fail(str(exc))
    print(json.dumps(result))
    return EXIT_OK


def cmd_forget(args) -> int:
    """Remove one file's rows through the ledger, in one transaction under the file's lock."""
    import sqlalchemy as sa

    from flows.errors import ConfigError
    from flows.load import forget_file
    from flows.settings import get_settings, normalise_database_url
    from flows.sql import Names

    try:
        settings = get_settings()
        schema, default_table = settings.checked_names()
        names = Names(schema, args.table or default_table, table_setting="--table" if args.table else "ETL_TABLE")
        url = (normalise_database_url(args.database_url, "--database-url") if args.database_url
               else settings.resolved_database_url() or _local_database(settings))
    except ConfigError as exc:
        return _fail(str(exc))
    engine = sa.create_engine(url)
    try:
        forgotten = forget_file(engine, names, Path(args.file).name)
    except sa.exc.ProgrammingError as exc:  # no ledger table: nothing was ever loaded into this target
        return _fail(f"{names.schema}.{names.table} has no ledger to forget {args.file} from "
                     f"({' '.join(str(exc.orig).split())})", EXIT_FILE_FAILED)
    finally:
        engine.dispose()
    if not forgotten.found:
        return _fail(f"{forgotten.file} is not in the ledger of {names.schema}.{names.table}: nothing to forget",
                     EXIT_FILE_FAILED)
    print(f"forgot {forgotten.file}: {forgotten.rows_loaded} rows and {forgotten.rows_quarantined} quarantined rows "
          f"removed from {names.schema}.{names.table}, ledger entry deleted")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    return {"run": cmd_run, "sample": cmd_sample, "deploy": cmd_deploy, "forget": cmd_forget}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
