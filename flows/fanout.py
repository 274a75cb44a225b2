"""Fan-out: one run of the `load-file` deployment per file, each its own Kubernetes Job.

The deployment's concurrency limit (the server's, before a Job exists) bounds how many run at
once. A child hands its result back as a small artifact on its own flow run: Jobs share no volume
and no result storage, and the artifact survives a failed child (its state would not carry it).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import AwaitingRetry, Completed, Failed, State

from flows import recovery
from flows.contract import FileRequest
from flows.errors import ConfigError
from flows.load import FileResult
from flows.names import TAG, file_run_name
from flows.report import failed_result

# a `load-file` Job's result, for the pipeline run that started it (JSON in a markdown artifact)
FILE_RESULT_ARTIFACT_KEY = "ecommerce-etl-file-result"
POLL_SECONDS = 5.0


_RESULT_JSON = re.compile(r"```json\n(.*)\n```", re.S)


def publish_file_result(result: FileResult) -> None:
    """On the `load-file` run itself: readable in the UI, parsed by the pipeline run."""
    create_markdown_artifact(
        key=FILE_RESULT_ARTIFACT_KEY,
        description=f"Result of loading {result.file}",
        markdown=f"# {_inline(result.file)}: {result.status}\n\n```json\n{result.model_dump_json(indent=1)}\n```\n",
    )


def parse_file_result(markdown: str) -> FileResult | None:
    match = _RESULT_JSON.search(markdown or "")
    return FileResult.model_validate_json(match.group(1)) if match else None


def _inline(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Child:
    file: str
    flow_run_id: uuid.UUID
    task_run_id: uuid.UUID | None  # the parent's task run that links the child in the UI


def run_from_deployment() -> bool:
    """This flow run itself was created from a deployment (not a subflow of one)."""
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


def check_file_deployment(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ConfigError(
                f"ETL_FILE_DEPLOYMENT names the deployment {name!r}, which the Prefect server does not have: "
                "register it with `ecommerce-etl deploy` (the chart's hook does), or unset ETL_FILE_DEPLOYMENT "
                "to load the files in-process"
            ) from None


def start_children(deployment: str, files: list[FileRequest]) -> list[Child]:
    """One flow run of the `load-file` deployment per file, linked to this run as its subflow."""
    children = []
    for file in files:
        child = cast(
            FlowRun,
            run_deployment(
                deployment,
                parameters={"file": file.model_dump(mode="json", exclude_defaults=True)},
                timeout=0,
                flow_run_name=file_run_name(file.name),
                tags=[TAG],
                idempotency_key=f"{file.run_id}:{file.name}",  # a retried parent finds its children again
            ),
        )
        children.append(Child(file.name, child.id, child.parent_task_run_id))
        print(f"{file.name}: load-file run {child.name} ({child.id}) created")
    return children


def wait_for(
    children: list[Child],
    on_done: Callable[[Child, FlowRun, str | None], None],
    settings: recovery.RecoverySettings,
) -> None:
    """Poll until every child is in a final state; `on_done` as each one ends (with why it failed,
    when it crashed more often than it may be re-run). A crashed child is re-run first, up to
    ETL_FILE_RETRIES times (flows/recovery.py); a Prefect API outage is ridden out. `settings`: the
    run's (RunOptions.settings.recovery)."""
    policy = recovery.RetryPolicy(settings.file_retries, settings.retry_delay_seconds, settings.retry_max_delay_seconds)
    by_id = {c.flow_run_id: c for c in children}
    logger = get_run_logger()
    outage = recovery.ApiOutage(settings.api_outage_seconds, logger)
    last_counts = None
    with get_client(sync_client=True) as client:
        while by_id:
            wanted = FlowRunFilter(id=FlowRunFilterId(any_=list(by_id)))
            runs = outage.call(client.read_flow_runs, flow_run_filter=wanted)
            for run in runs:
                if not (run.state and run.state.is_final()):
                    continue
                child, why = by_id[run.id], None
                if run.state.is_crashed():
                    found = outage.call(_rerun_if_allowed, client, child, run, policy)
                    if found.retry:
                        continue
                    why = f"its load-file run {recovery.exhausted_text(found, 'flowRun.fileRetries')}"
                outage.call(on_done, child, run, why)
                del by_id[run.id]
            counts: dict[str, int] = {}
            for run in runs:
                if run.id in by_id:
                    name = (run.state.name or run.state.type.value) if run.state else "Unknown"
                    counts[name] = counts.get(name, 0) + 1
            if by_id and counts != last_counts:
                logger.info(
                    "%d of %d file(s) done; waiting: %s",
                    len(children) - len(by_id),
                    len(children),
                    ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                )
                last_counts = counts
            if by_id:
                time.sleep(POLL_SECONDS)


def _rerun_if_allowed(client, child: Child, run: FlowRun, policy: recovery.RetryPolicy) -> recovery.Verdict:
    """A crashed child run again (same flow run) while retries are left; its linking task shows it."""
    found = recovery.retry_crashed_file(client, run, child.file, policy)
    if found.retry:
        text = recovery.rerun_text(found, "flowRun.fileRetries")
        get_run_logger().warning("%s: its load-file run %s crashed (%s); %s", child.file, run.name, found.reason, text)
        if child.task_run_id:
            message = f"crashed ({found.reason}); {text}"
            client.set_task_run_state(child.task_run_id, AwaitingRetry(message=message), force=True)
    return found


def child_result(child: Child, run: FlowRun, why: str | None = None) -> FileResult:
    """What the child's artifact says, else why it ended without one (`why`: crashed too often;
    else its state: cancelled...)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[FILE_RESULT_ARTIFACT_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            )
        )
        result = parse_file_result(str(artifacts[-1].data)) if artifacts else None
        if child.task_run_id:  # the UI's graph shows the child's outcome on its linking task
            outcome: State = (
                Completed()
                if run.state and run.state.is_completed()
                else Failed(message=f"load-file run {run.name} ended {run.state.name if run.state else 'unknown'}")
            )
            client.set_task_run_state(child.task_run_id, outcome, force=True)
    if result:
        return result
    if why:
        return failed_result(child.file, why)
    state = run.state
    why = f"{state.name}: {state.message}" if state and state.message else (state.name if state else "no state")
    return failed_result(child.file, f"its load-file run {run.name} ended without a result ({why})")
