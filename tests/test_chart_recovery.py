"""T3: the chart's self-healing settings reach the processes that act on them: the worker pod's
`recovery` container (re-runs crashed pipeline runs), the flow-run Jobs' env (re-runs of crashed file
runs) and how long a flow-run pod stays on a lost node; and a value out of range is refused."""

from __future__ import annotations

import pytest

from chart_render import base_job_template, env_from_files, find, render, render_error, restricted_violations
from flows.cli._app import _commands, build_parser

pytestmark = pytest.mark.chart

FULL = "etl-ecommerce-etl"


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_the_worker_pod_runs_the_recovery_loop_with_the_pipeline_bound():
    values = {"flowRun": {"pipelineRetries": 3, "retryDelaySeconds": 20},
              "worker": {"recoveryResources": {"requests": {"cpu": "20m", "memory": "100Mi"},
                                               "limits": {"cpu": "300m", "memory": "200Mi"}}}}
    docs = render(values)
    spec = find(docs, "Deployment", f"{FULL}-worker")["spec"]["template"]["spec"]
    assert restricted_violations(spec) == []
    containers = {c["name"]: c for c in spec["containers"]}
    assert set(containers) == {"worker", "recovery"}
    recovery = containers["recovery"]
    command, _ = env_from_files(spec, recovery)
    assert command[-2:] == ["ecommerce-etl", "recover"]
    assert build_parser(_commands()).parse_args(command[-1:]).command_name == "recover"  # the CLI has that command
    env = _env(recovery)
    assert (env["ETL_PIPELINE_RETRIES"], env["ETL_RETRY_DELAY_SECONDS"]) == ("3", "20")
    assert env["PREFECT_API_URL"] == _env(containers["worker"])["PREFECT_API_URL"]
    assert recovery["resources"] == values["worker"]["recoveryResources"]
    # alive while its loop passes: the probe reads the heartbeat file the loop touches
    probe = " ".join(recovery["livenessProbe"]["exec"]["command"])
    assert env["ETL_RECOVERY_HEARTBEAT_FILE"] in probe
    # it lists pods with the worker's service account (never re-running a run that still has one)
    assert spec["serviceAccountName"] == f"{FULL}-worker" and spec.get("automountServiceAccountToken", True)
    role = find(docs, "Role", f"{FULL}-worker")
    assert any("pods" in r["resources"] and "list" in r["verbs"] for r in role["rules"])


def test_flow_runs_get_the_file_bound_and_leave_a_lost_node_after_node_lost_seconds():
    template = base_job_template(render({"flowRun": {"fileRetries": 4, "nodeLostSeconds": 30}}))
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    env = _env(container)
    assert (env["ETL_FILE_RETRIES"], env["ETL_RETRY_DELAY_SECONDS"]) == ("4", "10")
    tolerations = template["variables"]["properties"]["tolerations"]["default"]
    assert {(t["key"], t["effect"], t["tolerationSeconds"]) for t in tolerations} == {
        ("node.kubernetes.io/not-ready", "NoExecute", 30),
        ("node.kubernetes.io/unreachable", "NoExecute", 30),
    }


@pytest.mark.parametrize(
    "values, where",
    [
        ({"flowRun": {"fileRetries": -1}}, "fileRetries"),
        ({"flowRun": {"pipelineRetries": 11}}, "pipelineRetries"),
        ({"flowRun": {"nodeLostSeconds": "1m"}}, "nodeLostSeconds"),
        ({"alerts": {"crashedMinutes": 0.1}}, "crashedMinutes"),
    ],
)
def test_out_of_range_values_are_refused_naming_them(values, where):
    assert where in render_error(values)
