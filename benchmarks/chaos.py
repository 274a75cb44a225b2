"""`make chaos-local`: faults injected into running pipeline runs on the multi-node local kind.

Each fault is injected into its own run of the chart's `sample` deployment (files big enough that a
COPY is running when the fault hits), at the moment a file's COPY is in progress (PostgreSQL's
pg_stat_progress_copy says so). Then nothing is done by hand: the run must end Completed, and its
table must hold exactly the source's rows (per file: the sample's row count, `(source_file,
source_line)` unique, ledger = table). Alerts are counted at a webhook receiver in the cluster (the
chart's alert automations post there); a recovered fault must not alert.

Prints one line per injection, a table per fault (times, recovery seconds, what recovered it) and,
last, `faults=N recovered=N alerted=N lost=N duplicated=N max_recovery_s=S`.

Run through `scripts/local-k8s/chaos.sh run` (`make chaos-local`), which creates or reuses the
cluster (kind-config-multi.yaml) and puts the locally built kind/kubectl/helm and the cluster's Docker
engine (DOCKER_HOST) in the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "ecommerce-etl"
KIND_CONFIG = REPO / "kind-config-multi.yaml"
CLUSTER = yaml.safe_load(KIND_CONFIG.read_text())["name"]
CONTEXT = f"kind-{CLUSTER}"
NAMESPACE = yaml.safe_load((REPO / "k8s" / "namespace.yaml").read_text())["metadata"]["name"]
VALUES = [REPO / "k8s" / "values-kind.yaml", REPO / "k8s" / "values-chaos.yaml"]
HOOK_DIR = next(
    e["value"]
    for e in yaml.safe_load(VALUES[1].read_text())["flowRun"]["extraEnv"]
    if e["name"] == "ETL_CHAOS_FAULT_HOOK_DIR"
)
RELEASE = "etl"
FULL = f"{RELEASE}-ecommerce-etl"
SERVER = f"{FULL}-prefect-server"
PG = f"{FULL}-postgresql"
WEBHOOK = "chaos-webhook"
FILES = ("2019-Oct.csv", "2019-Nov.csv", "2019-Dec.csv", "2020-Jan.csv", "2020-Feb.csv")
RUN_TIMEOUT = 1500.0  # seconds a run may take after its fault before it counts as not recovered


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def sh(*args: str, timeout: float = 600, check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def kubectl(*args: str, **kw) -> str:
    return sh("kubectl", "--context", CONTEXT, "-n", NAMESPACE, *args, **kw)


def helm(*args: str, **kw) -> str:
    return sh("helm", "--kube-context", CONTEXT, "-n", NAMESPACE, *args, **kw)


def kube_json(*args: str) -> dict:
    return json.loads(kubectl(*args, "-o", "json", timeout=60))


def pods(selector: str) -> list[dict]:
    return kube_json("get", "pods", "-l", selector)["items"]


def component_pods(component: str) -> list[dict]:
    return pods(f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}")


def retrying(what: str, fn: Callable[[], object], seconds: float = 300, pause: float = 2):
    """fn() until it returns without an exception (the API and the database come and go here)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: still failing after {seconds:.0f} s: {exc}") from exc
            time.sleep(pause)


# --- the Prefect API and the database, from outside the cluster --------------------------------


