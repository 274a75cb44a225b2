"""T5 (`make metrics-local`): monitoring and the highly available server on kind.

One release with `metrics.enabled`, `prefectServer.replicas=2` (Redis: the Valkey stand-in) and basic
auth, and a real Prometheus (Debian's package, no Operator) in the namespace the chart's
NetworkPolicies expect. Prometheus scrapes what the chart's ServiceMonitor names (the Services it
selects, their ports, paths and basic-auth credentials, read from `helm template` with the object
forced; each pod found through a headless twin of its Service, as Debian's build has no Kubernetes
discovery) and evaluates the rule groups of the rendered PrometheusRule, so neither can drift from the chart.

- With one API pod deleted in the middle of a `sample` run, the run ends Completed and the UI keeps
  answering (probed from inside the cluster through the Service).
- Prometheus' `ecommerce_etl_rows_loaded` equals the table's `count(*)`.
- After a run with a file that cannot load, `EcommerceEtlFileFailed` is firing in Prometheus.
- Every query of the shipped dashboard returns series.

Skipped unless ETL_E2E_METRICS=1 (about 20 min here): `make metrics-local` sets it.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml
from kube_tools import Kube, sh, unload_images, web_server_objects

from helpers import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

CHART = REPO / "charts" / "ecommerce-etl"
VALUES = REPO / "k8s" / "values-kind.yaml"
DASHBOARD = CHART / "dashboards" / "ecommerce-etl.json"
CLUSTER = os.environ.get("CLUSTER") or yaml.safe_load((REPO / "kind-config.yaml").read_text())["name"]
CONTEXT = f"kind-{CLUSTER}"
NAMESPACE = "etl-monitoring"
RELEASE = "mon"
FULL = f"{RELEASE}-ecommerce-etl"
PROM_NAMESPACE = "monitoring"  # the chart's default metrics.networkPolicy.namespace
PROM = "prometheus"
PROM_IMAGE = os.environ.get("PROMETHEUS_IMAGE", "local/prometheus:bookworm")
TAG = f"mon-{secrets.token_hex(3)}"
IMAGE = f"ecommerce-etl:{TAG}"
SAMPLE_ROWS = 500
FILES = ("2019-Oct.csv", "2019-Nov.csv", "2019-Dec.csv", "2020-Jan.csv", "2020-Feb.csv")
SCRAPE = "5s"  # the ServiceMonitor says 30s; the test does not want to wait that long
NETPOL_SETUP = os.environ.get("ETL_E2E_NETPOL_SETUP", "")
KEEP = os.environ.get("ETL_E2E_KEEP") == "1"
SEEN: dict[str, object] = {}  # queries and values, printed at the end for the report

kube = Kube(CONTEXT, NAMESPACE)
prom_kube = Kube(CONTEXT, PROM_NAMESPACE)


@pytest.fixture(scope="module", autouse=True)
def _requirements():
    missing = [t for t in ("kind", "kubectl", "helm", "docker") if not shutil.which(t)]
    if missing:
        pytest.skip(f"T5 needs kind, kubectl, helm and docker; missing: {', '.join(missing)}")
    if os.environ.get("ETL_E2E_METRICS") != "1":
        pytest.skip("the monitoring and HA check runs via `make metrics-local`, or with ETL_E2E=1 ETL_E2E_METRICS=1")
    if CLUSTER not in sh("kind", "get", "clusters", check=False).split():
        pytest.skip(f"no kind cluster {CLUSTER} (make metrics-local creates one)")
    yield
    print("\nmonitoring on kind, seen: " + json.dumps(SEEN, indent=1, default=str), file=sys.stderr)


def helm_values() -> list[str]:
    return ["-f", str(VALUES), "--set", "image.repository=ecommerce-etl", "--set", f"image.tag={TAG}",
            "--set", f"deployments.sampleRows={SAMPLE_ROWS}", "--set", "metrics.enabled=true",
            "--set", "metrics.exporter.cacheSeconds=2", "--set", "prefectServer.replicas=2",
            "--set", "prefectServer.basicAuth.enabled=true"]  # fmt: skip


@pytest.fixture(scope="module")
def release():
    """The flow image built and loaded, the release installed (HA, metrics, basic auth), then the
    NetworkPolicies enforced (NETPOL_SETUP), as a cluster with a policy-enforcing network plugin has them."""
    started = time.monotonic()
    sh(str(REPO / "scripts" / "build-image.sh"), IMAGE, timeout=1800)
    sh("kind", "load", "docker-image", IMAGE, "--name", CLUSTER, timeout=900)
    kube.create_namespace()
    try:
        with kube.dump_on_failure():
            kube.helm("install", RELEASE, str(CHART), *helm_values(), "--wait", "--timeout", "20m", timeout=1500)
        SEEN["install_seconds"] = round(time.monotonic() - started)
        if NETPOL_SETUP:
            sh(*shlex.split(NETPOL_SETUP), timeout=900)
        yield
    finally:
        if not KEEP:
            kube.helm("uninstall", RELEASE, "--wait", "--timeout", "5m", check=False, timeout=600)
            kube.delete_namespace()
            unload_images(CLUSTER, [IMAGE])
            sh("docker", "image", "rm", IMAGE, check=False)


def rendered(kind: str) -> dict:
    """The object of `kind` from `helm template` of this release, ServiceMonitor and PrometheusRule forced."""
    out = sh("helm", "template", RELEASE, str(CHART), "-n", NAMESPACE, *helm_values(),
             "--set", "metrics.serviceMonitor.force=true", "--set", "metrics.prometheusRule.force=true")  # fmt: skip
    (doc,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == kind]
    return doc


# --- Prometheus, configured from the rendered ServiceMonitor and PrometheusRule ----------------------
# Debian's prometheus (2.42, the package that gives promtool) is built without Kubernetes discovery, so
# each Service the ServiceMonitor selects gets a headless twin, and Prometheus finds the pods behind it
# by DNS: one target per ready pod, as the Operator's endpoints discovery gives.
def selected_services(monitor: dict) -> list[dict]:
    services = json.loads(kube.kubectl("get", "services", "-o", "json"))["items"]
    selector = monitor["spec"]["selector"]["matchExpressions"]
    return [s for s in services
            if all(s["metadata"]["labels"].get(e["key"]) in e["values"] for e in selector)]  # fmt: skip


def container_port(service: dict, port_name: str) -> int | None:
    """The pods' port behind the Service's port named `port_name` (its targetPort, resolved by name)."""
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == port_name] or [None]
    if port is None:
        return None
    target = port["targetPort"]
    if isinstance(target, int):
        return target
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
    pods = json.loads(kube.kubectl("get", "pods", "-o", "json", "-l", selector))["items"]
    return next(p["containerPort"] for pod in pods for c in pod["spec"]["containers"] for p in c.get("ports", [])
                if p.get("name") == target)  # fmt: skip


def headless_twin(service: dict) -> dict:
    name = service["metadata"]["name"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{name}-scrape", "namespace": NAMESPACE},
            "spec": {"clusterIP": "None", "selector": service["spec"]["selector"],
                     "ports": [{"name": p["name"], "port": p["port"], "targetPort": p["targetPort"]}
                               for p in service["spec"]["ports"]]}}  # fmt: skip


def scrape_configs(monitor: dict, services: list[dict], auth_username: str) -> list[dict]:
    """What the Operator would generate from the ServiceMonitor, per endpoint and selected Service:
    that port on each pod, that path, its basic auth; job = the Service's name."""
    jobs = []
    for endpoint in monitor["spec"]["endpoints"]:
        for service in services:
            port = container_port(service, endpoint["port"])
            if port is None:
                continue
            name = service["metadata"]["name"]
            job = {
                "job_name": f"{monitor['metadata']['name']}/{name}/{endpoint['port']}",
                "metrics_path": endpoint["path"],
                "scrape_interval": SCRAPE,
                "scrape_timeout": "4s",
                "dns_sd_configs": [{"names": [f"{name}-scrape.{NAMESPACE}.svc.cluster.local"], "type": "A",
                                    "port": port, "refresh_interval": "5s"}],
                "relabel_configs": [
                    {"target_label": "namespace", "replacement": NAMESPACE},
                    {"target_label": "service", "replacement": name},
                    {"target_label": "job", "replacement": name},
                    {"target_label": "endpoint", "replacement": endpoint["port"]},
                ],
            }  # fmt: skip
            if "basicAuth" in endpoint:
                job["basic_auth"] = {"username": auth_username, "password_file": "/etc/prometheus/auth/password"}
            jobs.append(job)
    return jobs


