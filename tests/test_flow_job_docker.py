"""T4: a flow run executes from the flow image exactly as the worker's Job spec says.

Everything up to the Kubernetes API is real: the image is built from the Dockerfile, the
chart is rendered, its own initdb script creates the two databases and roles in a real
PostgreSQL, a real Prefect server runs with the chart's connection URL, the chart's hook Job
registers the work pool and deployments, prefect-kubernetes builds the flow run's Job, and
that Job's containers (image, command/args, env, securityContext, volumes, limits) run
under `docker run --network host`. Service names are pointed at loopback; that and the
kubelet itself are what only T5 (kind) covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import chart_render as cr
from flows.localdb import postgres_bin_dir
from helpers import BIN, REPO, free_port, overlap, started_postgres, wait_for_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]  # docker: flow_image

RELEASE, NAMESPACE = "etl", "ecommerce"
# a tag per session: two checkouts testing at once on one engine never run each other's image
IMAGE_REPO, IMAGE_TAG = "ecommerce-etl", f"t4-{secrets.token_hex(4)}"
IMAGE = f"{IMAGE_REPO}:{IMAGE_TAG}"
SAMPLE_ROWS = 500  # per monthly file; the deployment's parameter, via the chart's hook
LABEL = f"ecommerce-etl-t4={secrets.token_hex(4)}"  # every container this module starts


def _fullname(component: str) -> str:
    return f"{RELEASE}-ecommerce-etl-{component}"


# --- Docker -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow_image(docker_engine, tmp_path_factory) -> str:
    log = tmp_path_factory.mktemp("build") / "build.log"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run([str(REPO / "scripts" / "build-image.sh"), IMAGE], stdout=out,
                              stderr=subprocess.STDOUT, timeout=1800, cwd=REPO)
    assert proc.returncode == 0, f"image build failed:\n{log.read_text()[-6000:]}"
    print(f"\nT4 image build: {time.monotonic() - started:.1f}s", file=sys.stderr)
    yield IMAGE
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}"],
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    subprocess.run(["docker", "rmi", IMAGE], capture_output=True)  # the layers stay cached


# --- Kubernetes objects -> docker run -----------------------------------------------------------


def _cpus(q) -> float:
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _bytes(q) -> int:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    assert m and (m.group(2) in _UNITS or not m.group(2)), f"unsupported quantity {q!r}"
    return int(float(m.group(1)) * _UNITS.get(m.group(2), 1))


class Loopback:
    """Rewrites in-cluster Service addresses (`svc`, `svc:port`, `svc.ns.svc...:port`) to the
    processes this test runs on 127.0.0.1."""

    def __init__(self, services: dict[str, tuple[int, int]]):
        self.services = services  # service name -> (service port, local port)

    def __call__(self, text: str) -> str:
        for svc, (port, local) in self.services.items():
            for host in (f"{svc}.{NAMESPACE}.svc.cluster.local", f"{svc}.{NAMESPACE}.svc",
                         f"{svc}.{NAMESPACE}", svc):
                text = re.sub(rf"(?<![\w.-]){re.escape(host)}:{port}(?![\d])", f"127.0.0.1:{local}", text)
            if text == svc:
                text = "127.0.0.1"
        return text

    def env(self, env: dict[str, str]) -> dict[str, str]:
        out = {k: self(v) for k, v in env.items()}
        # libpq takes host and port apart: PGPORT follows PGHOST's service.
        for svc, (port, local) in self.services.items():
            if env.get("PGHOST") == svc and env.get("PGPORT", str(port)) == str(port):
                out["PGPORT"] = str(local)
        return out


class Rendered:
    def __init__(self, docs: list[dict]):
        self.docs = docs
        # The Secrets as the chart's pre-install hook creates them (its program, run against a
        # Kubernetes API stand-in): the chart itself renders no password.
        self.secrets = cr.generated_secrets(docs, namespace=NAMESPACE)
        self.configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in cr.by_kind(docs, "ConfigMap")}

    def env(self, container: dict) -> dict[str, str]:
        """The container's env with secretKeyRef/configMapKeyRef resolved as the kubelet would."""
        out: dict[str, str] = {}
        for e in container.get("env") or []:
            if "value" in e or "valueFrom" not in e:
                out[e["name"]] = "" if e.get("value") is None else str(e["value"])
                continue
            src = e["valueFrom"]
            if "secretKeyRef" in src:
                ref, table = src["secretKeyRef"], self.secrets
                key = f"{ref['name']}/{ref['key']}"
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                table = {f"{n}/{k}": v for n, data in self.configmaps.items() for k, v in data.items()}
                key = f"{ref['name']}/{ref['key']}"
            elif src.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                out[e["name"]] = NAMESPACE
                continue
            else:
                raise AssertionError(f"env {e['name']}: unsupported valueFrom {src}")
            if key not in table:
                assert ref.get("optional"), f"env {e['name']}: {key} is not rendered by the chart"
                continue
            out[e["name"]] = table[key]
        return out


