"""Prefect events the load emits, one per file: what users build their own automations on.

    ecommerce.file.loaded | ecommerce.file.skipped | ecommerce.file.failed
    ecommerce.file.quarantine-high   (the quarantined share passed ETL_ALERT_QUARANTINE_RATIO)

The resource is the file in its table. The pipeline run emits them (a `load-file` run only when it
runs on its own), so Prefect's events worker relates that flow run, the `ecommerce-etl` flow and
the deployment from the run context; the `load-file` run that did the work is related as
`load-file-run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.events import emit_event

if TYPE_CHECKING:
    from flows.load import FileResult

EVENT_PREFIX = "ecommerce.file"
QUARANTINE_HIGH = f"{EVENT_PREFIX}.quarantine-high"
LOAD_FILE_RUN_ROLE = "load-file-run"
PAYLOAD_KEYS = ("status", "rows_read", "rows_loaded", "rows_quarantined", "rows_skipped", "seconds", "error")


def file_resource(schema: str, table: str, file: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"{EVENT_PREFIX}.{schema}.{table}.{file}",
        "prefect.resource.name": file,
        "ecommerce.table": f"{schema}.{table}",
        "ecommerce.file": file,
    }


def quarantine_share(result: FileResult) -> float:
    return result.rows_quarantined / result.rows_read if result.rows_read else 0.0


def file_event_names(result: FileResult, quarantine_alert_ratio: float | None) -> list[str]:
    """The events one file's result stands for (pure, so the rule is testable without a server)."""
    names = [f"{EVENT_PREFIX}.{result.status}"]
    if (
        quarantine_alert_ratio is not None
        and result.status == "loaded"
        and quarantine_share(result) > quarantine_alert_ratio
    ):
        names.append(QUARANTINE_HIGH)
    return names


def load_file_run(flow_run_id: str) -> dict[str, str]:
    """The `load-file` flow run that loaded the file, as a related resource of its event."""
    return {"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": LOAD_FILE_RUN_ROLE}


def emit_file_events(
    result: FileResult,
    schema: str,
    table: str,
    quarantine_alert_ratio: float | None,
    related: list[dict[str, str]] | None = None,
) -> list[str]:
    """Emitted in the run that reports the file (the pipeline run, or a `load-file` run on its own),
    whose flow run, flow and deployment Prefect relates from the run context."""
    payload = {k: getattr(result, k) for k in PAYLOAD_KEYS}
    payload["quarantine_share"] = round(quarantine_share(result), 6)
    if quarantine_alert_ratio is not None:
        payload["quarantine_alert_ratio"] = quarantine_alert_ratio
    names = file_event_names(result, quarantine_alert_ratio)
    for name in names:
        emit_event(name, resource=file_resource(schema, table, result.file), payload=payload, related=related)
    return names