def prometheus_objects(config: dict, rules: dict, password: str) -> list[dict]:
    labels = {"app.kubernetes.io/name": PROM}
    restricted = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{PROM}-scrape-auth", "namespace": PROM_NAMESPACE},
         "stringData": {"password": password}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": PROM, "namespace": PROM_NAMESPACE},
         "data": {"prometheus.yml": yaml.safe_dump(config), "rules.yaml": yaml.safe_dump(rules)}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": PROM, "namespace": PROM_NAMESPACE, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
             "automountServiceAccountToken": False,
             "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
                                 "seccompProfile": {"type": "RuntimeDefault"}},
             "containers": [{"name": PROM, "image": PROM_IMAGE, "imagePullPolicy": "IfNotPresent",
                             "args": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                                      "--web.listen-address=:9090", "--storage.tsdb.retention.time=1d"],
                             "ports": [{"name": "web", "containerPort": 9090}],
                             "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "web"}, "periodSeconds": 3},
                             "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                           "limits": {"cpu": "500m", "memory": "512Mi"}},
                             "securityContext": restricted,
                             "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus"},
                                              {"name": "auth", "mountPath": "/etc/prometheus/auth"},
                                              {"name": "data", "mountPath": "/prometheus"}]}],
             "volumes": [{"name": "config", "configMap": {"name": PROM}},
                         {"name": "auth", "secret": {"secretName": f"{PROM}-scrape-auth", "defaultMode": 0o440}},
                         {"name": "data", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": PROM, "namespace": PROM_NAMESPACE},
         "spec": {"selector": labels, "ports": [{"name": "web", "port": 9090, "targetPort": "web"}]}},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def prometheus(release):
    """A real Prometheus in `monitoring`, scraping the release; yields its HTTP API's base URL."""
    monitor, rule = rendered("ServiceMonitor"), rendered("PrometheusRule")
    services = selected_services(monitor)
    assert sorted(s["metadata"]["name"] for s in services) == [f"{FULL}-metrics", f"{FULL}-prefect-server"]
    auth = kube.secret(f"{FULL}-basic-auth")["data"]
    config = {"global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
              "rule_files": ["/etc/prometheus/rules.yaml"],
              "scrape_configs": scrape_configs(monitor, services, auth["username"])}  # fmt: skip
    SEEN["scrape jobs"] = [(j["job_name"], j["metrics_path"], "basic_auth" in j) for j in config["scrape_configs"]]
    twins = [headless_twin(s) for s in services]
    prom_kube.create_namespace()
    try:
        objects = [*twins, *prometheus_objects(config, {"groups": rule["spec"]["groups"]}, auth["password"])]
        sh("kubectl", "--context", CONTEXT, "apply", "-f", "-",
           input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))  # fmt: skip
        with prom_kube.dump_on_failure():
            prom_kube.kubectl("rollout", "status", f"deployment/{PROM}", "--timeout=300s", timeout=400)
        with prom_kube.port_forward(PROM, 9090, health="/-/ready") as url:
            yield url
    finally:
        if not KEEP:
            names = [t["metadata"]["name"] for t in twins]
            kube.kubectl("delete", "service", *names, "--ignore-not-found", check=False)
            prom_kube.delete_namespace()


