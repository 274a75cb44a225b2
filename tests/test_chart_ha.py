"""T3 (and T2 for the migration lock): the optional highly available Prefect server. With
prefectServer.replicas > 1 the chart renders API pods without services, a services Deployment,
Redis messaging through prefect-redis, one migration at a time, RollingUpdate, PodDisruptionBudgets
and topology spread; with one replica nothing of it."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid

import kubernetes_validate
import pytest

from chart_render import (
    by_kind,
    env_from_files,
    find,
    generated_secrets,
    pod_spec,
    render,
    render_error,
    restricted_violations,
    secret_files,
    selects,
    strip_source,
)
from checkov_scan import assert_value_sets_clean

pytestmark = pytest.mark.chart

FULL = "etl-ecommerce-etl"
HA = {"prefectServer": {"replicas": 2}}
VALUE_SETS = {
    "ha": HA,
    "ha-everything": {
        "prefectServer": {
            "replicas": 3,
            "basicAuth": {"enabled": True},
            "ha": {
                "minAvailable": 2,
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "prefect-server"}},
                    }
                ],
            },
            "redis": {"image": {"digest": "sha256:" + "e" * 64, "pullPolicy": "Always"}},
        },
        "worker": {"replicas": 2},
        "metrics": {"enabled": True, "serviceMonitor": {"force": True}, "prometheusRule": {"force": True}},
    },
    "ha-external-redis": {
        "prefectServer": {
            "replicas": 2,
            "redis": {"host": "redis.shared.svc", "port": 6380, "db": 3, "existingSecret": "shared-redis"},
        }
    },
}


def server(docs):
    return find(docs, "Deployment", f"{FULL}-prefect-server")


def test_one_replica_renders_nothing_of_ha():
    docs = render()
    spec = pod_spec(server(docs))
    assert server(docs)["spec"]["replicas"] == 1 and server(docs)["spec"]["strategy"] == {"type": "Recreate"}
    assert [c["name"] for c in spec["initContainers"]] == ["wait-for-postgresql"]
    command, _ = env_from_files(spec, spec["containers"][0])
    assert "--no-services" not in command
    assert spec["containers"][0]["image"].startswith("prefecthq/prefect:")
    assert "topologySpreadConstraints" not in spec
    assert "lifecycle" not in spec["containers"][0] and "terminationGracePeriodSeconds" not in spec
    names = {f"{d['kind']}/{d['metadata']['name']}" for d in docs}
    assert not {n for n in names if "services" in n or "redis" in n or n.startswith("PodDisruptionBudget/")}
    assert not any("PREFECT_REDIS" in e["name"] or "MESSAGING" in e["name"] for e in spec["containers"][0]["env"])


def test_ha_api_pods():
    docs = render(HA)
    deployment = server(docs)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert container["image"] == "ecommerce-etl:0.3.0", "the flow image: it has prefect-redis"
    command, from_files = env_from_files(spec, container)
    assert command == ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200", "--no-services"]
    assert from_files["PREFECT_REDIS_MESSAGING_PASSWORD"] == (f"{FULL}-redis", "redis-password")
    assert from_files["PREFECT_REDIS_WORKER_CLEANUP_QUEUE_PASSWORD"] == (f"{FULL}-redis", "redis-password")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false"
    assert env["PREFECT_REDIS_MESSAGING_HOST"] == f"{FULL}-redis"
    assert [c["name"] for c in spec["initContainers"]] == ["wait-for-postgresql", "migrate"]
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert selects(spread["labelSelector"], deployment["spec"]["template"]["metadata"]["labels"])
    # the API's probes stay; the Service still selects only the API pods
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/ready"
    # a stopping API pod answers until the Service no longer sends it requests, within its grace period
    assert container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "15"]}}}
    assert spec["terminationGracePeriodSeconds"] == 45
    no_drain = pod_spec(server(render({"prefectServer": {"replicas": 2, "ha": {"drainSeconds": 0}}})))
    assert "lifecycle" not in no_drain["containers"][0] and no_drain["terminationGracePeriodSeconds"] == 30
    services = find(docs, "Deployment", f"{FULL}-prefect-services")
    api_service = find(docs, "Service", f"{FULL}-prefect-server")
    assert not selects(
        {"matchLabels": api_service["spec"]["selector"]}, services["spec"]["template"]["metadata"]["labels"]
    )


def test_ha_services_pod_runs_every_service_once():
    docs = render(HA)
    deployment = find(docs, "Deployment", f"{FULL}-prefect-services")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    command, from_files = env_from_files(spec, container)
    assert command == ["prefect", "server", "services", "start"]
    assert from_files["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == (f"{FULL}-db", "prefect-connection-url")
    assert "PREFECT_REDIS_MESSAGING_PASSWORD" in from_files
    api_env = {e["name"]: e.get("value") for e in pod_spec(server(docs))["containers"][0]["env"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    shared = {
        k: v
        for k, v in api_env.items()
        if k.startswith(
            (
                "PREFECT_REDIS",
                "PREFECT_MESSAGING",
                "PREFECT_SERVER_EVENTS",
                "PREFECT_SERVER_CONCURRENCY",
                "PREFECT_SERVER_WORKER",
            )
        )
    }
    assert len(shared) >= 11 and all(env[k] == v for k, v in shared.items()), "the same backends as the API"
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] == api_env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"]
    assert [c["name"] for c in spec["initContainers"]] == ["wait-for-postgresql", "migrate"]


def test_pod_disruption_budgets_only_with_more_than_one_replica():
    assert not by_kind(render({"worker": {"replicas": 1}}), "PodDisruptionBudget")
    docs = render({"prefectServer": {"replicas": 3, "ha": {"minAvailable": 2}}, "worker": {"replicas": 2}})
    budgets = {p["metadata"]["name"]: p for p in by_kind(docs, "PodDisruptionBudget")}
    assert set(budgets) == {f"{FULL}-prefect-server", f"{FULL}-worker"}
    assert budgets[f"{FULL}-prefect-server"]["spec"]["minAvailable"] == 2
    assert budgets[f"{FULL}-worker"]["spec"]["maxUnavailable"] == 1
    for name, budget in budgets.items():
        pods = [d for d in docs if d["kind"] == "Deployment"]
        chosen = [
            d["metadata"]["name"]
            for d in pods
            if selects(budget["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert chosen == [name], (name, chosen)
    only_worker = render({"worker": {"replicas": 2}})
    assert [p["metadata"]["name"] for p in by_kind(only_worker, "PodDisruptionBudget")] == [f"{FULL}-worker"]


def test_in_release_redis_is_restricted_and_gets_a_generated_password():
    docs = render(HA)
    redis = find(docs, "Deployment", f"{FULL}-redis")
    spec = pod_spec(redis)
    assert restricted_violations(spec) == [] and spec["securityContext"]["runAsUser"] == 10001
    (container,) = spec["containers"]
    assert container["image"] == "valkey/valkey:8.1-trixie"
    assert secret_files(spec, container) == {
        "/etc/ecommerce-etl/secrets/redis/redis-password": (f"{FULL}-redis", "redis-password")
    }
    assert "exec valkey-server /tmp/redis.conf" in container["command"][2]
    assert find(docs, "Service", f"{FULL}-redis")["spec"]["ports"][0]["port"] == 6379
    secrets = generated_secrets(docs)
    assert len(secrets[f"{FULL}-redis/redis-password"]) == 32


def test_external_redis_replaces_the_in_release_one():
    docs = render(VALUE_SETS["ha-external-redis"])
    assert not [d for d in docs if d["metadata"]["name"] == f"{FULL}-redis"]
    spec = pod_spec(server(docs))
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert (
        env["PREFECT_REDIS_MESSAGING_HOST"],
        env["PREFECT_REDIS_MESSAGING_PORT"],
        env["PREFECT_REDIS_MESSAGING_DB"],
    ) == ("redis.shared.svc", "6380", "3")
    _, from_files = env_from_files(spec, spec["containers"][0])
    assert from_files["PREFECT_REDIS_MESSAGING_PASSWORD"] == ("shared-redis", "redis-password")
    assert f"{FULL}-redis/redis-password" not in generated_secrets(docs)
    no_password = render({"prefectServer": {"replicas": 2, "redis": {"host": "redis.shared.svc"}}})
    _, from_files = env_from_files(pod_spec(server(no_password)), pod_spec(server(no_password))["containers"][0])
    assert not [k for k in from_files if "REDIS" in k]


VALIDATION = {
    "redis-without-ha": (
        {"prefectServer": {"redis": {"host": "r"}}},
        "prefectServer.redis is set but prefectServer.replicas is 1",
    ),
    "budget-blocks-drains": (
        {"prefectServer": {"replicas": 2, "ha": {"minAvailable": 2}}},
        "prefectServer.ha.minAvailable=2",
    ),
    "replicas-zero": ({"prefectServer": {"replicas": 0}}, "/prefectServer/replicas"),
    "drain-negative": ({"prefectServer": {"replicas": 2, "ha": {"drainSeconds": -1}}}, "/prefectServer/ha/drainSeconds"),
}


@pytest.mark.parametrize("case", list(VALIDATION))
def test_broken_ha_values_are_refused_naming_the_setting(case):
    values, message = VALIDATION[case]
    assert message in render_error(values)


# --- every HA object: Kubernetes schemas, Pod Security, NetworkPolicies, checkov -----------------
@pytest.mark.parametrize("values_name", list(VALUE_SETS))
@pytest.mark.parametrize("kube_version", ["1.31", "1.34"])
def test_ha_objects_validate_against_kubernetes_schemas(values_name, kube_version):
    for doc in render(VALUE_SETS[values_name]):
        if doc["kind"] not in ("ServiceMonitor", "PrometheusRule"):
            kubernetes_validate.validate(strip_source(doc), kube_version, strict=True)


@pytest.mark.parametrize("values_name", list(VALUE_SETS))
def test_ha_pods_are_restricted_with_resources(values_name):
    for doc in render(VALUE_SETS[values_name]):
        spec = pod_spec(doc)
        if spec is None:
            continue
        assert restricted_violations(spec) == [], doc["metadata"]["name"]
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            assert c["resources"]["limits"]["memory"], (doc["metadata"]["name"], c["name"])


def _labels(docs, component):
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == component:
            return d["spec"]["template"]["metadata"]["labels"]
    raise AssertionError(component)


def _admits(docs, target, source, port) -> bool:
    policies = [p for p in by_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], target)]
    return not policies or any(
        (not rule.get("ports") or port in [p["port"] for p in rule["ports"]])
        and any(
            "namespaceSelector" not in peer and selects(peer.get("podSelector") or {}, source)
            for peer in rule.get("from") or [{}]
        )
        for p in policies
        for rule in p["spec"].get("ingress") or []
    )


def test_network_policies_admit_only_the_server_to_redis_and_the_services_to_postgresql():
    docs = render(HA)
    redis, api, services, worker, pg = (
        _labels(docs, c) for c in ("redis", "prefect-server", "prefect-services", "worker", "pgadmin")
    )
    postgres = find(docs, "StatefulSet", f"{FULL}-postgresql")["spec"]["template"]["metadata"]["labels"]
    assert _admits(docs, redis, api, 6379) and _admits(docs, redis, services, 6379)
    assert not _admits(docs, redis, worker, 6379) and not _admits(docs, redis, pg, 6379)
    assert not _admits(docs, redis, {"app": "stranger"}, 6379)
    assert _admits(docs, postgres, services, 5432) and _admits(docs, postgres, api, 5432)
    assert not _admits(docs, postgres, redis, 5432)


def test_checkov_reports_no_failed_check_on_the_ha_value_sets(tmp_path):
    for name, report in assert_value_sets_clean(VALUE_SETS, tmp_path).items():
        assert f"Deployment.data.{FULL}-prefect-services" in report["resources"], name


# --- the names are Prefect's and prefect-redis' own settings ----------------------------------------
def test_the_rendered_ha_env_configures_prefect_and_prefect_redis(tmp_path):
    """The env of the rendered API pod, read by the real Prefect 3.9 and prefect-redis 0.3.0 settings
    classes in a fresh process: every backend points at prefect-redis, both Redis clients at the host."""
    docs = render(VALUE_SETS["ha-external-redis"])
    spec = pod_spec(server(docs))
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"] if "value" in e}
    env.update(
        {
            "PREFECT_REDIS_MESSAGING_PASSWORD": "pw1",
            "PREFECT_REDIS_WORKER_CLEANUP_QUEUE_PASSWORD": "pw1",
            "PREFECT_HOME": str(tmp_path),
            "PATH": os.environ["PATH"],
        }
    )
    program = """
