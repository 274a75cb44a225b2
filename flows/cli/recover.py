"""`ecommerce-etl recover`: re-run crashed pipeline runs (what the chart's recovery container runs)."""

from __future__ import annotations

from dataclasses import dataclass

from flows.cli._app import EXIT_OK, Output
from flows.cli._params import option

HELP = (
    "re-run crashed pipeline runs (the same flow run) up to ETL_PIPELINE_RETRIES times, then mark them Failed; "
    "what the chart's recovery container runs"
)


@dataclass(frozen=True)
class Params:
    once: bool = option(
        "--once", action="store_true", default=False, help="one pass, then exit (default: a pass every 10 s)"
    )


def execute(params: Params, out: Output) -> int:
    import logging

    from pydantic import ValidationError

    from flows.errors import ConfigError
    from flows.recovery import RecoverySettings, watch

    try:
        settings = RecoverySettings()
    except ValidationError as exc:
        raise ConfigError("; ".join(f"{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for action in watch(settings, once=params.once):
        print(f"{action.name} ({action.run}): {action.action}: {action.message}")
    return EXIT_OK
