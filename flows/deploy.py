"""`ecommerce-etl deploy`: register the Kubernetes work pool, the deployments and the alert
automations (flows/alerts.py), idempotently.

The Helm chart runs this in a post-install/post-upgrade hook Job with the same base job
template the worker uses, so the UI shows ready-to-run deployments right after `helm install`.

Bursts are bounded by deployment concurrency limits, which the server enforces before any Job
exists (the worker's own --limit cannot: prefect-kubernetes returns as soon as a Job is
created): the pipeline deployments by --concurrency-limit, the load-file deployment by
max_parallel_files. The pool itself gets no limit, so a waiting parent run never holds a slot
its own file runs need.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from prefect.utilities.callables import parameter_schema

from flows.alerts import AlertSettings, register_alerts
from flows.errors import ConfigError
from flows.names import (
    LOAD_FILE_DEPLOYMENT_NAME,
    LOAD_FILE_ENTRYPOINT,
    LOAD_FILE_FLOW,
    PIPELINE_ENTRYPOINT,
    PIPELINE_FLOW,
    TAG,
)

IMAGE_WORKDIR = "/opt/ecommerce-etl"  # where the Dockerfile puts the code; the entrypoint is relative to it


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    description: str
    parameters: dict
    scheduled: bool
    flow: str = PIPELINE_FLOW
    entrypoint: str = PIPELINE_ENTRYPOINT
    # at most this many flow runs of the deployment at once (server-enforced before the worker
    # creates a Job); None: no limit
    concurrency_limit: int | None = None


def deployment_specs(
    sample_rows: int, max_parallel_files: int = 3, concurrency_limit: int | None = None
) -> list[DeploymentSpec]:
    """concurrency_limit: pipeline runs (sample, kaggle) of each deployment at once; None: no limit."""
    return [
        DeploymentSpec(
            "sample",
            "Load the bundled deterministic sample (no credentials needed).",
            {"source": "sample", "rows_per_file": sample_rows},
            scheduled=False,
            concurrency_limit=concurrency_limit,
        ),
        DeploymentSpec(
            "kaggle",
            "Download the Kaggle dataset (credentials from the kaggle Secret) and load every row.",
            {"source": "kaggle"},
            scheduled=True,
            concurrency_limit=concurrency_limit,
        ),
        # No limit on the work pool instead: it would count the pipeline runs waiting for their
        # files too, and those could hold every slot while their files wait (a deadlock).
        DeploymentSpec(
            LOAD_FILE_DEPLOYMENT_NAME,
            "One file of a source, in its own Job: what the sample and kaggle runs start per file. "
            'Run it alone to reload one file, e.g. file={"name": "2019-Oct.csv", "source": "sample"}.',
            {},
            scheduled=False,
            flow=LOAD_FILE_FLOW,
            entrypoint=LOAD_FILE_ENTRYPOINT,
            concurrency_limit=max_parallel_files,
        ),
    ]


def read_base_job_template(path: Path) -> dict:
    try:
        template = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--base-job-template {path}: cannot read a JSON job template ({exc})") from None
    if not isinstance(template, dict) or not {"job_configuration", "variables"} <= template.keys():
        raise ConfigError(
            f"--base-job-template {path}: expected a JSON object with job_configuration and variables "
            "(the chart's base-job-template ConfigMap)"
        )
    return template


async def _wait_for_api(client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await client.api_healthcheck() is None:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ConfigError(
                f"the Prefect API at {client.api_url} did not answer within {timeout:.0f}s: check PREFECT_API_URL"
            )
        await asyncio.sleep(2)


async def register(
    pool: str,
    base_job_template: dict,
    *,
    schedule: str | None = None,
    timezone: str = "UTC",
    sample_rows: int = 20_000,
    max_parallel_files: int = 3,
    concurrency_limit: int | None = None,
    alerts: AlertSettings | None = None,
    wait_seconds: float = 120,
) -> dict:
    """concurrency_limit: running pipeline runs per deployment (None or 0: unlimited); alerts: the
    automations to keep in step (None leaves them alone)."""
    if concurrency_limit is not None and concurrency_limit < 0:
        raise ConfigError(f"--concurrency-limit {concurrency_limit}: use 0 (no limit) or a positive number")
    async with get_client() as client:
        await _wait_for_api(client, wait_seconds)
        pool_action = await _upsert_pool(client, pool, base_job_template)
        deployments = {}
        for spec in deployment_specs(sample_rows, max_parallel_files, concurrency_limit or None):
            cron = CronSchedule(cron=schedule, timezone=timezone) if schedule and spec.scheduled else None
            deployments[spec.name] = str(await _upsert_deployment(client, spec, pool, cron))
        result = {"work_pool": pool, "work_pool_action": pool_action, "deployments": deployments}
        if alerts is not None:
            result.update(await register_alerts(client, alerts))
    return result


async def _upsert_pool(client, pool: str, base_job_template: dict) -> str:
    """The Kubernetes work pool with this base job template; 'created' or 'updated'."""
    try:
        await client.read_work_pool(pool)
    except ObjectNotFound:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="kubernetes", base_job_template=base_job_template))
        return "created"
    await client.update_work_pool(pool, WorkPoolUpdate(base_job_template=base_job_template))
    return "updated"


async def _upsert_deployment(client, spec: DeploymentSpec, pool: str, cron: CronSchedule | None) -> UUID:
    """The deployment of `spec`, created or updated in place, with exactly the schedule given (or none)."""
    from flows.etl import ecommerce_etl, file_flow

    flows: dict[str, Flow] = {PIPELINE_FLOW: ecommerce_etl, LOAD_FILE_FLOW: file_flow}
    schedules = [DeploymentScheduleCreate(schedule=cron, active=True)] if cron else []
    deployment_id = await client.create_deployment(
        flow_id=await client.create_flow_from_name(spec.flow),
        name=spec.name,
        work_pool_name=pool,
        entrypoint=spec.entrypoint,
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}}],
        parameters=spec.parameters,
        parameter_openapi_schema=parameter_schema(flows[spec.flow]).model_dump_for_openapi(),
        description=spec.description,
        tags=[TAG],
        schedules=schedules,
        enforce_parameter_schema=True,
        concurrency_limit=spec.concurrency_limit,
        # a file beyond the limit waits (AwaitingConcurrencySlot) instead of being cancelled
        concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
        if spec.concurrency_limit
        else None,
    )
    deployment = await client.read_deployment(deployment_id)
    # create_deployment upserts the deployment but adds schedules; keep exactly ours
    for existing in deployment.schedules:
        if not any(s.schedule == existing.schedule for s in schedules):
            await client.delete_deployment_schedule(deployment_id, existing.id)
    return deployment_id