def query(prom: str, promql: str) -> list[dict]:
    response = httpx.get(f"{prom}/api/v1/query", params={"query": promql}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_query(prom: str, promql: str, check, timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = query(prom, promql)
        if check(result):
            return result
        assert time.monotonic() < deadline, f"{promql}: {result} after {timeout}s"
        time.sleep(3)


def firing(prom: str, alert: str) -> list[dict]:
    alerts = httpx.get(f"{prom}/api/v1/alerts", timeout=30).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alert and a["state"] == "firing"]


def count_rows(table: str = "ecommerce_events") -> int:
    return int(kube.psql(FULL, f"SELECT count(*) FROM public.{table}"))


# --- a run driven from inside the cluster, through the API Service -----------------------------------
DRIVER = r"""
import json, os, sys, threading, time, base64, urllib.request
api, deployment, parameters = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
os.environ["PREFECT_API_AUTH_STRING"] = open("/etc/ecommerce-etl/env/PREFECT_API_AUTH_STRING").read().strip()
os.environ["PREFECT_API_URL"] = api
header = "Basic " + base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
done = threading.Event()

def ui():  # the UI's page, through the Service, twice a second
    while not done.is_set():
        try:
            request = urllib.request.Request(api.removesuffix("/api") + "/", headers={"Authorization": header})
            with urllib.request.urlopen(request, timeout=5) as r:
                status = r.status
        except Exception as exc:
            status = type(exc).__name__
        print(json.dumps({"t": time.time(), "ui": status}), flush=True)
        time.sleep(0.5)

threading.Thread(target=ui, daemon=True).start()
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    run = client.create_flow_run_from_deployment(client.read_deployment_by_name(deployment).id, parameters=parameters)
    while True:
        try:
            state = client.read_flow_run(run.id).state
            line = {"t": time.time(), "run": str(run.id), "state": state.name, "final": state.is_final()}
            print(json.dumps(line), flush=True)
            if state.is_final():
                break
        except Exception as exc:
            print(json.dumps({"t": time.time(), "poll_error": type(exc).__name__}), flush=True)
        time.sleep(2)
done.set()
time.sleep(1)
"""


def drive_run(parameters: dict | None = None, during=None, timeout: float = 1500) -> list[dict]:
    """Create a run of ecommerce-etl/sample from inside the exporter pod and follow it to its end;
    `during(line)` sees each progress line as it arrives. Returns every line."""
    proc = subprocess.Popen(
        ["kubectl", "--context", CONTEXT, "-n", NAMESPACE, "exec", f"deployment/{FULL}-metrics", "--", "python", "-c",
         DRIVER, f"http://{FULL}-prefect-server:4200/api", "ecommerce-etl/sample", json.dumps(parameters or {})],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[dict] = []
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for raw in proc.stdout:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                print(raw, end="", file=sys.stderr)
                continue
            lines.append(line)
            if during:
                during(line)
    finally:
        timer.cancel()
    assert proc.wait() == 0, lines[-5:]
    return lines


def api_pods() -> list[str]:
    pods = json.loads(kube.kubectl("get", "pods", "-l", "app.kubernetes.io/component=prefect-server", "-o", "json"))
    return sorted(p["metadata"]["name"] for p in pods["items"] if not p["metadata"].get("deletionTimestamp"))


# --- the tests --------------------------------------------------------------------------------------
def test_prometheus_scrapes_the_exporter_and_every_api_pod_with_credentials(prometheus):
    """Both API pods answer /api/metrics with the basic-auth credentials, through the NetworkPolicies."""
    server = f'up{{namespace="{NAMESPACE}", job="{FULL}-prefect-server"}}'
    result = wait_query(prometheus, server, lambda r: len(r) == 2 and all(s["value"][1] == "1" for s in r))
    exporter = wait_query(prometheus, f'up{{namespace="{NAMESPACE}", job="{FULL}-metrics"}}',
                          lambda r: [s["value"][1] for s in r] == ["1"])  # fmt: skip
    SEEN[server] = [(s["metric"]["instance"], s["value"][1]) for s in result]
    SEEN["up exporter"] = exporter[0]["value"][1]
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
    SEEN["rules loaded"] = sorted(r["name"] for g in rules for r in g["rules"])
    assert len(SEEN["rules loaded"]) == 8


def test_deleting_an_api_pod_mid_run_leaves_the_run_completed_and_the_ui_answering(prometheus):
    before = api_pods()
    assert len(before) == 2, before
    victim = before[0]
    deleted: dict[str, float] = {}

    def delete_once_running(line: dict) -> None:
        if line.get("state") == "Running" and not deleted:
            running_since = line["t"]
            deleted.setdefault("running", running_since)
        if "running" in deleted and "at" not in deleted and line["t"] - deleted["running"] >= 15:
            kube.kubectl("delete", "pod", victim, "--wait=false")
            deleted["at"] = time.time()

    started = time.monotonic()
    lines = drive_run(during=delete_once_running)
    states = [line for line in lines if "state" in line]
    assert states[-1]["state"] == "Completed", states[-3:]
    assert "at" in deleted, f"the run ended before an API pod was deleted: {states}"
    assert states[-1]["t"] > deleted["at"], "the pod was deleted mid-run"
    ui = [(line["t"], line["ui"]) for line in lines if "ui" in line]
    after = [(t, s) for t, s in ui if t >= deleted["at"]]
    failures = [(round(t - deleted["at"], 1), s) for t, s in after if s != 200]
    gaps, last_ok = [], deleted["at"]  # the stretches without an answer, from the deletion on
    for t, status in after:
        if status == 200:
            gaps.append(t - last_ok)
            last_ok = t
    gaps.append(after[-1][0] - last_ok if after else float("inf"))
    SEEN["ha"] = {"deleted_pod": victim, "run_seconds": round(time.monotonic() - started),
                  "deleted_after_running_s": round(deleted["at"] - deleted["running"], 1),
                  "run_final": states[-1]["state"], "ui_requests_after_delete": len(after),
                  "ui_failures_after_delete": failures, "longest_ui_gap_s": round(max(gaps), 1),
                  "poll_errors": [line for line in lines if "poll_error" in line]}  # fmt: skip
    assert after and max(gaps) < 10, SEEN["ha"]
    assert len(failures) <= len(after) // 10, SEEN["ha"]
    assert count_rows() == len(FILES) * SAMPLE_ROWS
    # the Deployment replaced the pod: two API pods answer again
    kube.kubectl("rollout", "status", f"deployment/{FULL}-prefect-server", "--timeout=300s", timeout=400)
    after_pods = api_pods()
    assert len(after_pods) == 2 and victim not in after_pods, after_pods


def test_rows_loaded_in_prometheus_equals_the_tables_count(prometheus):
    table = f'ecommerce_etl_rows_loaded{{namespace="{NAMESPACE}", schema="public", table="ecommerce_events"}}'
    expected = count_rows()
    result = wait_query(prometheus, table, lambda r: len(r) == 1 and float(r[0]["value"][1]) == expected)
    SEEN[table] = result[0]["value"][1]
    SEEN["count(*) public.ecommerce_events"] = expected
    files = f'ecommerce_etl_files_loaded{{namespace="{NAMESPACE}", table="ecommerce_events"}}'
    SEEN[files] = wait_query(prometheus, files, lambda r: r and r[0]["value"][1] == str(len(FILES)))[0]["value"][1]


WEB = "mon-web"


def bad_files_server() -> str:
    """An in-cluster web server (the flow image, restricted) with a sample month whose every 20th
    row has a price that is not a number, and a file with a wrong header."""
    script = (f"ecommerce-etl sample --out /tmp/www --rows-per-file {SAMPLE_ROWS} >/dev/null"
              " && cd /tmp/www"
              " && awk -F, 'NR > 1 && NR % 20 == 0 {$7 = \"price?\"} 1' OFS=, 2019-Oct.csv > quarantine.csv"
              " && printf 'time,type\\n2020-01-01 00:00:00 UTC,view\\n' > broken.csv"
              " && exec python3 -m http.server 8080")  # fmt: skip
    objects = web_server_objects(WEB, IMAGE, script)
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    kube.kubectl("wait", "--for=condition=ready", f"pod/{WEB}", "--timeout=300s", timeout=400)
    return f"http://{WEB}.{NAMESPACE}.svc"


def test_a_failed_file_fires_its_alert_in_prometheus(prometheus):
    base = bad_files_server()
    try:
        lines = drive_run({"source": "url", "url": [f"{base}/quarantine.csv", f"{base}/broken.csv"],
                           "table": "url_events"})  # fmt: skip
    finally:
        kube.kubectl("delete", "pod,service", WEB, "--wait=false", check=False)
    assert [line for line in lines if "state" in line][-1]["state"] == "Failed"
    outcome = f'ecommerce_etl_file_outcome{{namespace="{NAMESPACE}", table="url_events", status="failed"}}'
    SEEN[outcome] = [s["metric"]["file"] for s in wait_query(prometheus, outcome, lambda r: len(r) == 1)]
    deadline = time.monotonic() + 120
    while not (alerts := firing(prometheus, "EcommerceEtlFileFailed")):
        assert time.monotonic() < deadline, httpx.get(f"{prometheus}/api/v1/alerts", timeout=30).json()
        time.sleep(3)
    SEEN["ALERTS EcommerceEtlFileFailed"] = [(a["labels"]["file"], a["labels"]["table"], a["state"]) for a in alerts]
    assert [(a["labels"]["file"], a["labels"]["table"]) for a in alerts] == [("broken.csv", "url_events")]
    quarantined = int(kube.psql(FULL, "SELECT count(*) FROM public.url_events_quarantine"))
    by_reason = f'sum(ecommerce_etl_quarantined_rows_by_reason{{namespace="{NAMESPACE}", table="url_events"}})'
    result = wait_query(prometheus, by_reason, lambda r: r and float(r[0]["value"][1]) == quarantined)
    SEEN[by_reason] = result[0]["value"][1]
    SEEN["count(*) public.url_events_quarantine"] = quarantined
    assert quarantined == SAMPLE_ROWS // 20
    high = wait_query(prometheus, 'ALERTS{alertname="EcommerceEtlQuarantineHigh", alertstate="firing"}', bool)
    SEEN["ALERTS EcommerceEtlQuarantineHigh"] = [s["metric"]["file"] for s in high]


def test_every_dashboard_query_returns_series(prometheus):
    board = json.loads(DASHBOARD.read_text())
    targets = [(panel["title"], t["expr"]) for panel in board["panels"] for t in panel.get("targets", [])]
    assert len({title for title, _ in targets}) >= 13, targets  # the board still has its panels
    # every query of every panel returns at least one series (wait_query fails on an empty answer)
    results = [(title, len(wait_query(prometheus, expr.replace("$namespace", NAMESPACE), bool, timeout=120)))
               for title, expr in targets]
    SEEN["dashboard series per query"] = results
