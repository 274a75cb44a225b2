"""`ecommerce-etl metrics`: a Prometheus exporter of the data (each target's ledger and quarantine
table) and of the runs (the Prefect API). Modules: data and runs (the two readers), families (every
metric, its help and labels), exporter (the collector, its cache and the HTTP server)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from dataclasses import dataclass

from flows.errors import ConfigError

DEFAULT_PORT = 9464


@dataclass(frozen=True)
class ExporterOptions:
    address: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    cache_seconds: float = 10.0
    events_lookback: dt.timedelta = dt.timedelta(days=7)
    once: bool = False  # print one scrape on stdout and exit (1 when a source could not be read)


def run(options: ExporterOptions) -> int:
    """Serve until stopped (SIGTERM/SIGINT), or print one scrape with `once`."""
    from flows.localserver import configured_api_url
    from flows.metrics.data import DataReader, data_engine
    from flows.metrics.exporter import Exporter, exposition, serve
    from flows.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per API call and scrape otherwise
    settings = get_settings()
    schema, _ = settings.checked_names()
    url = settings.resolved_database_url()
    if not url:
        raise ConfigError(
            "the exporter needs the data database: set DATABASE_URL or PGHOST/PGUSER/PGPASSWORD(_FILE)/PGDATABASE"
        )
    runs = _runs_reader_factory(options) if configured_api_url() else None
    if runs is None:
        logging.getLogger("ecommerce_etl.metrics").warning("PREFECT_API_URL is not set: no run metrics")
    exporter = Exporter(DataReader(data_engine(url), schema), runs, cache_seconds=options.cache_seconds)
    if options.once:
        text = exposition(exporter)
        sys.stdout.write(text)
        return 0 if all(exporter.snapshot().up.values()) else 1
    _stop_on_sigterm()
    serve(exporter, options.address, options.port, ready=_announce(options.address))
    return 0


def _runs_reader_factory(options: ExporterOptions):
    from prefect.client.orchestration import get_client

    from flows.metrics.runs import RunsReader

    def reader():
        client = get_client(sync_client=True)
        return _ClosingReader(client, options.events_lookback)

    # the client opens its HTTP connection pool on enter; one client per read keeps no socket idle
    class _ClosingReader(RunsReader):
        def read(self, now):
            with self.client:
                return super().read(now)

    return reader


def _announce(address: str):
    def ready(port: int) -> None:
        print(f"ecommerce-etl metrics: serving http://{address}:{port}/metrics (pid {os.getpid()})", flush=True)

    return ready


def _stop_on_sigterm() -> None:
    import signal

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
