"""`ecommerce-etl stop`: stop the local Prefect server and the embedded PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

from flows.cli._app import EXIT_OK, Output

HELP = "stop the local Prefect server and the embedded PostgreSQL"


@dataclass(frozen=True)
class Params:
    pass


def execute(params: Params, out: Output) -> int:
    from flows.cli._targets import local_postgres, local_prefect
    from flows.settings import get_settings

    settings = get_settings()
    server_was_up = local_prefect(settings).stop()
    postgres = local_postgres(settings)
    db_was_up = postgres.is_running()
    postgres.stop()
    print(
        f"local Prefect server: {'stopped' if server_was_up else 'was not running'}; "
        f"embedded PostgreSQL: {'stopped' if db_was_up else 'was not running'}"
    )
    return EXIT_OK
