"""Self-healing when Kubernetes loses a run's process: bounded re-runs of crashed runs.

What already heals: a pod that gets a SIGTERM (deleted, evicted, its node drained). The chart's
flowRun.backoffLimit is 0, so prefect-kubernetes sets PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=
reschedule: the run goes AwaitingRetry and a new Job runs it. A process that dies without a SIGTERM
(SIGKILL, an OOM kill, a lost node) leaves its run Crashed (prefect-kubernetes' observer once the
Job failed, or the supervisor when only the engine process died), and Prefect re-runs nothing.
This module does, a bounded number of times:

- a `load-file` run: the pipeline run waiting for it (flows/fanout.py) sets it back to
  AwaitingRetry, up to ETL_FILE_RETRIES times (flowRun.fileRetries), with a doubling delay; then the
  file fails and the pipeline run with it (the `run failed` alert);
- a pipeline run: `ecommerce-etl recover` (a container of the worker pod) does the same for crashed
  runs of the `ecommerce-etl` flow, up to ETL_PIPELINE_RETRIES times (flowRun.pipelineRetries), and
  marks a run Failed once they are spent. An automation cannot count attempts; this counts the
  Crashed states in the run's own history, so a restart of the counter loses nothing. It never
  re-runs a run while a pod of it still lives.

Always the same flow run, set back to a Scheduled state, never a new run per attempt: the parent's
wait and the UI link stay on the one run, the idempotency key `<run_id>:<file>` keeps finding it (a
re-run parent finds the same child with its whole crash history, so its count survives the parent
too), run_count counts the attempts, and the deployment's concurrency limit applies as before.

The pipeline run's wait also rides out the Prefect API going away for a while (its server or the
server's database restarting): ApiOutage retries with a bounded backoff instead of failing the run
while its files load.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events import emit_event
from prefect.exceptions import PrefectHTTPStatusError
from prefect.states import AwaitingRetry, Failed, State

from flows.names import PIPELINE_FLOW
from flows.settings import RecoverySettings as RecoverySettings  # Settings.recovery: the group `watch` takes

FILE_RETRIED = "ecommerce.file.retried"
RUN_RETRIED = "ecommerce.run.retried"
# Marks the states this module sets, so the UI, the logs and the chaos harness can tell them apart
# from Prefect's own reschedules.
MARK = "ecommerce-etl recovery"

T = TypeVar("T")
log = logging.getLogger("ecommerce_etl.recovery")


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    delay_seconds: float = 10
    max_delay_seconds: float = 300

    def delay(self, retry: int) -> float:
        """Seconds before re-run number `retry` (1-based): the first delay, doubled each time."""
        return min(self.delay_seconds * 2 ** max(retry - 1, 0), self.max_delay_seconds)


@dataclass(frozen=True)
class Verdict:
    """What to do with a crashed run, from its state history."""

    crashes: int  # Crashed states in the run's history that count (see verdict)
    retries: int  # the bound
    delay: float
    reason: str  # the last crash's message
    # the last crash report: "crash" (counts), "repeat" (no attempt ran since the previous one: a
    # second report of it) or "rescheduled" (it cut short Prefect's own SIGTERM reschedule)
    kind: str = "crash"
    reports: int = 1  # every Crashed state, counted or not

    @property
    def uncounted(self) -> bool:
        return self.kind != "crash"

    @property
    def retry(self) -> bool:
        # uncounted reports re-run too, but never more than twice per allowed attempt, plus two
        return self.reports <= 2 * (self.retries + 1) + 2 and (self.uncounted or self.crashes <= self.retries)


def verdict(history: Sequence[State], policy: RetryPolicy) -> Verdict:
    """Pure: re-run (crash number n <= retries) or give up. Counting the Crashed states of the run's
    own history, not a counter of ours, keeps the count right whoever restarts.

    A crash counts when an attempt ran (Running) since the previous crash. Two kinds of report do not
    count, and the run is re-run (still within a cap on all reports, so nothing loops forever):
    - "rescheduled", one right after Prefect's own AwaitingRetry: a pod that gets a SIGTERM has its
      run rescheduled by its supervisor, but Kubernetes counts a pod being deleted as failed at once,
      so prefect-kubernetes' observer sees the Job (backoffLimit 0) fail and reports the run Crashed
      over the reschedule (seen on pod deletions and drains here); it is re-run at once;
    - "repeat", no attempt ran since the previous crash: the same death reported a second time (the
      supervisor reports the engine's death, then the process worker or the observer reports it
      again, even onto the next attempt while it is still Pending)."""
    ordered = sorted(history, key=_timestamp)
    counted = reports = 0
    kind = "crash"
    previous_crash: int | None = None
    for i, state in enumerate(ordered):
        if state.type != StateType.CRASHED:
            continue
        reports += 1
        before = ordered[i - 1] if i else None
        cut_short = bool(before and before.name == "AwaitingRetry" and MARK not in (before.message or ""))
        ran = previous_crash is None or any(s.type == StateType.RUNNING for s in ordered[previous_crash + 1 : i])
        kind = "rescheduled" if cut_short else "crash" if ran else "repeat"
        counted += kind == "crash"
        previous_crash = i
    last = ordered[previous_crash] if previous_crash is not None else None
    reason = " ".join((last.message or "").split()) if last else ""
    delay = 0.0 if kind == "rescheduled" else policy.delay(max(counted, 1))
    return Verdict(counted, policy.retries, delay, reason or "no message", kind, reports)


def _timestamp(state: State) -> datetime:
    return state.timestamp or datetime.min.replace(tzinfo=UTC)


def attempts(run: FlowRun) -> int:
    """How many times the run started (Prefect's run_count), at least 1."""
    return max(run.run_count or 0, 1)


# --- load-file runs: re-run by the pipeline run that waits for them ------------------------------------


def retry_crashed_file(client, run: FlowRun, file: str, policy: RetryPolicy) -> Verdict:
    """For a Crashed `load-file` run: set it back to AwaitingRetry when retries are left (and emit
    ecommerce.file.retried). Returns the verdict either way; `.retry` False means the file failed."""
    found = verdict(client.read_flow_run_states(run.id), policy)
    current = client.read_flow_run(run.id).state
    if not found.retry or not (current and current.is_crashed()):  # already re-run (a retried call)
        return found
    message = f"{MARK}: the load of {file} crashed ({found.reason}); {rerun_text(found, 'flowRun.fileRetries')}"
    result = client.set_flow_run_state(run.id, _awaiting_retry(found.delay, message))
    if result.state is None or not result.state.is_scheduled():
        raise RuntimeError(f"could not re-run the crashed load-file run {run.name}: {result.details}")
    if found.kind == "repeat":  # announced when it was first reported
        return found
    emit_event(
        FILE_RETRIED,
        resource={"prefect.resource.id": f"ecommerce.file.{file}", "prefect.resource.name": file},
        related=[{"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.role": "load-file-run"}],
        payload={"retry": found.crashes, "retries": found.retries, "delay_seconds": found.delay, "crash": found.reason},
    )
    return found


def rerun_text(found: Verdict, setting: str) -> str:
    if found.kind == "repeat":
        return f"a second report of the same crash, which does not count: re-run in {found.delay:.0f} s"
    if found.kind == "rescheduled":
        return "that crash report cut short Prefect's own SIGTERM reschedule and does not count: re-run now"
    return f"re-run {found.crashes} of {found.retries} ({setting}) in {found.delay:.0f} s"


def _awaiting_retry(delay: float, message: str) -> State:
    return AwaitingRetry(scheduled_time=datetime.now(UTC) + timedelta(seconds=delay), message=message)


def exhausted_text(found: Verdict, setting: str) -> str:
    """Why a crashed run is not re-run again (a load-file run's or a pipeline run's: `setting` bounds it)."""
    return (
        f"crashed {found.crashes} time(s), and {setting}={found.retries} re-runs are spent (last crash: {found.reason})"
    )


# --- the pipeline run's wait: riding out the Prefect API going away -------------------------------------


def transient(exc: BaseException) -> bool:
    """An error a wait should ride out: the API unreachable, or answering 5xx (e.g. its database
    restarting). Anything else (4xx, a bug) is not."""
    if isinstance(exc, PrefectHTTPStatusError | httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError)


class ApiOutage:
    """Calls through a Prefect API outage: retried with a doubling pause (2 s up to 30 s) while the
    errors are transient, for at most `seconds` in a row; then the last error is raised."""

    def __init__(self, seconds: float, logger: logging.Logger | logging.LoggerAdapter | None = None):
        self.seconds = seconds
        self.logger = logger or log
        self.since: float | None = None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        pause = 2.0
        while True:
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:
                if not transient(exc):
                    raise
                now = time.monotonic()
                if self.since is None:
                    self.since = now
                    self.logger.warning("the Prefect API is unavailable (%s); waiting for it", _short(exc))
                if now - self.since > self.seconds:
                    self.logger.error("the Prefect API stayed unavailable for %.0f s; giving up", now - self.since)
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 30.0)
                continue
            if self.since is not None:
                self.logger.info("the Prefect API is back after %.0f s", time.monotonic() - self.since)
                self.since = None
            return value


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


