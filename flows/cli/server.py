"""`ecommerce-etl server`: start (or reuse) the local Prefect server and its UI."""

from __future__ import annotations

from dataclasses import dataclass

from flows.cli._app import EXIT_OK, Output

HELP = "start (or reuse) the local Prefect server and UI on 127.0.0.1:ETL_PREFECT_PORT"


@dataclass(frozen=True)
class Params:
    pass


def execute(params: Params, out: Output) -> int:
    from flows.cli._targets import local_prefect
    from flows.settings import get_settings

    server = local_prefect(get_settings())
    action = server.ensure_running()
    print(f"Prefect UI ({action}): {server.ui_url}  (log: {server.log_file}; stop it with `make stop`)")
    return EXIT_OK
