"""`ecommerce-etl run`: fetch a source and load it into PostgreSQL, shown in the Prefect UI."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

from flows.cli._app import EXIT_FAILED, EXIT_OK, Output
from flows.cli._params import database_url_option, option, positive_int, table_option
from flows.contract import SourceName

if TYPE_CHECKING:
    from flows.cli._targets import Database
    from flows.contract import RunRequest
    from flows.report import RunReport

HELP = "fetch a source and load it into PostgreSQL"


@dataclass(frozen=True)
class Params:
    source: str = option("--source", choices=get_args(SourceName), default="sample")
    path: str | None = option("--path", help="folder of .csv files (--source local)")
    url: list[str] | None = option(
        "--url",
        action="append",
        help="http(s) .csv, .csv.gz or .zip (--source url); repeat it for several files (one URL per file)",
    )
    files: str | None = option("--files", help="comma-separated file names to load, e.g. 2019-Oct.csv,2019-Nov.csv")
    rows_per_file: int | None = option(
        "--rows-per-file", type=positive_int, help="sample rows per monthly file (--source sample)"
    )
    database_url: str | None = database_url_option()
    table: str | None = table_option()
    json: bool = option("--json", action="store_true", default=False, help="print exactly one JSON object on stdout")


@dataclass(frozen=True)
class Target:
    database: Database  # its settings carry the run's database
    ui_url: str  # the Prefect UI the run is shown in


def execute(params: Params, out: Output) -> int:
    from flows.report import RunReport, print_table
    from flows.settings import Secrets, url_password

    out.body.update(flow_run_url=None, **RunReport().as_json())  # what a run that fails before it starts reports
    out.learn(Secrets.of(url_password(params.database_url or "")))
    request, target = _prepare(params, out)
    query = "`ecommerce-etl psql`" if target.database.embedded else "psql with your DATABASE_URL"
    table = params.table or target.database.settings.table
    out.trailer.append(f"Data: {target.database.where}, table {table}; query it with {query}")
    with contextlib.redirect_stdout(sys.stderr), _progress_bars(not params.json and sys.stderr.isatty()) as bars:
        report, code = _run_flow(request, target, bars, out)
    out.emit(code, **report.as_json())
    if not out.json:
        print_table(report)
        for line in out.trailer:
            out.say(line)
    return code


def _prepare(params: Params, out: Output) -> tuple[RunRequest, Target]:
    """Every check that needs no Prefect, then the servers; raises ConfigError naming the setting."""
    from flows.cli import _targets
    from flows.contract import RunRequest
    from flows.identifiers import check_identifier
    from flows.settings import get_settings
    from flows.sources import source_for

    settings = get_settings()
    out.learn(settings.secrets())
    settings.checked_names()
    if params.table:
        check_identifier(params.table, "--table")
    files = [f.strip() for f in params.files.split(",") if f.strip()] if params.files else None
    request = RunRequest.of(
        "options",
        source=params.source,
        path=params.path,
        url=params.url,
        files=files,
        table=params.table,
        rows_per_file=params.rows_per_file,
    )
    source_for(request.source, settings).check(request)  # its arguments and credentials, now
    configured = _targets.configured_database(settings, params.database_url)
    if configured:
        _targets.check_database(configured.settings)
    ui_url = _targets.prefect_ui(settings)  # refuses a foreign program on its port before starting anything
    return request, Target(configured or _targets.embedded_database(settings), ui_url)


def _run_flow(request: RunRequest, target: Target, progress, out: Output) -> tuple[RunReport, int]:
    """The pipeline flow in this process; a ConfigError or a source's failure it ended with is raised."""
    from flows.etl import LoadFailed, RunOptions, ecommerce_etl, run_options

    with run_options(RunOptions(settings=target.database.settings, progress=progress)):
        state = ecommerce_etl(**request.flow_parameters(), return_state=True)
    run_url = f"{target.ui_url}/runs/flow-run/{state.state_details.flow_run_id}"
    out.body["flow_run_url"] = run_url
    out.trailer.append(f"Flow run in the Prefect UI: {run_url}")
    result = state.result(raise_on_failure=False)
    if isinstance(result, LoadFailed):
        return result.report, EXIT_FAILED
    if isinstance(result, BaseException):  # a ConfigError (exit 2), retries ran out...
        raise result
    return result, EXIT_OK


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
    tasks = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bars.add_task(name, total=total or None)
        bars.update(tasks[name], completed=done, total=total or None)

    with bars:
        yield update
