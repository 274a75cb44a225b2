"""The one way chart tests render charts/ecommerce-etl: the real Helm v4 engine
(helm-python-sdk), parsed into plain dicts.

    docs = render({"pgadmin": {"enabled": False}})
    find(docs, "Deployment", "etl-ecommerce-etl-worker")
    base_job_template(docs)
    render_error({"postgresql": {"enabled": False}})  # -> Helm's error text
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import helm_python
import yaml

CHART_DIR = Path(__file__).resolve().parent.parent / "charts" / "ecommerce-etl"
BASE_JOB_TEMPLATE_KEY = "base-job-template.json"
POD_KINDS = {"Pod", "Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "CronJob"}


@functools.lru_cache(maxsize=None)
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART_DIR))


@functools.lru_cache(maxsize=128)
def _render_cached(values_json: str, name: str, namespace: str,
                   api_versions: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...]:
    if api_versions:
        # what `helm template --api-versions` does: Chart.render has no parameter for it, but the
        # library's render options take the list (.Capabilities.APIVersions)
        from helm_python import _native

        opts = {"name": name, "namespace": namespace, "is_install": True, "api_versions": list(api_versions)}
        files = json.loads(_native.call_string("helm_render", _chart()._raw(), values_json, json.dumps(opts)))
    else:
        files = _chart().render(json.loads(values_json), name=name, namespace=namespace, is_install=True)
    return tuple(sorted(files.items()))


def render_files(values: dict | None = None, name: str = "etl", namespace: str = "data",
                 api_versions: tuple[str, ...] = ()) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included if Helm renders it). `api_versions`: the
    extra API versions the cluster serves, e.g. ("monitoring.coreos.com/v1/ServiceMonitor",)."""
    key = json.dumps(values or {}, sort_keys=True)
    return dict(_render_cached(key, name, namespace, tuple(api_versions)))


def render(values: dict | None = None, name: str = "etl", namespace: str = "data",
           api_versions: tuple[str, ...] = (), *, cached: bool = True) -> list[dict]:
    """Every Kubernetes object the chart renders (hooks and test pods included).
    Cached per values; callers get their own deep copy. cached=False: a new run of the Helm
    engine, for tests that compare two renderings of the same values."""
    key = json.dumps(values or {}, sort_keys=True)
    if not cached:
        return _parse(dict(_render_cached.__wrapped__(key, name, namespace, tuple(api_versions))))
    return copy.deepcopy(_parsed(key, name, namespace, tuple(api_versions)))


@functools.lru_cache(maxsize=128)
def _parsed(values_json: str, name: str, namespace: str, api_versions: tuple[str, ...] = ()) -> list[dict]:
    return _parse(render_files(json.loads(values_json), name, namespace, api_versions))


def _parse(files: dict[str, str]) -> list[dict]:
    docs: list[dict] = []
    for path, text in files.items():
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["metadata"]["annotations"].setdefault("test.ecommerce-etl/source", path)
                docs.append(doc)
    return docs


def render_error(values: dict | None = None, name: str = "etl", namespace: str = "data") -> str:
    """The error text of a render expected to fail (schema or _validation.tpl)."""
    try:
        render_files(values, name, namespace)
    except helm_python.HelmError as exc:
        return str(exc)
    raise AssertionError(f"render unexpectedly succeeded for {values!r}")


def source(doc: dict) -> str:
    return doc["metadata"]["annotations"]["test.ecommerce-etl/source"]


def strip_source(doc: dict) -> dict:
    """The object without the test-only source annotation (for schema validation)."""
    doc = copy.deepcopy(doc)
    ann = doc["metadata"]["annotations"]
    ann.pop("test.ecommerce-etl/source", None)
    if not ann:
        del doc["metadata"]["annotations"]
    return doc


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d.get("kind") == kind and d["metadata"].get("name") == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} matches among {names(docs)}"
    return matches[0]


def find_versioned(docs: list[dict], kind: str, base: str) -> dict:
    """A Job or Pod the chart names <base>-<8 hex of chart version and values> (_gitops.tpl)."""
    import re

    matches = [d for d in docs if d.get("kind") == kind and re.fullmatch(re.escape(base) + r"-[0-9a-f]{8}", d["metadata"]["name"])]
    assert len(matches) == 1, f"{kind}/{base}-<hash>: {len(matches)} matches among {names(docs)}"
    return matches[0]


def names(docs: list[dict]) -> list[str]:
    return [f"{d['kind']}/{d['metadata'].get('name')}" for d in docs]


