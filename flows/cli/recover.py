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

    from flows.recovery import watch
    from flows.settings import get_settings

    settings = get_settings().recovery  # a bad value: a ConfigError naming its variable (exit 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for action in watch(settings, once=params.once):
        print(f"{action.name} ({action.run}): {action.action}: {action.message}")
    return EXIT_OK
