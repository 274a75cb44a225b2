"""`ecommerce-etl metrics`: serve Prometheus metrics of the data (ledger, quarantine) and of the runs."""

from __future__ import annotations

from dataclasses import dataclass

from flows.cli._app import Output
from flows.cli._params import option, positive_int
from flows.metrics import DEFAULT_PORT  # a light module: its readers are imported when it runs

HELP = "serve Prometheus metrics of the data (ledger, quarantine) and of the runs (Prefect API)"


@dataclass(frozen=True)
class Params:
    address: str = option("--address", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    port: int = option("--port", type=positive_int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    cache_seconds: float = option(
        "--cache-seconds", type=float, default=10.0, help="scrapes within this many seconds share one read"
    )
    events_lookback_hours: int = option(
        "--events-lookback-hours",
        type=positive_int,
        default=168,
        help="how far back file events are read (a file's latest outcome); keep it within Prefect's event retention",
    )
    once: bool = option("--once", action="store_true", default=False, help="print one scrape on stdout and exit")


def execute(params: Params, out: Output) -> int:
    import datetime as dt

    from flows.metrics import ExporterOptions, run

    options = ExporterOptions(
        address=params.address,
        port=params.port,
        cache_seconds=params.cache_seconds,
        events_lookback=dt.timedelta(hours=params.events_lookback_hours),
        once=params.once,
    )
    return run(options)
