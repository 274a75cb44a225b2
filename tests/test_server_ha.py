"""T2: the chart's highly available Prefect server as real processes: the environment of the rendered
API and services pods (prefect-redis backends), the rendered migrate program, two API processes
started at once (`--no-services`), one services process, and a real Redis-protocol server (Debian's
redis-server 7.0, as in the kind stand-in). A pipeline run sent to one API is seen, with its file
events, through the other: the events crossed Redis to the services process, which stored them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from chart_render import find, pod_spec, render
from flows.localserver import prefect_server_process
from helpers import CLI, free_port

pytestmark = pytest.mark.integration

FULL = "etl-ecommerce-etl"
REDIS = shutil.which("redis-server")


@contextlib.contextmanager
def redis_server(folder, password: str):
    if not REDIS:
        pytest.skip("no redis-server (Debian's redis-server package; .ci/run installs it)")
    port = free_port()
    conf = folder / "redis.conf"
    conf.write_text(f'port {port}\nbind 127.0.0.1\nrequirepass "{password}"\nsave ""\nappendonly no\ndir {folder}\n')
    proc = subprocess.Popen([REDIS, str(conf)], stdout=(folder / "redis.log").open("w"), stderr=subprocess.STDOUT)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


def rendered_env(deployment: str, redis_port: int, redis_password: str) -> dict[str, str]:
    """The plain env of a rendered HA pod, pointed at the local Redis; the password as the files would give it."""
    (container,) = pod_spec(find(render({"prefectServer": {"replicas": 2}}), "Deployment", deployment))["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for prefix in ("PREFECT_REDIS_MESSAGING", "PREFECT_REDIS_WORKER_CLEANUP_QUEUE"):
        assert env[f"{prefix}_HOST"] == f"{FULL}-redis"
        env.update(
            {f"{prefix}_HOST": "127.0.0.1", f"{prefix}_PORT": str(redis_port), f"{prefix}_PASSWORD": redis_password}
        )
    for name in ("PREFECT_UI_API_URL", "PREFECT_UI_URL", "PREFECT_SERVER_UI_STATIC_DIRECTORY", "PREFECT_HOME"):
        env.pop(name, None)
    return env


def test_two_api_processes_and_a_services_process_share_one_redis(postgres, tmp_path):
    redis_password = secrets.token_urlsafe(12)
    database = f"prefect_ha_{uuid.uuid4().hex[:8]}"
    postgres.run_sql(f'CREATE DATABASE "{database}"')
    base = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.server.url(database, driver="asyncpg"),
    }
    with redis_server(tmp_path, redis_password) as redis_port, contextlib.ExitStack() as stack:
        api_env = {**base, **rendered_env(f"{FULL}-prefect-server", redis_port, redis_password)}
        services_env = {**base, **rendered_env(f"{FULL}-prefect-services", redis_port, redis_password)}
        # the database set up once, by the chart's migrate program
        (init,) = [
            c
            for c in pod_spec(find(render({"prefectServer": {"replicas": 2}}), "Deployment", f"{FULL}-prefect-server"))[
                "initContainers"
            ]
            if c["name"] == "migrate"
        ]
        migrated = subprocess.run(
            [sys.executable, "-c", init["command"][6]],
            capture_output=True,
            text=True,
            env={**base, "PREFECT_HOME": str(tmp_path / "migrate")},
            timeout=600,
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        # two API processes at once, as a Deployment's replicas start, and the services apart
        ports = [free_port(), free_port()]
        services = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "services", "start"],
            env={**services_env, "PREFECT_HOME": str(tmp_path / "services")},
            stdout=(tmp_path / "services.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        stack.callback(lambda: (services.terminate(), services.wait(30)))
        with contextlib.ExitStack() as apis:
            urls = [
                apis.enter_context(
                    prefect_server_process(
                        {**api_env, "PREFECT_HOME": str(tmp_path / f"api{i}")},
                        tmp_path / f"api{i}.log",
                        port=port,
                        services=False,
                    )
                )
                for i, port in enumerate(ports)
            ]
            for i in range(2):
                assert "startup failed" not in (tmp_path / f"api{i}.log").read_text()
            client = {
                **os.environ,
                "PREFECT_API_URL": urls[0],
                "PREFECT_HOME": str(tmp_path / "client"),
                "DATABASE_URL": postgres.create_database("t_server_ha"),
                "ETL_DATA_DIR": str(tmp_path / "data"),
            }
            done = subprocess.run(
                [CLI, "run", "--source", "sample", "--rows-per-file", "200", "--json"],
                env=client,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            # through the other API: the run, and its five file events, stored by the services process
            runs = httpx.post(f"{urls[1]}/flow_runs/filter", json={"limit": 20}, timeout=30).json()
            assert any(r["name"].startswith("sample ") and r["state_type"] == "COMPLETED" for r in runs), runs
            event_filter = {"filter": {"event": {"name": ["ecommerce.file.loaded"]}}, "limit": 50}
            deadline = time.monotonic() + 90
            while (found := httpx.post(f"{urls[1]}/events/filter", json=event_filter, timeout=30).json())["total"] < 5:
                assert services.poll() is None, (tmp_path / "services.log").read_text()[-3000:]
                assert time.monotonic() < deadline, found
                time.sleep(2)
            assert found["total"] == 5
