"""Metrics of the runs, read from the Prefect API: flow runs by deployment and state, the runs that
wait, the last run's duration, workers' heartbeats, and each file's latest outcome from the
`ecommerce.file.*` events the pipeline emits (flows/events.py).

Labels are deployments, states, work pools and file names: never run ids, so the number of series
stays bounded by what the user configured.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterId,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

from flows.events import EVENT_PREFIX

NO_DEPLOYMENT = "(none)"  # runs started without a deployment (CLI runs, in-process subflows)
FINAL_TYPES = (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)
OPEN_TYPES = (StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING)
# state name -> what the wait is measured from: the time the run should have started, or the
# time it entered the state (expected_start_time is set once, when a run is first scheduled)
WAITING = {"Late": "expected_start", "AwaitingConcurrencySlot": "expected_start", "Pending": "state"}
FILE_OUTCOMES = ("loaded", "skipped", "failed")
PAGE = 200
EVENTS_PAGE = 50  # the most /events/filter returns at once


@dataclass
class DeploymentRuns:
    name: str  # "<flow>/<deployment>", or NO_DEPLOYMENT
    by_state: dict[tuple[str, str], int] = field(default_factory=dict)  # (state type, state name) -> runs
    oldest_waiting: dict[str, float] = field(default_factory=dict)  # WAITING name -> seconds
    oldest_running: float = 0.0
    last_duration: float | None = None  # seconds in Running of the latest ended run
    last_success: float | None = None  # end time (epoch) of the latest Completed run


@dataclass
class WorkPoolStatus:
    name: str
    ready: bool
    workers: dict[str, int]  # worker status (online/offline) -> workers
    last_heartbeat: float | None


@dataclass(frozen=True)
class FileOutcome:
    schema: str
    table: str
    file: str
    status: str  # loaded | skipped | failed
    at: float  # epoch seconds


@dataclass
class RunsSnapshot:
    deployments: list[DeploymentRuns]
    work_pools: list[WorkPoolStatus]
    file_outcomes: list[FileOutcome]


def _epoch(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value else None


class RunsReader:
    """Everything from one Prefect API client (a SyncPrefectClient); `now` makes ages testable."""

    def __init__(self, client: Any, events_lookback: dt.timedelta):
        self.client = client
        self.events_lookback = events_lookback

    def read(self, now: dt.datetime) -> RunsSnapshot:
        groups = self._deployments()
        runs = {name: DeploymentRuns(name) for name in groups.values()}
        runs[NO_DEPLOYMENT] = DeploymentRuns(NO_DEPLOYMENT)
        for deployment_id, name in [*groups.items(), (None, NO_DEPLOYMENT)]:
            self._final_counts(runs[name], deployment_id)
            self._last_ended(runs[name], deployment_id)
        for run in self._open_runs():
            name = groups.get(run.deployment_id, NO_DEPLOYMENT) if run.deployment_id else NO_DEPLOYMENT
            self._count_open(runs[name], run, now)
        return RunsSnapshot(
            deployments=sorted(runs.values(), key=lambda d: d.name),
            work_pools=self._work_pools(),
            file_outcomes=list(self._file_outcomes(now)),
        )

    def _deployments(self) -> dict[uuid.UUID, str]:
        deployments: list[Any] = []
        while True:
            page = self.client.read_deployments(limit=PAGE, offset=len(deployments))
            deployments += page
            if len(page) < PAGE:
                break
        flow_ids = list({d.flow_id for d in deployments})
        flows = {f.id: f.name for f in self.client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=flow_ids)))}
        return {d.id: f"{flows.get(d.flow_id, d.flow_id)}/{d.name}" for d in deployments}

    @staticmethod
    def _deployment_filter(deployment_id: uuid.UUID | None) -> dict[str, Any]:
        if deployment_id is None:
            return {"flow_run_filter": FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(is_null_=True))}
        return {"deployment_filter": DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))}

    def _final_counts(self, runs: DeploymentRuns, deployment_id: uuid.UUID | None) -> None:
        for state_type in FINAL_TYPES:
            where = self._deployment_filter(deployment_id)
            state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[state_type]))
            flow_run_filter = where.pop("flow_run_filter", FlowRunFilter())
            flow_run_filter.state = state
            count = self.client.count_flow_runs(flow_run_filter=flow_run_filter, **where)
            runs.by_state[(state_type.value, state_type.value.capitalize())] = count

    def _last_ended(self, runs: DeploymentRuns, deployment_id: uuid.UUID | None) -> None:
        for types, attribute in ((FINAL_TYPES, "last_duration"), ((StateType.COMPLETED,), "last_success")):
            where = self._deployment_filter(deployment_id)
            flow_run_filter = where.pop("flow_run_filter", FlowRunFilter())
            flow_run_filter.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types)))
            latest = self.client.read_flow_runs(
                flow_run_filter=flow_run_filter, sort=FlowRunSort.END_TIME_DESC, limit=1, **where
            )
            if latest and attribute == "last_duration":
                runs.last_duration = latest[0].total_run_time.total_seconds()
            elif latest:
                runs.last_success = _epoch(latest[0].end_time)

    def _open_runs(self) -> Iterator[FlowRun]:
        offset = 0
        state = FlowRunFilterState(type=FlowRunFilterStateType(any_=list(OPEN_TYPES)))
        while True:
            page = self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=state), sort=FlowRunSort.ID_DESC, limit=PAGE, offset=offset
            )
            yield from page
            if len(page) < PAGE:
                return
            offset += PAGE

    @staticmethod
    def _count_open(runs: DeploymentRuns, run: FlowRun, now: dt.datetime) -> None:
        if run.state is None:
            return
        name = run.state.name or run.state.type.value.capitalize()
        key = (run.state.type.value, name)
        runs.by_state[key] = runs.by_state.get(key, 0) + 1
        since = run.expected_start_time if WAITING.get(name) == "expected_start" else run.state.timestamp
        if name in WAITING and since:
            runs.oldest_waiting[name] = max(runs.oldest_waiting.get(name, 0.0), (now - since).total_seconds())
        if run.state.type == StateType.RUNNING and run.start_time:
            runs.oldest_running = max(runs.oldest_running, (now - run.start_time).total_seconds())

    def _work_pools(self) -> list[WorkPoolStatus]:
        pools = []
        for pool in self.client.read_work_pools(limit=PAGE):
            workers = self.client.read_workers_for_work_pool(pool.name, limit=PAGE)
            by_status: dict[str, int] = {"online": 0, "offline": 0}
            for worker in workers:
                status = str(worker.status.value).lower()
                by_status[status] = by_status.get(status, 0) + 1
            beats = [w.last_heartbeat_time for w in workers if w.last_heartbeat_time]
            ready = str(pool.status.value if pool.status else "").upper() == "READY"
            pools.append(WorkPoolStatus(pool.name, ready, by_status, _epoch(max(beats)) if beats else None))
        return sorted(pools, key=lambda p: p.name)

    def _file_outcomes(self, now: dt.datetime) -> Iterator[FileOutcome]:
        """The latest loaded/skipped/failed event of each file (the server keeps one per resource)."""
        event_filter = EventFilter(
            occurred=EventOccurredFilter(since=now - self.events_lookback, until=now + dt.timedelta(minutes=5)),
            event=EventNameFilter(name=[f"{EVENT_PREFIX}.{outcome}" for outcome in FILE_OUTCOMES]),
            resource=EventResourceFilter(id_prefix=[f"{EVENT_PREFIX}."], distinct=True),
        )
        page = self.client.read_events(filter=event_filter, limit=EVENTS_PAGE)
        while True:
            for event in page.events:
                outcome = _file_outcome(event)
                if outcome:
                    yield outcome
            if not page.next_page:
                return
            page = self.client.read_events_page(page.next_page)


def _file_outcome(event: Any) -> FileOutcome | None:
    resource = event.resource
    qualified, file = resource.get("ecommerce.table"), resource.get("ecommerce.file")
    status = event.event.removeprefix(f"{EVENT_PREFIX}.")
    if not qualified or not file or "." not in qualified or status not in FILE_OUTCOMES:
        return None
    schema, table = qualified.split(".", 1)
    return FileOutcome(schema, table, file, status, event.occurred.timestamp())