import json
from prefect.settings import get_current_settings
from prefect_redis.client import RedisMessagingSettings
from prefect_redis.cleanup_queue import RedisWorkerCleanupQueueSettings
s = get_current_settings().server
m, c = RedisMessagingSettings(), RedisWorkerCleanupQueueSettings()
print(json.dumps({
    "broker": s.events.messaging_broker, "cache": s.events.messaging_cache, "ordering": s.events.causal_ordering,
    "leases": s.concurrency.lease_storage, "cleanup": s.worker_channel.cleanup_queue_storage,
    "migrate": s.database.migrate_on_start, "blocks": s.register_blocks_on_start, "metrics": s.metrics_enabled,
    "messaging": [m.host, m.port, m.db, m.password], "cleanup_redis": [c.host, c.port, c.db, c.password]}))
"""
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["broker"] == got["cache"] == "prefect_redis.messaging"
    assert (got["ordering"], got["leases"], got["cleanup"]) == (
        "prefect_redis.ordering",
        "prefect_redis.lease_storage",
        "prefect_redis.cleanup_queue",
    )
    assert got["migrate"] is False and got["blocks"] is False, "the migrate initContainer did both, once"
    assert got["messaging"] == got["cleanup_redis"] == ["redis.shared.svc", 6380, 3, "pw1"]


def test_migrate_init_containers_started_together_migrate_one_at_a_time(postgres, tmp_path):
    """The chart's migrate program, run three times at once against an empty database as the API
    and services pods would: each holds the advisory lock in turn (no two upgrades overlap), all
    succeed, and the schema is Prefect's head revision."""
    database = f"prefect_migrate_{uuid.uuid4().hex[:8]}"
    postgres.run_sql(f'CREATE DATABASE "{database}"')
    (container,) = [c for c in pod_spec(server(render(HA)))["initContainers"] if c["name"] == "migrate"]
    command = container["command"]
    assert command[4:6] == ["python", "-c"]
    program = command[6]
    env = {
        **os.environ,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.server.url(database, driver="asyncpg"),
        "PREFECT_HOME": str(tmp_path / "home"),
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    # the program, with its upgrade call timed: when did each process hold the lock and upgrade?
    wrapper = """
import subprocess, sys, time
real = subprocess.call
def timed(*args, **kwargs):
    began = time.time()
    code = real(*args, **kwargs)
    print("upgrade", began, time.time(), flush=True)
    return code
subprocess.call = timed
exec(compile(sys.argv[1], "migrate", "exec"))
"""
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", wrapper, program],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    spans = sorted(
        tuple(map(float, line.split()[1:])) for o in outputs for line in o.splitlines() if line.startswith("upgrade ")
    )
    assert len(spans) == 3, outputs
    for (_, first_end), (second_start, _) in itertools.pairwise(spans):
        assert second_start >= first_end, f"two upgrades overlapped: {spans}"
    print(
        f"three migrate programs: {time.monotonic() - started:.1f} s; upgrades {[round(e - b, 1) for b, e in spans]} s",
        file=sys.stderr,
    )
    head = postgres.run_sql("select version_num from alembic_version", database).split()
    assert head, "the database was migrated"
    # ...and the block types the API processes no longer register themselves are there
    assert int(postgres.run_sql("select count(*) from block_type", database)) > 10
