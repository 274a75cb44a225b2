"""Alerts: Prefect automations on the parent flow `ecommerce-etl`, registered by `ecommerce-etl deploy`.

    run failed        a flow run of `ecommerce-etl` entered Failed (a file failed, or a crash whose
                      re-runs are spent: flows/recovery.py)
    run crashed       a flow run of `ecommerce-etl` stayed Crashed for ETL_ALERT_CRASHED_MINUTES:
                      nothing re-ran it (the recovery container of the worker pod is not running)
    run not started   a flow run stayed Late (no worker polls its pool) or Pending/InfrastructurePending
                      (its pod never started) for ETL_ALERT_PENDING_MINUTES
    run too long      a flow run stayed Running for ETL_ALERT_RUNNING_MINUTES
    quarantine high   a file's quarantined share passed ETL_ALERT_QUARANTINE_RATIO (the flow
                      emits `ecommerce.file.quarantine-high`; triggers cannot compare payloads)

Only runs of the parent flow match the run triggers: a per-file child run (flow `load-file`)
that fails does not alert on its own, because the parent fails too and its message names the
files. A crash alone does not alert: a crashed run is re-run (flows/recovery.py), and only a run
that ends Failed, or stays Crashed, is reported. The action posts to a webhook through Prefect's
own `CustomWebhookNotificationBlock`,
with the URL kept in the block's secret values (the URL field only holds a placeholder).
Without a webhook the automations still exist, with no notification: their firings show in
the UI's event feed, and setting a webhook later only adds the action.

Registration is idempotent: one automation per name, updated in place; ours that are no
longer wanted (a trigger switched off, alerts disabled) are deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from flows.events import QUARANTINE_HIGH
from flows.names import PIPELINE_FLOW
from flows.settings import AlertSettings

TAG = "ecommerce-etl-alerts"  # marks the automations this module owns
BLOCK_NAME = "ecommerce-etl-alerts"
PREFIX = "ecommerce-etl: "

# Every state a run can leave Crashed for: a re-run (AwaitingRetry), Failed when re-runs are spent,
# or whatever a person does.
_LEFT_CRASHED = ("AwaitingRetry", "Scheduled", "Pending", "Running", "Completed", "Failed", "Cancelled", "Cancelling")

# Every state a run can leave Running for (heartbeats and log events are not among them).
_LEFT_RUNNING = (
    "Completed",
    "Failed",
    "Crashed",
    "Cancelled",
    "Cancelling",
    "Paused",
    "Suspended",
    "AwaitingRetry",
    "Scheduled",
)


@dataclass(frozen=True)
class AlertSpec:
    name: str
    description: str
    trigger: dict
    subject: str
    body: str


_RUN_LINK = "{{ flow_run|ui_url }}"
_RUN = "{{ flow.name }}/{{ flow_run.name }}{% if deployment %} (deployment {{ deployment.name }}){% endif %}"


def _parent_run_trigger(**trigger) -> dict:
    return {
        "type": "event",
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        # the flow of the run: child runs (flow load-file) never match
        "match_related": {"prefect.resource.role": "flow", "prefect.resource.name": PIPELINE_FLOW},
        "for_each": ["prefect.resource.id"],
        "threshold": 1,
        **trigger,
    }


def alert_specs(settings: AlertSettings) -> list[AlertSpec]:
    """The automations wanted for these settings (pure: the unit tests read it); 0 minutes: that one is off."""
    specs = [_run_failed(), _quarantine_high()]
    if settings.pending_minutes:
        specs.append(_run_not_started(settings.pending_minutes))
    if settings.crashed_minutes:
        specs.append(_run_crashed(settings.crashed_minutes))
    if settings.running_minutes:
        specs.append(_run_too_long(settings.running_minutes))
    return specs


def _run_failed() -> AlertSpec:
    return AlertSpec(
        name=f"{PREFIX}run failed",
        description=f"A flow run of {PIPELINE_FLOW} entered Failed (a crash only once its re-runs are spent).",
        trigger=_parent_run_trigger(expect=["prefect.flow-run.Failed"], posture="Reactive", within=0),
        subject="ecommerce-etl: flow run {{ flow_run.name }} {{ flow_run.state.name }}",
        body=(
            f"Flow run {_RUN} entered {{{{ flow_run.state.name }}}}.\n"
            "{{ flow_run.state.message|truncate(800) }}\n" + _RUN_LINK
        ),
    )


def _quarantine_high() -> AlertSpec:
    return AlertSpec(
        name=f"{PREFIX}quarantine high",
        description="A loaded file's quarantined share passed ETL_ALERT_QUARANTINE_RATIO.",
        trigger={
            "type": "event",
            "match": {"prefect.resource.id": "ecommerce.file.*"},
            "expect": [QUARANTINE_HIGH],
            "for_each": ["prefect.resource.id"],
            "posture": "Reactive",
            "threshold": 1,
            "within": 0,
        },
        subject="ecommerce-etl: {{ event.resource.name }}: {{ event.payload.rows_quarantined }} of "
        "{{ event.payload.rows_read }} rows quarantined",
        body=(
            "File {{ event.resource.name }} ({{ event.resource['ecommerce.table'] }}): "
            "{{ event.payload.rows_quarantined }} of {{ event.payload.rows_read }} rows quarantined "
            "(share {{ event.payload.quarantine_share }}, alert above "
            "{{ event.payload.quarantine_alert_ratio }}), in flow run {{ flow_run.name }}.\n"
            "The rows, their line numbers and reasons are in the table's _quarantine table.\n" + _RUN_LINK
        ),
    )


def _run_not_started(minutes: float) -> AlertSpec:
    return AlertSpec(
        name=f"{PREFIX}run not started",
        description=(
            f"A flow run of {PIPELINE_FLOW} stayed Late (no worker polls its pool) or Pending "
            f"(its pod did not start) for {minutes:g} minutes."
        ),
        # prefect-kubernetes' observer moves a run whose pod stays Pending to InfrastructurePending
        trigger=_parent_run_trigger(
            after=["prefect.flow-run.Late", "prefect.flow-run.Pending", "prefect.flow-run.InfrastructurePending"],
            expect=["prefect.flow-run.*"],
            posture="Proactive",
            within=minutes * 60,
        ),
        subject=(
            f"ecommerce-etl: flow run {{{{ flow_run.name }}}} still {{{{ flow_run.state.name }}}} "
            f"after {minutes:g} minutes"
        ),
        body=(
            f"Flow run {_RUN} is {{{{ flow_run.state.name }}}} and has not started for {minutes:g} minutes.\n"
            "Late: no worker is polling work pool {{ flow_run.work_pool_name }}. "
            "Pending: the worker created its Job but the pod did not start (kubectl get pods -l "
            "prefect.io/flow-run-id={{ flow_run.id }}; the prefect.kubernetes.pod events name the reason).\n"
            + _RUN_LINK
        ),
    )


def _run_crashed(minutes: float) -> AlertSpec:
    return AlertSpec(
        name=f"{PREFIX}run crashed",
        description=(
            f"A flow run of {PIPELINE_FLOW} stayed Crashed for {minutes:g} minutes: "
            "nothing re-ran it or marked it Failed."
        ),
        trigger=_parent_run_trigger(
            after=["prefect.flow-run.Crashed"],
            expect=[f"prefect.flow-run.{s}" for s in _LEFT_CRASHED],
            posture="Proactive",
            within=minutes * 60,
        ),
        subject=f"ecommerce-etl: flow run {{{{ flow_run.name }}}} Crashed and not re-run after {minutes:g} minutes",
        body=(
            f"Flow run {_RUN} crashed and has not been re-run for {minutes:g} minutes.\n"
            "{{ flow_run.state.message|truncate(800) }}\n"
            "The recovery container of the worker pod re-runs crashed runs (kubectl logs "
            "deploy/<release>-ecommerce-etl-worker -c recovery); run it again from the UI, or "
            "`prefect flow-run retry`.\n" + _RUN_LINK
        ),
    )


def _run_too_long(minutes: float) -> AlertSpec:
    return AlertSpec(
        name=f"{PREFIX}run too long",
        description=f"A flow run of {PIPELINE_FLOW} stayed Running for {minutes:g} minutes.",
        trigger=_parent_run_trigger(
            after=["prefect.flow-run.Running"],
            expect=[f"prefect.flow-run.{s}" for s in _LEFT_RUNNING],
            posture="Proactive",
            within=minutes * 60,
        ),
        subject=f"ecommerce-etl: flow run {{{{ flow_run.name }}}} still Running after {minutes:g} minutes",
        body=f"Flow run {_RUN} has been Running for {minutes:g} minutes.\n" + _RUN_LINK,
    )


def automation(spec: AlertSpec, block_id: UUID | None):
    from prefect.events.actions import DoNothing, SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger

    trigger = EventTrigger.model_validate({**spec.trigger, "within": timedelta(seconds=spec.trigger["within"])})
    action = (
        SendNotification(block_document_id=block_id, subject=spec.subject, body=spec.body) if block_id else DoNothing()
    )
    return AutomationCore(
        name=spec.name, description=spec.description, enabled=True, tags=[TAG], trigger=trigger, actions=[action]
    )


async def _save_webhook_block(client, url: str) -> UUID:
    """Prefect's CustomWebhookNotificationBlock: the URL only as a secret value, behind a
    placeholder; the JSON body carries subject and text (Slack-compatible `text`)."""
    from prefect.blocks.core import SecretDict
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="ecommerce-etl alerts",
        url="{{webhook_url}}",
        json_data={"subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}\n{{body}}"},
        secrets=SecretDict({"webhook_url": url}),
    )
    return await block.asave(BLOCK_NAME, overwrite=True, client=client)


async def _delete_webhook_block(client) -> None:
    from prefect.exceptions import ObjectNotFound

    try:
        document = await client.read_block_document_by_name(BLOCK_NAME, "custom-webhook")
    except ObjectNotFound:
        return
    await client.delete_block_document(document.id)


async def register_alerts(client, settings: AlertSettings) -> dict:
    """Create or update our automations (and the webhook block) to match settings; remove the rest."""
    wanted = alert_specs(settings) if settings.active else []
    block_id = None
    if settings.active and settings.webhook:
        block_id = await _save_webhook_block(client, settings.url)
    else:
        await _delete_webhook_block(client)
    actions: dict[str, str] = {}
    for spec in wanted:
        new = automation(spec, block_id)
        same_name = await client.read_automations_by_name(spec.name)
        if same_name:
            await client.update_automation(same_name[0].id, new)
            actions[spec.name] = "updated"
            for duplicate in same_name[1:]:  # left by an interrupted earlier run
                await client.delete_automation(duplicate.id)
        else:
            await client.create_automation(new)
            actions[spec.name] = "created"
    names = {spec.name for spec in wanted}
    for existing in await client.read_automations():
        if TAG in (existing.tags or []) and existing.name not in names:
            await client.delete_automation(existing.id)
            actions[existing.name] = "deleted"
    return {"alerts": "webhook" if block_id else ("no notification" if wanted else "off"), "automations": actions}
