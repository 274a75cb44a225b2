"""T3: the chart's bulk-load settings: PostgreSQL's bulkLoadTuning (off by default) and the loader's COPY
connections per file, sized from the PostgreSQL container's CPU limit."""

from __future__ import annotations

import pytest

from chart_render import base_job_template, by_kind, render, render_error

pytestmark = pytest.mark.chart
RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def postgres_container(values: dict | None = None) -> dict:
    (statefulset,) = by_kind(render(values), "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def flow_run_env(values: dict | None = None) -> dict[str, str | None]:
    template = base_job_template(render(values))
    (container,) = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_postgres_runs_with_its_defaults_unless_bulk_load_tuning_is_on():
    assert "args" not in postgres_container()
    tuned = postgres_container({"postgresql": {"bulkLoadTuning": {"enabled": True, "maxWalSize": "4GB"}}})
    # the official image's entrypoint hands arguments that start with "-" to postgres
    assert tuned["args"] == ["-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "max_wal_size=4GB"]


def test_bulk_load_tuning_is_refused_for_a_database_the_chart_does_not_run():
    error = render_error({
        "postgresql": {"enabled": False, "bulkLoadTuning": {"enabled": True, "maxWalSize": "2GB"}},
        "externalDatabase": {"host": "pg.example.internal", "existingSecret": "managed-db"},
    })
    assert "postgresql.bulkLoadTuning.enabled=true but postgresql.enabled=false" in error


@pytest.mark.parametrize("size", ["2 GB", "2G", "0GB", "two"])
def test_max_wal_size_must_be_a_postgres_size(size):
    assert "maxWalSize" in render_error({"postgresql": {"bulkLoadTuning": {"enabled": True, "maxWalSize": size}}})


@pytest.mark.parametrize(("cpu_limit", "segments"), [("1", "2"), ("2500m", "4"), (4, "5"), ("0.5", "2"), ("100m", "2")])
def test_copy_connections_follow_the_postgres_cpu_limit(cpu_limit, segments):
    values = {"postgresql": {"resources": {**RESOURCES, "limits": {"cpu": cpu_limit, "memory": "1Gi"}}}}
    assert flow_run_env(values)["ETL_COPY_PARALLELISM"] == segments


def test_copy_connections_set_explicitly_or_left_to_the_loader():
    assert flow_run_env({"flowRun": {"copyParallelism": 7}})["ETL_COPY_PARALLELISM"] == "7"
    external = flow_run_env({
        "postgresql": {"enabled": False},
        "externalDatabase": {"host": "pg.example.internal", "existingSecret": "managed-db"},
    })
    assert "ETL_COPY_PARALLELISM" not in external  # cores unknown: the loader's default
    unlimited = {"postgresql": {"resources": {**RESOURCES, "limits": {"cpu": None, "memory": "1Gi"}}}}
    assert "ETL_COPY_PARALLELISM" not in flow_run_env(unlimited)