def pod_spec(doc: dict) -> dict | None:
    """The PodSpec inside a workload object, or None."""
    kind = doc.get("kind")
    if kind == "Pod":
        return doc["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in POD_KINDS:
        return doc["spec"]["template"]["spec"]
    return None


def pod_labels(doc: dict) -> dict:
    """The labels of the pods a workload object starts (the object's own for a Pod)."""
    kind = doc.get("kind")
    if kind == "Pod":
        return doc["metadata"]["labels"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return doc["spec"]["template"]["metadata"]["labels"]


def base_job_template(docs: list[dict]) -> dict:
    """The work pool's base job template from the rendered ConfigMap."""
    cms = [d for d in by_kind(docs, "ConfigMap") if BASE_JOB_TEMPLATE_KEY in (d.get("data") or {})]
    assert len(cms) == 1, f"expected one base job template ConfigMap, got {names(cms)}"
    return json.loads(cms[0]["data"][BASE_JOB_TEMPLATE_KEY])


def secret_values(docs: list[dict]) -> dict[str, str]:
    """'<secret>/<key>' -> decoded value, for every rendered Secret."""
    import base64

    out = {}
    for s in by_kind(docs, "Secret"):
        for k, v in (s.get("data") or {}).items():
            out[f"{s['metadata']['name']}/{k}"] = base64.b64decode(v).decode()
        for k, v in (s.get("stringData") or {}).items():
            out[f"{s['metadata']['name']}/{k}"] = v
    return out


ENV_FROM_FILES_DIR = "/etc/ecommerce-etl/env"


def env_from_files(spec: dict, container: dict) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """For a container started through the chart's envFromFiles wrapper (sh -c 'export each file
    of /etc/ecommerce-etl/env ...; exec "$@"' sh CMD...): (CMD, {variable: (secret, key)}).
    Otherwise (its command, {})."""
    command = list(container.get("command") or [])
    if command[:2] != ["sh", "-c"] or ENV_FROM_FILES_DIR not in command[2]:
        return command, {}
    assert command[3] == "sh" and 'exec "$@"' in command[2], command
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
    (volume,) = [v for v in spec.get("volumes") or [] if mounts.get(v["name"]) == ENV_FROM_FILES_DIR]
    variables = {}
    for source in volume["projected"]["sources"]:
        for item in source["secret"]["items"]:
            variables[item["path"]] = (source["secret"]["name"], item["key"])
    return command[4:], variables


def secret_files(spec: dict, container: dict) -> dict[str, tuple[str, str]]:
    """Every file a container sees from a Secret: {path: (secret, key)} (secret and projected volumes)."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    out = {}
    for m in container.get("volumeMounts") or []:
        vol = volumes.get(m["name"], {})  # (a volumeClaimTemplate is not among them)
        sources = ([vol["secret"] | {"name": vol["secret"]["secretName"]}] if "secret" in vol else
                   [s["secret"] for s in vol.get("projected", {}).get("sources", []) if "secret" in s])
        for s in sources:
            for item in s.get("items") or []:
                out[f"{m['mountPath']}/{item['path']}"] = (s["name"], item["key"])
    return out


def secrets_hook_command(docs: list[dict]) -> list[str] | None:
    """argv of the pre-install/pre-upgrade Job that creates the generated Secrets (None: no such Job)."""
    jobs = [d for d in by_kind(docs, "Job") if d["metadata"]["labels"].get("app.kubernetes.io/component") == "secrets"]
    if not jobs:
        return None
    (job,) = jobs
    return pod_spec(job)["containers"][0]["command"]


def run_secrets_hook(docs: list[dict], standin, workdir: Path) -> str:
    """Run the chart's secrets hook program (python -c PROGRAM SPEC, exactly as rendered) with
    this interpreter against a Kubernetes API stand-in; returns its output."""
    import subprocess
    import sys

    command = secrets_hook_command(docs)
    assert command and command[:2] == ["python", "-c"], command
    env = {"PATH": "/usr/bin:/bin", "KUBERNETES_API_URL": standin.url,
           "SERVICE_ACCOUNT_DIR": str(standin.service_account_dir(workdir / "serviceaccount"))}
    done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def generated_secrets(docs: list[dict], namespace: str = "data") -> dict[str, str]:
    """'<secret>/<key>' -> value of every Secret the release has after its secrets hook ran on an
    empty namespace (plus any Secret the chart renders itself)."""
    import tempfile

    from kube_standin import KubeStandIn

    values = secret_values(docs)
    if secrets_hook_command(docs) is None:
        return values
    with KubeStandIn() as standin, tempfile.TemporaryDirectory() as tmp:
        run_secrets_hook(docs, standin, Path(tmp))
        return {**values, **standin.secret_values()}


def lint() -> dict[str, Any]:
    return helm_python.lint(str(CHART_DIR), strict=True)


async def job_manifest_for_flow_run(
    api_url: str, base_job_template: dict, deployment_id, flow_run_id
) -> dict:
    """The batch/v1 Job the kubernetes worker would create for this flow run, built by the
    real prefect-kubernetes code from the base job template and the deployment's job
    variables read back from the Prefect server at api_url."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            deployment = await client.read_deployment(deployment_id)
            flow_run = await client.read_flow_run(flow_run_id)
            flow = await client.read_flow(deployment.flow_id)
        config = await KubernetesWorkerJobConfiguration.from_template_and_values(
            base_job_template, deployment.job_variables or {}
        )
        config.prepare_for_flow_run(flow_run, deployment=deployment, flow=flow)
        return config.job_manifest


def restricted_violations(spec: dict) -> list[str]:
    """Pod Security Standard "restricted" (plus baseline) violations of a PodSpec; [] if compliant."""
    out = []
    psc = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(f"{flag} is set")
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            out.append(f"volume {vol['name']} is a hostPath")
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if not containers:
        out.append("no containers")
    for c in containers:
        csc = c.get("securityContext") or {}
        name = c.get("name")
        if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            out.append(f"{name}: runAsNonRoot is not true")
        if csc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser is 0")
        if csc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        if csc.get("privileged"):
            out.append(f"{name}: privileged")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile is {seccomp!r}")
    return out


def selects(selector: dict, labels: dict) -> bool:
    """Does a Kubernetes LabelSelector select these labels?"""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def ingress_allowed(docs: list[dict], target_labels: dict, source_labels: dict, port: int) -> bool:
    """Would the rendered NetworkPolicies let a same-namespace pod with source_labels reach
    target_labels on port? (No policy selecting the target means allowed.)"""
    policies = [p for p in by_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], target_labels)
                and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not policies:
        return True
    for p in policies:
        for rule in p["spec"].get("ingress") or []:
            ports = [x.get("port") for x in rule.get("ports") or []]
            if ports and port not in ports:
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "podSelector" in peer and "namespaceSelector" not in peer and selects(peer["podSelector"], source_labels):
                    return True
    return False


# --- the value sets every chart test renders --------------------------------------------------------
FULL = "etl-ecommerce-etl"

VALUE_SETS = {
    "default": {},
    "pgadmin-off": {"pgadmin": {"enabled": False}},
    "external-db": {
        "postgresql": {"enabled": False},
        "externalDatabase": {"host": "pg.example.internal", "port": 6432, "existingSecret": "managed-db",
                             "etl": {"username": "loader", "database": "events"}},
    },
    "existing-secrets": {
        "postgresql": {"auth": {"existingSecret": "my-db"}},
        "pgadmin": {"existingSecret": "my-pgadmin"},
        "kaggle": {"existingSecret": "kaggle-creds", "usernameKey": "user", "keyKey": "token"},
    },
    "networkpolicy-off": {"networkPolicy": {"enabled": False}},
    "everything-set": {
        "image": {"repository": "registry.example:5000/team/ecommerce-etl", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "commonLabels": {"team": "data"},
        "postgresql": {"persistence": {"storageClass": "fast", "size": "20Gi"},
                       "nodeSelector": {"disk": "ssd"},
                       "tolerations": [{"key": "db", "operator": "Exists", "effect": "NoSchedule"}]},
        "worker": {"replicas": 2, "clusterUid": "my-cluster",
                   "extraEnv": [{"name": "PREFECT_LOGGING_LEVEL", "value": "DEBUG"}]},
        "flowRun": {"extraEnv": [{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}],
                    "tmpSizeLimit": "20Gi"},
        "deployments": {"schedule": "0 3 * * *", "timezone": "Europe/Berlin", "sampleRows": 5000},
        "networkPolicy": {"serverExtraFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
                          "pgadminExtraFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}]},
        "kaggle": {"existingSecret": "kaggle-creds"},
    },
    # The production options: an Ingress with TLS and a relative API URL, basic auth (generated),
    # retention, alerts to a webhook, flow-run placement, a concurrency limit, images by digest.
    "production": {
        "image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
        "postgresql": {"image": {"digest": "sha256:" + "b" * 64, "pullPolicy": "Always"},
                       "bulkLoadTuning": {"enabled": True, "maxWalSize": "4GB"}},
        "pgadmin": {"image": {"digest": "sha256:" + "c" * 64, "pullPolicy": "Always"}},
        "prefectServer": {
            "image": {"digest": "sha256:" + "d" * 64, "pullPolicy": "Always"},
            "uiApiUrl": "/api",
            "basicAuth": {"enabled": True, "username": "ops"},
            "retention": {"flowRunDays": 14, "eventDays": 3},
            "ingress": {"enabled": True, "className": "nginx", "host": "prefect.shop.example",
                        "tls": {"secretName": "prefect-tls"},
                        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"}},
        },
        "alerts": {"pendingMinutes": 5, "runningMinutes": 90, "quarantineRatio": 0.2,
                   "webhook": {"existingSecret": "alert-hook", "key": "slack-url"}},
        "flowRun": {"nodeSelector": {"pool": "etl"},
                    "tolerations": [{"key": "etl", "operator": "Exists", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
                    "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}},
        "deployments": {"concurrencyLimit": 3},
        "networkPolicy": {"serverExtraFrom": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}]},
    },
    "basic-auth-existing-secret": {"prefectServer": {"basicAuth": {"enabled": True, "existingSecret": "prefect-auth"}}},
    "alerts-off": {"alerts": {"enabled": False}, "prefectServer": {"retention": {"flowRunDays": 0}}},
}
