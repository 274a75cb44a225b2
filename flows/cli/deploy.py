"""`ecommerce-etl deploy`: create or update the Kubernetes work pool, the deployments and the alerts.

Alerts come from the environment (ETL_ALERT_WEBHOOK_URL is a secret): flows/alerts.py.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from flows.cli._app import EXIT_OK, Output
from flows.cli._params import option, positive_int

HELP = "create/update the Kubernetes work pool and deployments"


@dataclass(frozen=True)
class Params:
    pool: str = option("--pool", required=True, help="work pool name")
    base_job_template: Path = option("--base-job-template", required=True, type=Path, help="JSON base job template")
    schedule: str | None = option("--schedule", help="cron schedule for the kaggle deployment, e.g. '0 3 * * *'")
    timezone: str = option("--timezone", default="UTC")
    sample_rows: int = option("--sample-rows", type=int, default=20_000)
    max_parallel_files: int = option(
        "--max-parallel-files",
        type=positive_int,
        default=3,
        help="concurrency limit of the load-file deployment: at most this many file Jobs at once",
    )
    concurrency_limit: int = option(
        "--concurrency-limit",
        type=int,
        default=0,
        help="running pipeline runs per deployment (sample, kaggle), enforced by the server (0: no limit)",
    )
    wait: float = option("--wait", type=float, default=120, help="seconds to wait for the Prefect API")


def execute(params: Params, out: Output) -> int:
    from flows.deploy import read_base_job_template, register
    from flows.settings import get_settings

    template = read_base_job_template(params.base_job_template)
    settings = get_settings()
    out.learn(settings.secrets())
    result = asyncio.run(
        register(
            params.pool,
            template,
            schedule=params.schedule,
            timezone=params.timezone,
            sample_rows=params.sample_rows,
            max_parallel_files=params.max_parallel_files,
            concurrency_limit=params.concurrency_limit,
            alerts=settings.alerts,
            wait_seconds=params.wait,
        )
    )
    print(json.dumps(result))
    return EXIT_OK