def run_pod(pod: dict, rendered: Rendered, loopback: Loopback, workdir: Path, name: str,
            timeout: float = 900) -> list[dict]:
    """Run the pod's init containers, then its containers, one after another (a Job with
    restartPolicy Never); returns [{name, rc, logs, inspect}] and stops at the first failure."""
    psc = pod.get("securityContext") or {}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    results = []
    for c in [*(pod.get("initContainers") or []), *pod["containers"]]:
        csc = {**psc, **(c.get("securityContext") or {})}
        uid, gid = csc.get("runAsUser"), csc.get("runAsGroup")
        args = ["docker", "run", "--name", f"{name}-{c['name']}-{secrets.token_hex(3)}",
                "--label", LABEL, "--network", "host"]
        if uid is not None:
            args += ["--user", f"{uid}:{gid if gid is not None else uid}"]
        if psc.get("fsGroup") is not None:
            args += ["--group-add", str(psc["fsGroup"])]
        if csc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        caps = csc.get("capabilities") or {}
        args += [f"--cap-drop={x}" for x in caps.get("drop", [])]
        args += [f"--cap-add={x}" for x in caps.get("add", [])]
        limits = (c.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            args += ["--memory", str(_bytes(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", f"{min(_cpus(limits['cpu']), os.cpu_count() or 1):g}"]
        for m in c.get("volumeMounts") or []:
            vol = volumes[m["name"]]
            if "emptyDir" in vol:
                size = _bytes(vol["emptyDir"].get("sizeLimit", "256Mi"))
                args += ["--tmpfs", f"{m['mountPath']}:rw,exec,nosuid,nodev,size={size},mode=1777"]
            elif "secret" in vol or "projected" in vol:
                src = workdir / f"secret-{c['name']}-{m['name']}"
                src.mkdir(exist_ok=True)
                src.chmod(0o755)
                for path, (secret, key) in cr.secret_files(pod, {"volumeMounts": [m]}).items():
                    if f"{secret}/{key}" not in rendered.secrets:
                        assert vol.get("secret", {}).get("optional"), f"{path}: {secret}/{key} is not in the release"
                        continue
                    target = src / path.removeprefix(m["mountPath"] + "/")
                    target.write_text(rendered.secrets[f"{secret}/{key}"])
                    target.chmod(0o444)  # the kubelet gives the pod's fsGroup read access
                args += ["-v", f"{src}:{m['mountPath']}:ro"]
            elif "configMap" in vol:
                src = workdir / f"cm-{vol['configMap']['name']}"
                src.mkdir(exist_ok=True)
                src.chmod(0o755)
                for key, text in rendered.configmaps[vol["configMap"]["name"]].items():
                    (src / key).write_text(text)
                    (src / key).chmod(0o644)
                args += ["-v", f"{src}:{m['mountPath']}:ro"]
            else:
                raise AssertionError(f"volume {m['name']}: unsupported source {vol}")
        env = loopback.env(rendered.env(c))
        assert all("\n" not in v for v in env.values()), "multi-line env values cannot use --env-file"
        env_file = workdir / f"{c['name']}.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        env_file.chmod(0o600)
        args += ["--env-file", str(env_file)]
        if c.get("workingDir"):
            args += ["-w", c["workingDir"]]
        command = [loopback(x) for x in c.get("command") or []]
        cargs = [loopback(x) for x in c.get("args") or []]
        if command:
            args += ["--entrypoint", command[0], c["image"], *command[1:], *cargs]
        else:
            args += [c["image"], *cargs]
        cname = args[args.index("--name") + 1]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        inspect = json.loads(subprocess.run(["docker", "inspect", cname], capture_output=True,
                                            text=True).stdout or "[{}]")[0]
        results.append({"name": c["name"], "rc": proc.returncode, "logs": proc.stdout + proc.stderr,
                        "inspect": inspect, "env": env})
        if proc.returncode != 0:
            break
    return results


def _tail(results: list[dict], n: int = 6000) -> str:
    return "\n".join(f"--- {r['name']} (exit {r['rc']}) ---\n{r['logs'][-n:]}" for r in results)


# --- the release's back ends on loopback ---------------------------------------------------------


@pytest.fixture(scope="module")
def release(flow_image, tmp_path_factory):
    """The chart rendered for the test image, its Postgres (initialised by the chart's own
    script) and its Prefect server (with the chart's connection URL), both on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        yield from _release(stack, tmp_path_factory)


def _release(stack: contextlib.ExitStack, tmp_path_factory):
    work = tmp_path_factory.mktemp("t4")
    values = {"image": {"repository": IMAGE_REPO, "tag": IMAGE_TAG, "pullPolicy": "Never"},
              "deployments": {"sampleRows": SAMPLE_ROWS},
              # a file run held back by the load-file concurrency limit is offered again after 2 s, not 30
              "prefectServer": {"extraEnv": [
                  {"name": "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS", "value": "2"}]}}
    rendered = Rendered(cr.render(values, RELEASE, NAMESPACE))
    pg_svc, server_svc = _fullname("postgresql"), _fullname("prefect-server")

    db_secret = _fullname("db")
    own_pg = stack.enter_context(started_postgres("t4", rendered.secrets[f"{db_secret}/postgres-password"]))
    pg = own_pg.server
    server_port = free_port()
    loopback = Loopback({pg_svc: (5432, pg.port), f"{pg_svc}-hl": (5432, pg.port),
                         server_svc: (4200, server_port)})
    proc = None
    try:
        # The chart's initdb script, with the StatefulSet container's env (passwords from the Secret).
        sts = cr.find(rendered.docs, "StatefulSet", pg_svc)
        sts_pod = sts["spec"]["template"]["spec"]
        pg_env = rendered.env(sts_pod["containers"][0])
        # Its password files, where the Secret volume would put them.
        for name, path in list(pg_env.items()):
            if name.endswith("_PASSWORD_FILE"):
                secret, key = cr.secret_files(sts_pod, sts_pod["containers"][0])[path]
                local = work / "pg-secrets" / key
                local.parent.mkdir(exist_ok=True)
                local.write_text(rendered.secrets[f"{secret}/{key}"])
                pg_env[name] = str(local)
        (script_name, script), = rendered.configmaps[_fullname("postgresql-initdb")].items()
        script_path = work / script_name
        script_path.write_text(script)
        init = subprocess.run(
            ["bash", str(script_path)], capture_output=True, text=True, timeout=60,
            env={**os.environ, **pg_env, "PATH": f"{postgres_bin_dir()}{os.pathsep}{os.environ['PATH']}",
                 "PGHOST": str(pg.socket_dir), "PGPORT": str(pg.socket_port)},
        )
        assert init.returncode == 0, f"chart initdb script failed:\n{init.stderr}"

        # The Prefect server as the chart runs it (command and env), on a free loopback port.
        srv_pod = cr.find(rendered.docs, "Deployment", server_svc)["spec"]["template"]["spec"]
        srv = srv_pod["containers"][0]
        # What its envFromFiles wrapper exports from the Secret files, then the real command.
        cmd, from_files = cr.env_from_files(srv_pod, srv)
        assert cmd[:3] == ["prefect", "server", "start"], cmd
        cmd[0] = str(BIN / "prefect")
        cmd[cmd.index("--host") + 1] = "127.0.0.1"
        cmd[cmd.index("--port") + 1] = str(server_port)
        srv_env = loopback.env({**rendered.env(srv),
                                **{n: rendered.secrets[f"{s}/{k}"] for n, (s, k) in from_files.items()}})
        assert srv_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://prefect:")
        log = work / "prefect-server.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **srv_env, "PREFECT_HOME": str(work / "prefect-home"),
                     "PREFECT_SERVER_UI_ENABLED": "false"},  # the UI is not under test
            )
        api_url = f"http://127.0.0.1:{server_port}/api"
        wait_for_server(api_url, proc, log)

        yield {
            "rendered": rendered, "loopback": loopback, "work": work, "api_url": api_url, "pg": pg,
            "server_log": log,
            "data_url": own_pg.tcp_url("etl", rendered.secrets[f"{db_secret}/etl-password"], "ecommerce"),
        }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _api(api_url: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api_url})


async def _client_call(api_url: str, fn):
    from prefect.client.orchestration import get_client

    with _api(api_url):
        async with get_client() as client:
            return await fn(client)


@pytest.fixture(scope="module")
def registered(release):
    """The worker's initContainers (wait for the server, then `ecommerce-etl deploy`) run from the
    image, without the worker container itself."""
    worker = cr.find(release["rendered"].docs, "Deployment", _fullname("worker"))["spec"]["template"]["spec"]
    assert [c["name"] for c in worker["initContainers"]] == ["wait-for-prefect-server", "register-deployments"]
    started = time.monotonic()
    results = run_pod({**worker, "containers": []}, release["rendered"], release["loopback"],
                      release["work"], "t4-register")
    assert len(results) == 2 and all(r["rc"] == 0 for r in results), _tail(results)
    print(f"\nT4 deployment registration: {time.monotonic() - started:.1f}s", file=sys.stderr)
    out = json.loads(results[-1]["logs"].strip().splitlines()[-1])
    assert set(out["deployments"]) >= {"sample", "kaggle", "load-file"}, out
    return out


def _job_manifest(release, pool, deployment_id, flow_run_id) -> dict:
    """The Job the worker would create, built in the worker's settings (its PREFECT_* env, e.g.
    PREFECT_HOME), so nothing from this test process leaks into the Job's env."""
    from prefect.settings import PREFECT_HOME, temporary_settings

    worker = cr.find(release["rendered"].docs, "Deployment", _fullname("worker"))
    worker_env = release["rendered"].env(worker["spec"]["template"]["spec"]["containers"][0])
    import prefect.settings as ps

    updates = {}
    for k, v in worker_env.items():
        if k.startswith("PREFECT_") and k != "PREFECT_API_URL":
            try:
                updates[getattr(ps, k)] = v
            except AttributeError:  # integration settings (prefect-kubernetes) are not core ones
                pass
    updates.setdefault(PREFECT_HOME, "/tmp/prefect")
    with temporary_settings(updates=updates):
        manifest = asyncio.run(cr.job_manifest_for_flow_run(release["api_url"], pool.base_job_template,
                                                             deployment_id, flow_run_id))
    assert manifest["kind"] == "Job" and manifest["apiVersion"] == "batch/v1"
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    return manifest


def _docker_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()


class FileJobs:
    """The worker's part for the `load-file` runs a fanned-out parent creates: take each due
    scheduled run, propose Pending (the server applies the deployment's concurrency limit here,
    as it does for the chart's worker, and holds the rest back as AwaitingConcurrencySlot), build
    the Job from the pool's template with prefect-kubernetes, and run it under Docker."""

    def __init__(self, release, registered):
        self.release, self.registered = release, registered
        self.jobs: list[dict] = []  # {flow_run_id, manifest, results, start, end}
        self.errors: list[str] = []  # Jobs this stand-in worker could not run (their runs are Crashed)
        self.rejected = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        self._loop.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._loop.join(60)
        for t in self._threads:
            t.join(900)

    def containers_at_most(self) -> int:
        """Containers alive at once, a finished flow run's exit included (docker's own times)."""
        return overlap([(_docker_time(j["results"][-1]["inspect"]["State"]["StartedAt"]),
                          _docker_time(j["results"][-1]["inspect"]["State"]["FinishedAt"])) for j in self.jobs])

    def _poll(self) -> None:
        from prefect.client.schemas.filters import (
            DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType)
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.states import Pending

        deployment_id = self.registered["deployments"]["load-file"]

        async def due(client):
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))
            now = time.time()
            return [r for r in runs if r.state.state_details.scheduled_time is None
                    or r.state.state_details.scheduled_time.timestamp() <= now]

        while not self._stop.is_set():
            for flow_run in asyncio.run(_client_call(self.release["api_url"], due)):
                answer = asyncio.run(_client_call(self.release["api_url"],
                                                  lambda c, r=flow_run: c.set_flow_run_state(r.id, Pending())))
                if answer.status != SetStateStatus.ACCEPT:
                    self.rejected += 1  # no slot: the server rescheduled it, no Job is created
                    continue
                thread = threading.Thread(target=self._run, args=(flow_run, deployment_id), daemon=True)
                self._threads.append(thread)
                thread.start()
            self._stop.wait(1)

    def _run(self, flow_run, deployment_id) -> None:
        try:
            job = self._run_job(flow_run, deployment_id)
            self._check_run_ended(flow_run, job)
        except BaseException as exc:
            # As a worker does when it cannot submit a run: the run crashes, so the parent ends
            # (and this test fails with the reason) instead of waiting for it forever.
            import traceback

            from prefect.states import Crashed

            self.errors.append(f"load-file run {flow_run.name}: {traceback.format_exc()}")
            crashed = Crashed(message=f"the T4 stand-in worker could not run its Job: {type(exc).__name__}: {exc}")
            asyncio.run(_client_call(self.release["api_url"],
                                     lambda c: c.set_flow_run_state(flow_run.id, crashed, force=True)))

    def _check_run_ended(self, flow_run, job: dict) -> None:
        """A Job whose containers are done while its flow run is not final (an init container
        failed, the engine never started): prefect-kubernetes' observer would crash the run."""
        async def read(client):
            return await client.read_flow_run(flow_run.id)

        run = asyncio.run(_client_call(self.release["api_url"], read))
        if not (run.state and run.state.is_final()):
            raise RuntimeError(f"its Job ended with the run still {run.state.name if run.state else None}:\n"
                               f"{_tail(job['results'])}")

    def _run_job(self, flow_run, deployment_id) -> dict:
        async def pool(client):
            return await client.read_work_pool(self.registered["work_pool"])

        manifest = _job_manifest(self.release, asyncio.run(_client_call(self.release["api_url"], pool)),
                                 deployment_id, flow_run.id)
        job = {"flow_run_id": flow_run.id, "manifest": manifest, "start": time.monotonic()}
        job["results"] = run_pod(manifest["spec"]["template"]["spec"], self.release["rendered"],
                                 self.release["loopback"], self.release["work"], f"t4-file-{flow_run.id.hex[:8]}")
        job["end"] = time.monotonic()
        self.jobs.append(job)
        return job


def _run_sample_deployment(release, registered) -> tuple[dict, list[dict], object, FileJobs]:
    """Create a flow run of `sample`, build its Job as the worker would, run that Job; its file
    runs' Jobs run beside it (FileJobs)."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Pending

    api_url, pool_name = release["api_url"], registered["work_pool"]

    async def create(client):
        deployment = await client.read_deployment(registered["deployments"]["sample"])
        flow_run = await client.create_flow_run_from_deployment(deployment.id)
        # The worker proposes Pending before it submits the Job.
        await client.set_flow_run_state(flow_run.id, Pending())
        pool = await client.read_work_pool(pool_name)
        return deployment, flow_run, pool

    deployment, flow_run, pool = asyncio.run(_client_call(api_url, create))
    configmap_template = cr.base_job_template(release["rendered"].docs)
    assert pool.base_job_template == configmap_template, "the hook registered another template"
    manifest = _job_manifest(release, pool, deployment.id, flow_run.id)
    pod = manifest["spec"]["template"]["spec"]

    started = time.monotonic()
    with FileJobs(release, registered) as file_jobs:
        results = run_pod(pod, release["rendered"], release["loopback"], release["work"], "t4-flow-run")
    elapsed = time.monotonic() - started

    async def read(client):
        return await client.read_flow_run(flow_run.id)

    final = asyncio.run(_client_call(api_url, read))
    assert not file_jobs.errors, "\n".join(file_jobs.errors)
    detail = f"{_tail(results)}\n--- server log ---\n{release['server_log'].read_text()[-3000:]}"
    assert results[-1]["rc"] == 0, detail
    assert final.state.type == StateType.COMPLETED, f"flow run is {final.state!r}\n{detail}"
    print(f"\nT4 flow-run Job container: {elapsed:.1f}s, {len(file_jobs.jobs)} file Jobs, {file_jobs.rejected} "
          f"Pending proposals refused for want of a slot", file=sys.stderr)
    return manifest, results, final, file_jobs


def _summary_artifact(api_url: str, flow_run_id) -> list[dict]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.etl import SUMMARY_ARTIFACT_KEY

    async def read(client):
        return await client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
        ))

    artifacts = asyncio.run(_client_call(api_url, read))
    assert len(artifacts) == 1, f"expected one summary artifact for {flow_run_id}, got {artifacts}"
    data = artifacts[0].data
    return json.loads(data) if isinstance(data, str) else data


def _file_events(api_url: str, flow_run_id, expected: int) -> list[dict]:
    """The ecommerce.file.* events related to a flow run, once `expected` of them are stored.

    The server persists events in batches, so the first query can see only some of them."""
    import httpx

    body = {"filter": {"event": {"prefix": ["ecommerce.file."]},
                       "related": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 50}
    deadline = time.monotonic() + 90
    while True:
        events = httpx.post(f"{api_url}/events/filter", json=body, timeout=30).json()["events"]
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(2)


def _row_count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM public.ecommerce_events")).scalar()
    finally:
        engine.dispose()


def test_flow_run_job_runs_from_image_and_reruns_skip(release, registered):
    # First run: one Job per file, each Completed, at most flowRun.maxParallelFiles at once.
    manifest, results, final, file_jobs = _run_sample_deployment(release, registered)
    rows = _summary_artifact(release["api_url"], final.id)
    assert rows and all(r["status"] == "loaded" for r in rows), rows
    assert len(file_jobs.jobs) == len(rows) == 5
    for job in file_jobs.jobs:
        assert job["results"][-1]["rc"] == 0, _tail(job["results"])
        assert job["manifest"]["metadata"]["labels"]["prefect.io/flow-run-id"] == str(job["flow_run_id"])
        assert job["results"][-1]["env"]["PREFECT__FLOW_RUN_ID"] == str(job["flow_run_id"])

    async def file_runs(client):
        return [await client.read_flow_run(j["flow_run_id"]) for j in file_jobs.jobs]

    children = asyncio.run(_client_call(release["api_url"], file_runs))
    assert sorted(c.name for c in children) == sorted(f"load-{r['file']}" for r in rows)
    assert {c.state.type.value for c in children} == {"COMPLETED"}
    # What the limit bounds: file runs holding a slot (Pending through Running) at once, at most the
    # chart's default maxParallelFiles. A finished run's container may still be exiting meanwhile.
    runs_at_once = overlap([(c.start_time.timestamp(), c.end_time.timestamp()) for c in children])
    tails = [_docker_time(j["results"][-1]["inspect"]["State"]["FinishedAt"]) - c.end_time.timestamp()
             for j, c in zip(file_jobs.jobs, children)]
    print(f"T4 file runs: at most {runs_at_once} running at once (limit 3); containers alive at once "
          f"{file_jobs.containers_at_most()} (exits {min(tails):.1f}-{max(tails):.1f}s after their run ended)",
          file=sys.stderr)
    assert runs_at_once <= 3 and file_jobs.rejected > 0
    loaded = sum(r["rows loaded"] for r in rows)
    assert loaded > 0
    # Read back as the chart's etl role, over TCP with its generated password.
    assert _row_count(release["data_url"]) == loaded

    # The container ran as the Job's non-root user, on a read-only root filesystem.
    pod = manifest["spec"]["template"]["spec"]
    uid = pod["securityContext"]["runAsUser"]
    assert uid != 0 and pod["securityContext"]["runAsNonRoot"] is True
    job_container = results[-1]["inspect"]
    assert job_container["Config"]["User"] == f"{uid}:{pod['securityContext']['runAsGroup']}"
    assert job_container["HostConfig"]["ReadonlyRootfs"] is True
    assert job_container["Config"]["Cmd"] == pod["containers"][0]["args"]
    # runAsNonRoot is checked by the kubelet against the image's numeric USER as well.
    image_user = json.loads(subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True,
                                           text=True, check=True).stdout)[0]["Config"]["User"]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", image_user), image_user
    # The worker's env, not this test's, reached the Job (Prefect adds the flow run id itself).
    env = results[-1]["env"]
    assert env["PREFECT__FLOW_RUN_ID"] == str(final.id)
    assert env["PREFECT_HOME"] == "/tmp/prefect"
    # The label T5 (and operators) find a flow run's Job by.
    assert manifest["metadata"]["labels"]["prefect.io/flow-run-id"] == str(final.id)
    # One event per file, related to the run and to the deployment it ran from.
    events = _file_events(release["api_url"], final.id, expected=len(rows))
    assert sorted(e["resource"]["ecommerce.file"] for e in events) == sorted(r["file"] for r in rows)
    for event in events:
        assert event["event"] == "ecommerce.file.loaded"
        deployment = [r for r in event["related"] if r["prefect.resource.role"] == "deployment"]
        assert [r["prefect.resource.id"] for r in deployment] == [
            f"prefect.deployment.{registered['deployments']['sample']}"], event["related"]

    # Second run of the same deployment: every file is unchanged, so it skips.
    _, _, again, _ = _run_sample_deployment(release, registered)
    rows2 = _summary_artifact(release["api_url"], again.id)
    assert [r["file"] for r in rows2] == [r["file"] for r in rows]
    assert all(r["status"] == "skipped" for r in rows2), rows2
    assert _row_count(release["data_url"]) == loaded