# --- pipeline runs: `ecommerce-etl recover` ----------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    run: str  # flow run id
    name: str
    action: str  # re-run | failed | waiting (a pod of it still lives)
    message: str


def crashed_pipeline_runs(client, max_age: timedelta) -> list[FlowRun]:
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[PIPELINE_FLOW])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED]))),
        limit=100,
    )
    oldest = datetime.now(UTC) - max_age
    return [r for r in runs if r.deployment_id and r.state and r.state.timestamp and r.state.timestamp >= oldest]


def recover_pipeline_runs(
    client, policy: RetryPolicy, max_age: timedelta, alive: Callable[[uuid.UUID], bool] | None = None
) -> list[Action]:
    """One pass over crashed pipeline runs: each is re-run (same flow run, AwaitingRetry) while
    retries are left, else marked Failed with why (which the `run failed` alert reports). A run
    with a pod still alive (`alive`) is left for the next pass."""
    actions = []
    for run in crashed_pipeline_runs(client, max_age):
        if alive and alive(run.id):
            actions.append(Action(str(run.id), run.name, "waiting", "a pod of this run is still alive"))
            continue
        found = verdict(client.read_flow_run_states(run.id), policy)
        current = client.read_flow_run(run.id).state
        if not (current and current.is_crashed()):  # moved on since it was listed (another replica)
            continue
        if found.retry:
            message = f"{MARK}: the run crashed ({found.reason}); {rerun_text(found, 'flowRun.pipelineRetries')}"
            state = _awaiting_retry(found.delay, message)
            action = "re-run"
        else:
            message = f"{MARK}: the run {exhausted_text(found, 'flowRun.pipelineRetries')}"
            state = Failed(message=message)
            action = "failed"
        result = client.set_flow_run_state(run.id, state)
        if result.state is None or result.state.type != state.type:
            continue  # someone else moved it first (another replica, a person): theirs stands
        if action == "re-run" and found.kind != "repeat":
            emit_event(
                RUN_RETRIED,
                resource={"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.name": run.name},
                payload={
                    "retry": found.crashes,
                    "retries": found.retries,
                    "delay_seconds": found.delay,
                    "crash": found.reason,
                },
            )
        actions.append(Action(str(run.id), run.name, action, message))
    return actions


