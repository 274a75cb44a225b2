"""Small helpers for T5 tests that talk to a kind cluster through kubectl, helm and the Prefect API
(a port-forward), one namespace at a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

from helpers import free_port


def sh(*args: str, timeout: float = 900, check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def run(*args: str, timeout: float = 900, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)


def loaded_names(listing: str, images: list[str]) -> list[str]:
    """Every name `ctr -n k8s.io images ls` (listing) shows for images loaded by `kind load`: the tag,
    the image id (sha256:...) and the import-<date>@<digest> name ctr gives the same image. Removing
    only the tag (crictl rmi) leaves the last, and with it the layers (about 1 GB for the flow image)."""
    tags = {f"docker.io/library/{image}" for image in images}
    rows = [line.split() for line in listing.splitlines()[1:] if line.strip()]
    digests = {row[2] for row in rows if row[0] in tags}
    return [row[0] for row in rows if row[2] in digests]


def unload_images(cluster: str, images: list[str]) -> None:
    """Remove images loaded with `kind load` from every node of the cluster (best effort)."""
    for node in sh("kind", "get", "nodes", "--name", cluster, check=False).split():
        listing = sh("docker", "exec", node, "ctr", "-n", "k8s.io", "images", "ls", check=False)
        names = loaded_names(listing, images)
        if names:
            sh("docker", "exec", node, "ctr", "-n", "k8s.io", "images", "rm", *names, check=False)



@contextlib.contextmanager
def port_forward(context: str, namespace: str, service: str, port: int, local: int | None = None,
                 health: str = "/api/health", wait_seconds: float = 90):
    """kubectl port-forward to a Service, as the README tells users, once `health` answers 200;
    yields http://127.0.0.1:<local>."""
    local = local or free_port()
    proc = subprocess.Popen(["kubectl", "--context", context, "-n", namespace, "port-forward",
                             "--address", "127.0.0.1", f"svc/{service}", f"{local}:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{local}"
        deadline = time.monotonic() + wait_seconds
        while True:
            assert proc.poll() is None, f"port-forward exited: {proc.stdout.read()}"
            try:
                if httpx.get(f"{url}{health}", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{service} not reachable through port-forward"
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def web_server_objects(name: str, image: str, script: str) -> list[dict]:
    """A Pod (the flow image, Pod Security "restricted") that runs `script`, which ends serving port 8080,
    and its Service on port 80: the in-cluster web server of the URL-source tests."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
           "spec": {"automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{"name": "web", "image": image, "imagePullPolicy": "IfNotPresent",
                                    "command": ["sh", "-c", script], "ports": [{"containerPort": 8080}],
                                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                                    "securityContext": {"allowPrivilegeEscalation": False,
                                                        "readOnlyRootFilesystem": True,
                                                        "capabilities": {"drop": ["ALL"]}},
                                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                                  "limits": {"cpu": "500m", "memory": "512Mi"}}}],
                    "volumes": [{"name": "tmp", "emptyDir": {}}]}}  # fmt: skip
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip
    return [pod, service]

@dataclass
class Kube:
    context: str
    namespace: str

    def kubectl(self, *args: str, **kw) -> str:
        return sh("kubectl", "--context", self.context, "-n", self.namespace, *args, **kw)

    def helm(self, *args: str, **kw) -> str:
        return sh("helm", "--kube-context", self.context, "-n", self.namespace, *args, **kw)

    def helm_result(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return run("helm", "--kube-context", self.context, "-n", self.namespace, *args, timeout=timeout)

    def create_namespace(self) -> None:
        """The namespace with Pod Security "restricted" enforced, as k8s/namespace.yaml makes it."""
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}
        sh("kubectl", "--context", self.context, "apply", "-f", "-", input=json.dumps(ns))

    def delete_namespace(self) -> None:
        sh("kubectl", "--context", self.context, "delete", "namespace", self.namespace, "--ignore-not-found",
           "--wait=true", "--timeout=300s", check=False, timeout=400)

    def psql(self, release_prefix: str, sql: str, db: str = "ecommerce") -> str:
        """SQL as the superuser inside the release's PostgreSQL pod."""
        return self.kubectl("exec", f"statefulset/{release_prefix}-postgresql", "-c", "postgresql", "--",
                            "psql", "-X", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql).strip()

    def secret(self, name: str) -> dict:
        import base64

        obj = json.loads(self.kubectl("get", "secret", name, "-o", "json"))
        return {"annotations": obj["metadata"].get("annotations") or {},
                "data": {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}}

    def wait_job(self, job: str, timeout: int = 900) -> str:
        """Wait for a Job to complete (failing fast when it fails); returns its logs."""
        deadline = time.monotonic() + timeout
        while True:
            status = json.loads(self.kubectl("get", job, "-o", "json"))["status"]
            if status.get("succeeded"):
                return self.kubectl("logs", job, "--all-containers")
            failed = [c for c in status.get("conditions") or [] if c["type"] == "Failed" and c["status"] == "True"]
            assert not failed and time.monotonic() < deadline, (
                f"{job}: {status}\n{self.kubectl('logs', job, '--all-containers', check=False)}")
            time.sleep(3)

    def dump(self) -> None:
        """Pods, events and logs, for a failure."""
        out = [self.kubectl("get", "pods,jobs,cronjobs,pvc,events", "-o", "wide", check=False, timeout=60)]
        pods = json.loads(self.kubectl("get", "pods", "-o", "json", check=False, timeout=60) or '{"items": []}')
        for pod in pods["items"]:
            name = pod["metadata"]["name"]
            out.append(self.kubectl("describe", "pod", name, check=False, timeout=60))
            out.append(f"===== logs {name} =====\n"
                       + self.kubectl("logs", name, "--all-containers", "--prefix", "--tail=200", check=False, timeout=60))
        print("\n".join(out), file=sys.stderr)

    @contextlib.contextmanager
    def dump_on_failure(self):
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.dump()
            raise

    def port_forward(self, service: str, port: int, health: str = "/api/health"):
        """kubectl port-forward to a Service; yields http://127.0.0.1:<local>."""
        return port_forward(self.context, self.namespace, service, port, health=health)


async def _with_client(api_url: str, fn):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            return await fn(client)


def prefect(api_url: str, fn):
    """Run `await fn(client)` with a Prefect client on api_url."""
    return asyncio.run(_with_client(api_url, fn))


def run_deployment(api_url: str, name: str = "ecommerce-etl/sample", timeout: float = 1200):
    """A flow run of a deployment, waited for; returns the final run."""
    async def create(client):
        deployment = await client.read_deployment_by_name(name)
        return await client.create_flow_run_from_deployment(deployment.id)

    flow_run = prefect(api_url, create)
    deadline = time.monotonic() + timeout
    while True:
        current = prefect(api_url, lambda c: c.read_flow_run(flow_run.id))
        if current.state and current.state.is_final():
            return current
        assert time.monotonic() < deadline, f"flow run still {current.state!r} after {timeout}s"
        time.sleep(5)