class PortForward:
    """`kubectl port-forward svc/...`, started again whenever it died (its pod was deleted)."""

    def __init__(self, service: str, port: int):
        self.service, self.port = service, port
        self.proc: subprocess.Popen | None = None
        self.local = 0

    def url(self) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self.restart()
        return f"http://127.0.0.1:{self.local}"

    def restart(self) -> None:
        self.close()
        self.local = _free_port()
        self.proc = subprocess.Popen(
            [
                "kubectl",
                "--context",
                CONTEXT,
                "-n",
                NAMESPACE,
                "port-forward",
                "--address",
                "127.0.0.1",
                f"svc/{self.service}",
                f"{self.local}:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.5)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self.proc = None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prefect:
    """The Prefect REST API through the port-forward; every call retried through outages."""

    def __init__(self) -> None:
        self.forward = PortForward(SERVER, 4200)

    def call(self, method: str, path: str, body: object = None, seconds: float = 600):
        failures = 0

        def once():
            nonlocal failures
            try:
                r = httpx.request(method, f"{self.forward.url()}/api{path}", json=body, timeout=20)
            except httpx.HTTPError:
                failures += 1
                if failures % 2 == 0:  # a forward to a deleted pod stays up but answers nothing
                    self.forward.restart()
                raise
            if r.status_code >= 500:
                raise RuntimeError(f"{method} {path}: HTTP {r.status_code}")
            r.raise_for_status()
            return r.json() if r.content else None

        return retrying(f"Prefect API {method} {path}", once, seconds)

    def flow_run(self, run_id: str) -> dict:
        return self.call("GET", f"/flow_runs/{run_id}")

    def children(self, parent_id: str) -> list[dict]:
        body = {"flow_runs": {"parent_flow_run_id": {"any_": [parent_id]}}, "limit": 50}
        return self.call("POST", "/flow_runs/filter", body)

    def states(self, run_id: str) -> list[dict]:
        return self.call("GET", f"/flow_run_states/?flow_run_id={run_id}")

    def task_runs(self, run_id: str) -> list[dict]:
        return self.call("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200})

    def start_sample(self, parameters: dict, name: str) -> dict:
        deployment = self.call("GET", "/deployments/name/ecommerce-etl/sample")
        return self.call(
            "POST", f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters, "name": name}
        )


class Database:
    """psql in the PostgreSQL pod (`kubectl exec`), retried while the database restarts."""

    def rows(self, sql: str, seconds: float = 300) -> list[list[str]]:
        out = retrying(
            "psql",
            lambda: kubectl(
                "exec",
                f"statefulset/{PG}",
                "-c",
                "postgresql",
                "--",
                "psql",
                "-U",
                "postgres",
                "-d",
                "ecommerce",
                "-AtF",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                timeout=60,
            ),
            seconds,
        )
        return [line.split("\t") for line in str(out).splitlines() if line]


# --- where a run is -------------------------------------------------------------------------------


@dataclass
class Target:
    """A `load-file` run whose COPY is in progress, its pod and node."""

    file: str
    flow_run: str
    pod: str
    node: str
    container_id: str


@dataclass
class Run:
    prefect: Prefect
    db: Database
    id: str
    table: str
    files: tuple[str, ...]
    rows: int

    def state(self) -> dict:
        return self.prefect.flow_run(self.id)["state"]

    def copying_from(self) -> set[str]:
        """The client addresses of this table's COPYs that PostgreSQL is running now. Segment tables are
        named by their load's ledger id, not by file (flows.sql.FileNames), and are created in the COPY's
        own transaction: a COPY is tied to its file by the address it comes from, its load-file pod's IP."""
        found = self.db.rows(
            "select distinct host(a.client_addr) from pg_stat_progress_copy p join pg_stat_activity a"
            f" on a.pid = p.pid where p.bytes_processed > 0 and a.query like '%{self.table}$s\\_%'"
        )
        return {address for (address,) in found}

    def child(self, file: str) -> dict:
        runs = [c for c in self.prefect.children(self.id) if c["name"] == f"load-{file}"]
        if not runs:
            raise RuntimeError(f"no load-file run for {file} yet")
        return runs[0]

    def wait_for_copy(self, timeout: float = 900) -> Target:
        """The first moment a file's COPY is running and its pod is Running: that file's target."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                raise RuntimeError(f"run ended {state['name']} before any COPY was seen")
            addresses = self.copying_from()
            for file in self.files if addresses else ():
                with contextlib.suppress(RuntimeError):
                    target = self.target(file, addresses)
                    if target:
                        return target
            time.sleep(0.5)
        raise RuntimeError(f"no COPY of run {self.id} seen within {timeout:.0f} s")

    def target(self, file: str, copying_from: set[str]) -> Target | None:
        """The file's Running pod, when a COPY of this run comes from its address."""
        child = self.child(file)
        running = [
            p
            for p in pods(f"prefect.io/flow-run-id={child['id']}")
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and p["status"].get("podIP") in copying_from
        ]
        if not running:
            return None
        pod = running[0]
        statuses = pod["status"].get("containerStatuses") or [{}]
        return Target(
            file,
            child["id"],
            pod["metadata"]["name"],
            pod["spec"]["nodeName"],
            statuses[0].get("containerID", "").split("//")[-1],
        )

    def parent_pod(self) -> dict:
        running = [
            p
            for p in pods(f"prefect.io/flow-run-id={self.id}")
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        if not running:
            raise RuntimeError("the pipeline run has no Running pod")
        return running[0]

    def wait_final(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.prefect.flow_run(self.id)
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return run
            if run["state"]["type"] == "CRASHED" and not self.crash_may_heal(run):
                return run
            time.sleep(2)
        return self.prefect.flow_run(self.id)

    def crash_may_heal(self, run: dict) -> bool:
        """A Crashed pipeline run is final only when nothing will re-run it: wait a little first."""
        ended = _parse_time(run["state"]["timestamp"])
        return (datetime.now(UTC) - ended).total_seconds() < 120


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the faults -------------------------------------------------------------------------------------


def container_pid(node: str, container_id: str) -> int:
    """PID (in the node's namespace) of a container's main process: its PID 1."""
    info = json.loads(sh("docker", "exec", node, "crictl", "inspect", container_id, timeout=60))
    return int(info["info"]["pid"])


def node_ready(node: str) -> bool:
    conditions = json.loads(sh("kubectl", "--context", CONTEXT, "get", "node", node, "-o", "json"))["status"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions.get("conditions", []))


@dataclass
class Fault:
    name: str
    title: str
    inject: Callable[[Run], str]  # returns what exactly was done
    restore: Callable[[Run, str], None] | None = None


def delete_load_file_pod(run: Run) -> str:
    t = run.wait_for_copy()
    kubectl("delete", "pod", t.pod, "--wait=false")
    return f"deleted pod {t.pod} ({t.file}) on {t.node}"


def delete_parent_pod(run: Run) -> str:
    t = run.wait_for_copy()
    pod = run.parent_pod()
    kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")
    return f"deleted pipeline pod {pod['metadata']['name']} on {pod['spec']['nodeName']} while {t.file} was COPYing"


def drain_node(run: Run) -> str:
    t = run.wait_for_copy()
    subprocess.Popen(
        [
            "kubectl",
            "--context",
            CONTEXT,
            "drain",
            t.node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=600s",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"drained {t.node} (running {t.pod}, {t.file})"


def uncordon(run: Run, detail: str) -> None:
    node = detail.split()[1]
    sh("kubectl", "--context", CONTEXT, "uncordon", node)


def oom_kill(run: Run) -> str:
    t = run.wait_for_copy()
    trigger = f"mkdir -p {HOOK_DIR} && printf %s {shlex.quote(t.file)} > {HOOK_DIR}/oom"
    kubectl("exec", t.pod, "-c", "prefect-job", "--", "sh", "-c", trigger, timeout=60)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pod = kube_json("get", "pod", t.pod)
        for status in pod["status"].get("containerStatuses") or []:
            reason = (status.get("state", {}).get("terminated") or {}).get("reason")
            if reason:
                if reason != "OOMKilled":
                    raise RuntimeError(f"{t.pod} ended {reason}, not OOMKilled")
                return f"OOMKilled {t.pod} ({t.file}) on {t.node}: allocation injected mid-COPY"
        time.sleep(1)
    raise RuntimeError(f"{t.pod} was not OOM-killed within 120 s of the trigger")


def delete_worker_pod(run: Run) -> str:
    t = run.wait_for_copy()
    names = [p["metadata"]["name"] for p in component_pods("worker")]
    kubectl("delete", "pod", *names, "--wait=false")
    return f"deleted worker pod {', '.join(names)} while {t.file} was COPYing"


def delete_server_pod(run: Run) -> str:
    t = run.wait_for_copy()
    names = [p["metadata"]["name"] for p in component_pods("prefect-server")]
    kubectl("delete", "pod", *names, "--wait=false")
    return f"deleted Prefect server pod {', '.join(names)} while {t.file} was COPYing"


def delete_postgres_pod(run: Run) -> str:
    t = run.wait_for_copy()
    kubectl("delete", "pod", f"{PG}-0", "--wait=false")
    return f"deleted PostgreSQL pod {PG}-0 while {t.file} was COPYing"


def sigkill_supervisor(run: Run) -> str:
    t = run.wait_for_copy()
    pid = container_pid(t.node, t.container_id)
    sh("docker", "exec", t.node, "kill", "-9", str(pid))
    return f"SIGKILL to PID 1 of {t.pod} ({t.file}; node pid {pid}) from {t.node}"


def sigkill_engine(run: Run) -> str:
    t = run.wait_for_copy()
    pid = container_pid(t.node, t.container_id)
    children = sh("docker", "exec", t.node, "pgrep", "-P", str(pid), check=False).split()
    if not children:
        raise RuntimeError(f"{t.pod}: its supervisor (node pid {pid}) has no engine process")
    sh("docker", "exec", t.node, "kill", "-9", *children)
    return f"SIGKILL to the engine process of {t.pod} ({t.file}; node pids {' '.join(children)}) from {t.node}"


def sigkill_parent(run: Run) -> str:
    t = run.wait_for_copy()
    pod = run.parent_pod()
    node = pod["spec"]["nodeName"]
    container = pod["status"]["containerStatuses"][0]["containerID"].split("//")[-1]
    pid = container_pid(node, container)
    sh("docker", "exec", node, "kill", "-9", str(pid))
    return (
        f"SIGKILL to PID 1 of pipeline pod {pod['metadata']['name']} (node pid {pid}) on {node} "
        f"while {t.file} was COPYing"
    )


def kill_node(run: Run) -> str:
    t = run.wait_for_copy()
    sh("docker", "kill", t.node)
    return f"killed node {t.node} (its kind container) running {t.pod} ({t.file})"


def start_node(run: Run, detail: str) -> None:
    node = detail.split()[2]
    sh("docker", "start", node)
    deadline = time.monotonic() + 300
    while not node_ready(node):
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {node} not Ready within 300 s of docker start")
        time.sleep(3)
    sh("kubectl", "--context", CONTEXT, "-n", "kube-system", "rollout", "status", "ds/kindnet", "--timeout=180s")
    sh(
        "kubectl",
        "--context",
        CONTEXT,
        "-n",
        "kube-system",
        "rollout",
        "status",
        "ds/kube-router-firewall",
        "--timeout=180s",
        check=False,
    )


FAULTS = [
    Fault("load-file-pod-deleted", "a load-file pod deleted mid-COPY", delete_load_file_pod),
    Fault("parent-pod-deleted", "the pipeline run's pod deleted mid-run", delete_parent_pod),
    Fault("node-drained", "kubectl drain of the node running a load-file pod", drain_node, uncordon),
    Fault("load-file-oom", "a load-file container OOM-killed mid-COPY", oom_kill),
    Fault("worker-pod-deleted", "the worker pod deleted mid-run", delete_worker_pod),
    Fault("server-pod-deleted", "the Prefect server pod deleted mid-run", delete_server_pod),
    Fault("postgres-pod-deleted", "the PostgreSQL pod deleted mid-COPY", delete_postgres_pod),
    Fault("load-file-supervisor-sigkill", "SIGKILL of a load-file pod's PID 1 (supervisor)", sigkill_supervisor),
    Fault("load-file-engine-sigkill", "SIGKILL of a load-file pod's engine process", sigkill_engine),
    Fault("parent-sigkill", "SIGKILL of the pipeline run's process", sigkill_parent),
    Fault(
        "node-lost",
        "a worker node lost (its kind container killed) while it runs a load-file pod",
        kill_node,
        start_node,
    ),
]


# --- checks -------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    fault: Fault
    detail: str = ""
    state: str = ""
    injected_at: float = 0.0
    recovery_s: float = 0.0
    run_s: float = 0.0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)
    healed_by: list[str] = field(default_factory=list)
    alerts: int = 0
    window: tuple[float, float] = (0.0, 0.0)

    @property
    def recovered(self) -> bool:
        return self.state == "Completed" and not self.problems and not self.lost and not self.duplicated


def audit(db: Database, run: Run) -> tuple[int, int, list[str]]:
    """(lost, duplicated, problems) of the run's table against the source's rows."""
    t = run.table
    counts = {
        f: (int(n), int(d))
        for f, n, d in db.rows(f"select source_file, count(*), count(distinct source_line) from {t} group by 1")
    }
    quarantined = {f: int(n) for f, n in db.rows(f"select source_file, count(*) from {t}_quarantine group by 1")}
    ledger = {
        f: (int(read), int(loaded))
        for f, read, loaded in db.rows(f"select source_file, rows_read, rows_loaded from {t}_ledger")
    }
    lost = duplicated = 0
    problems = []
    for f in run.files:
        n, distinct = counts.get(f, (0, 0))
        q = quarantined.get(f, 0)
        duplicated += n - distinct
        lost += max(0, run.rows - distinct - q)
        if distinct + q > run.rows:
            problems.append(f"{f}: {distinct + q} distinct lines, the source has {run.rows}")
        if ledger.get(f) != (run.rows, n):
            problems.append(f"{f}: ledger {ledger.get(f)} but the table holds {n} of {run.rows} rows")
    extra = sorted(set(counts) - set(run.files))
    if extra:
        problems.append(f"rows of files not in the run: {extra}")
    return lost, duplicated, problems


def healed_by(prefect: Prefect, run: Run) -> list[str]:
    """What brought the run back, read from the state histories of the run and its files' runs."""
    found: list[str] = []

    def note(text: str) -> None:
        if text not in found:
            found.append(text)

    def read(history: list[dict], who: str) -> None:
        for s in history:
            message = s.get("message") or ""
            if s["type"] == "CRASHED":
                note(f"{who} Crashed ({message[:80]})")
            elif s["name"] == "AwaitingRetry" and "ecommerce-etl" in message:
                note(f"{who} re-run: {message[:100]}")
            elif s["name"] == "AwaitingRetry":
                note(f"{who} rescheduled on SIGTERM (Prefect)")

    read(prefect.states(run.id), "pipeline run")
    for child in prefect.children(run.id):
        read(prefect.states(child["id"]), child["name"])
        for task in prefect.task_runs(child["id"]):
            if task.get("run_count", 0) > 1:
                note(f"{child['name']}: task {task['name']} retried ({task['run_count']} tries)")
    return found


def drop_table(db: Database, table: str) -> None:
    db.rows(
        "do $$ declare r record; begin "
        f"for r in select relname from pg_class where relkind in ('r','p') and relname like '{table}%' "
        "and relnamespace = 'public'::regnamespace loop "
        "execute format('drop table if exists public.%I cascade', r.relname); end loop; "
        f"drop type if exists public.{table}_event_type cascade; drop domain if exists public.{table}_price cascade; "
        "end $$"
    )


# --- install --------------------------------------------------------------------------------------------


RECEIVER = r"""
import http.server, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        print("POST %.3f %s" % (time.time(), body.decode(errors="replace").replace("\n", " ")), flush=True)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""


def install(image: str) -> None:
    sh("kubectl", "--context", CONTEXT, "apply", "-f", str(REPO / "k8s" / "namespace.yaml"))
    infra = yaml.safe_load(VALUES[1].read_text())["postgresql"]
    labels = {"app.kubernetes.io/name": WEBHOOK}
    objects = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": WEBHOOK, "labels": labels},
            "spec": {
                "automountServiceAccountToken": False,
                **infra,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "receiver",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python", "-c", RECEIVER],
                        "ports": [{"containerPort": 8080}],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "resources": {
                            "requests": {"cpu": "10m", "memory": "32Mi"},
                            "limits": {"cpu": "100m", "memory": "64Mi"},
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": WEBHOOK},
            "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": 8080}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": WEBHOOK},
            "stringData": {"url": f"http://{WEBHOOK}.{NAMESPACE}.svc:8080/alerts"},
        },
    ]
    kubectl("delete", "pod", WEBHOOK, "--ignore-not-found", "--wait=true", timeout=120)
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    kubectl("wait", "--for=condition=Ready", f"pod/{WEBHOOK}", "--timeout=180s", timeout=240)
    repo, tag = image.rsplit(":", 1)
    args = [arg for v in VALUES for arg in ("-f", str(v))]
    args += [
        "--set",
        f"image.repository={repo}",
        "--set",
        f"image.tag={tag}",
        "--set",
        f"alerts.webhook.existingSecret={WEBHOOK}",
    ]
    helm("upgrade", "--install", RELEASE, str(CHART), *args, "--wait", "--timeout", "15m", timeout=1200)


def alert_posts() -> list[tuple[float, str]]:
    out = kubectl("logs", WEBHOOK, check=False, timeout=60)
    posts = []
    for line in out.splitlines():
        if line.startswith("POST "):
            _, at, body = line.split(" ", 2)
            posts.append((float(at), body))
    return posts


def build_image() -> str:
    ref = f"ecommerce-etl:chaos-{secrets.token_hex(4)}"
    log(f"building the flow image {ref}")
    sh(str(REPO / "scripts" / "build-image.sh"), ref, timeout=1800)
    sh("kind", "load", "docker-image", ref, "--name", CLUSTER, timeout=900)
    return ref


def remove_image(ref: str) -> None:
    """The flow image out of every node and the engine: each node keeps a copy (disk is short here)."""
    for node in sh("kind", "get", "nodes", "--name", CLUSTER).split():
        sh("docker", "exec", node, "crictl", "rmi", f"docker.io/library/{ref}", check=False)
    sh("docker", "rmi", ref, check=False)


def wait_platform() -> None:
    """The release's long-running parts are back (after a fault that took one away)."""
    for kind_name in (f"deployment/{SERVER}", f"deployment/{FULL}-worker", f"statefulset/{PG}"):
        kubectl("rollout", "status", kind_name, "--timeout=600s", timeout=660)


# --- main -------------------------------------------------------------------------------------------------


def inject_once(prefect: Prefect, db: Database, fault: Fault, n: int, files: tuple[str, ...], rows: int) -> Outcome:
    outcome = Outcome(fault)
    table = f"chaos_{n:02d}_{fault.name.replace('-', '_')}"[:48]
    drop_table(db, table)  # left by an earlier run that did not recover: its ledger would skip every file
    created = prefect.start_sample(
        {"rows_per_file": rows, "files": list(files), "table": table}, f"chaos {n:02d} {fault.name}"
    )
    started = time.time()
    run = Run(prefect, db, created["id"], table, files, rows)
    try:
        outcome.detail = fault.inject(run)
        outcome.injected_at = time.time()
        log(f"{fault.name} #{n}: {outcome.detail}")
        final = run.wait_final(RUN_TIMEOUT)
    except Exception as exc:  # the injection itself failed: the fault does not count as recovered
        outcome.problems.append(f"injection failed: {exc}")
        final = run.wait_final(RUN_TIMEOUT)
    finally:
        if fault.restore and outcome.detail:
            fault.restore(run, outcome.detail)
    outcome.state = final["state"]["name"]
    ended = _parse_time(final["end_time"]).timestamp() if final.get("end_time") else time.time()
    outcome.recovery_s = max(0.0, ended - outcome.injected_at) if outcome.injected_at else 0.0
    outcome.run_s = ended - started
    outcome.window = (started, ended)
    if outcome.state == "Completed":
        outcome.lost, outcome.duplicated, problems = audit(db, run)
        outcome.problems += problems
    else:
        outcome.problems.append(f"run ended {outcome.state}: {final['state'].get('message', '')[:300]}")
    outcome.healed_by = healed_by(prefect, run)
    wait_platform()
    if outcome.recovered:
        drop_table(db, table)
    verdict = "recovered" if outcome.recovered else "NOT RECOVERED"
    log(
        f"{fault.name} #{n}: {verdict}: {outcome.state} {outcome.recovery_s:.0f} s after the fault "
        f"(run {outcome.run_s:.0f} s); lost={outcome.lost} duplicated={outcome.duplicated} "
        f"{'; '.join(outcome.problems)}"
    )
    return outcome


def report(outcomes: list[Outcome], baseline: float | None, started: float) -> None:
    posts = alert_posts()
    for o in outcomes:
        low, high = o.window
        o.alerts = sum(1 for at, _ in posts if low <= at <= high + 60)
    print()
    if baseline is not None:
        print(f"baseline (no fault): run {baseline:.0f} s")
    print(f"{'fault':32} {'n':>2} {'recovery s':>22} {'run s':>16}  recovered by")
    for fault in FAULTS:
        mine = [o for o in outcomes if o.fault is fault]
        if not mine:
            continue
        times = ", ".join(f"{o.recovery_s:.0f}" + ("" if o.recovered else "!") for o in mine)
        runs = ", ".join(f"{o.run_s:.0f}" for o in mine)
        healed = sorted({h for o in mine for h in o.healed_by})
        print(f"{fault.name:32} {len(mine):>2} {times:>22} {runs:>16}  {' | '.join(healed) or '-'}")
    for o in outcomes:
        if not o.recovered:
            print(f"NOT RECOVERED: {o.fault.name}: {o.detail}: {'; '.join(o.problems)}")
    recovered = [o for o in outcomes if o.recovered]
    print(f"total {time.time() - started:.0f} s")
    print(
        f"faults={len(outcomes)} recovered={len(recovered)} alerted={sum(1 for o in outcomes if o.alerts)} "
        f"lost={sum(o.lost for o in outcomes)} duplicated={sum(o.duplicated for o in outcomes)} "
        f"max_recovery_s={max((o.recovery_s for o in recovered), default=0):.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="injections of each fault (default 2)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per file (default 1,000,000)")
    parser.add_argument("--files", type=int, default=3, help="files per run (default 3)")
    parser.add_argument("--only", default="", help="comma-separated fault names (default: all)")
    parser.add_argument("--image", default="", help="a flow image already loaded into the cluster")
    parser.add_argument("--no-install", action="store_true", help="use the release as it is")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without a fault")
    parser.add_argument("--keep", action="store_true", help="leave the release installed")
    args = parser.parse_args(argv)
    wanted = [f for f in FAULTS if not args.only or f.name in args.only.split(",")]
    files = FILES[: args.files]
    started = time.time()
    built = ""
    if not args.no_install:
        built = "" if args.image else build_image()
        install(args.image or built)
    prefect, db = Prefect(), Database()
    outcomes: list[Outcome] = []
    baseline = None
    try:
        if not args.no_baseline:
            drop_table(db, "chaos_baseline")
            created = prefect.start_sample(
                {"rows_per_file": args.rows, "files": list(files), "table": "chaos_baseline"}, "chaos baseline"
            )
            run = Run(prefect, db, created["id"], "chaos_baseline", files, args.rows)
            t0 = time.time()
            final = run.wait_final(RUN_TIMEOUT)
            baseline = time.time() - t0
            log(f"baseline run: {final['state']['name']} in {baseline:.0f} s")
            drop_table(db, "chaos_baseline")
        n = 0
        for _ in range(args.rounds):
            for fault in wanted:
                n += 1
                outcomes.append(inject_once(prefect, db, fault, n, files, args.rows))
        report(outcomes, baseline, started)
    finally:
        prefect.forward.close()
        if not args.keep and not args.no_install:
            log("uninstalling the release and its namespace (its volume keeps the passwords of this install)")
            helm("uninstall", RELEASE, "--wait", "--timeout", "5m", check=False, timeout=600)
            sh(
                "kubectl",
                "--context",
                CONTEXT,
                "delete",
                "namespace",
                NAMESPACE,
                "--wait=true",
                "--timeout=300s",
                check=False,
                timeout=400,
            )
            if built:
                remove_image(built)
    bad = [o for o in outcomes if not o.recovered]
    return 1 if bad or len(outcomes) < len(wanted) * args.rounds else 0


if __name__ == "__main__":
    sys.exit(main())