def kubernetes_liveness(namespace: str | None = None) -> Callable[[uuid.UUID], bool] | None:
    """In a pod with a service account that may list pods: whether a flow run has a pod that is
    still Pending or Running and not being deleted (prefect-kubernetes labels them with the run's
    id). None outside a cluster."""
    try:
        from kubernetes import client as k8s
        from kubernetes import config
    except ImportError:  # pragma: no cover - the image has it
        return None
    try:
        config.load_incluster_config()
    except config.ConfigException:
        return None
    if namespace is None:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            namespace = f.read().strip()
    api = k8s.CoreV1Api()

    def alive(flow_run_id: uuid.UUID) -> bool:
        try:
            pods = api.list_namespaced_pod(namespace, label_selector=f"prefect.io/flow-run-id={flow_run_id}").items
        except Exception as exc:  # unsure is alive: never start a second copy beside a live one
            log.error("cannot list the pods of flow run %s (%s); not re-running it yet", flow_run_id, _short(exc))
            return True
        return any(
            p.status and p.status.phase in ("Pending", "Running") and not (p.metadata and p.metadata.deletion_timestamp)
            for p in pods
        )

    return alive


def watch(settings: RecoverySettings, once: bool = False) -> list[Action]:
    """`ecommerce-etl recover`: a pass every ETL_RECOVERY_POLL_SECONDS (or one pass), logging what it did."""
    from prefect.client.orchestration import get_client

    policy = RetryPolicy(settings.pipeline_retries, settings.retry_delay_seconds, settings.retry_max_delay_seconds)
    max_age = timedelta(minutes=settings.max_age_minutes)
    alive = kubernetes_liveness()
    log.info(
        "recovering crashed %s runs: up to %d re-run(s) each (pods checked: %s)",
        PIPELINE_FLOW,
        policy.retries,
        "yes" if alive else "no cluster",
    )
    done: list[Action] = []
    with get_client(sync_client=True) as client:
        outage = ApiOutage(float("inf"))
        while True:
            actions = outage.call(recover_pipeline_runs, client, policy, max_age, alive)
            for a in actions:
                if a.action != "waiting":
                    log.warning("%s (%s): %s", a.name, a.run, a.message)
            done += actions
            if settings.heartbeat_file:  # the container's liveness probe reads its age
                settings.heartbeat_file.touch()
            if once:
                return done
            time.sleep(settings.poll_seconds)
