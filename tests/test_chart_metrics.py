"""T3: the chart's monitoring objects through the real Helm engine: the exporter, the ServiceMonitor
and PrometheusRule (rendered only with their CRDs, or forced; validated against the CRDs' own schemas
from the Prometheus Operator's Go module), the NetworkPolicies that let the scraper in, checkov."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from chart_render import (
    by_kind,
    env_from_files,
    find,
    generated_secrets,
    pod_spec,
    render,
    restricted_violations,
    secret_files,
    selects,
    strip_source,
)
from checkov_scan import assert_value_sets_clean
from helpers import REPO

pytestmark = pytest.mark.chart

SM, PR = "monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"
FULL = "etl-ecommerce-etl"
ON = {"metrics": {"enabled": True}}
FORCED = {"metrics": {"enabled": True, "serviceMonitor": {"force": True}, "prometheusRule": {"force": True}}}

# value sets whose monitoring objects are validated (CRD schemas, Kubernetes schemas, checkov)
VALUE_SETS = {
    "forced": FORCED,
    "basic-auth": {**FORCED, "prefectServer": {"basicAuth": {"enabled": True}}},
    "everything": {
        "metrics": {
            "enabled": True,
            "port": 9500,
            "staleAfter": "2d",
            "exporter": {"cacheSeconds": 30, "eventsLookbackHours": 48, "nodeSelector": {"disk": "ssd"}},
            "serviceMonitor": {"force": True, "interval": "1m", "scrapeTimeout": "50s", "labels": {"release": "kps"}},
            "prometheusRule": {
                "force": True,
                "labels": {"release": "kps"},
                "alertLabels": {"team": "data"},
                "runsWaitingFor": "1h",
                "quarantineRatio": 0.1,
            },
            "dashboard": {"labels": {"grafana_dashboard": "1", "team": "data"}},
            "networkPolicy": {"namespace": "", "podLabels": None},
        },
        "prefectServer": {"basicAuth": {"enabled": True, "existingSecret": "prefect-auth"}},
        "image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
    },
    "external-db": {
        **FORCED,
        "postgresql": {"enabled": False},
        "externalDatabase": {"host": "pg.example", "existingSecret": "managed-db"},
    },
}


def kinds(docs: list[dict]) -> set[str]:
    return {d["kind"] for d in docs if d["kind"] in ("ServiceMonitor", "PrometheusRule")}


# --- gating ------------------------------------------------------------------------------------
GATES = {
    "metrics-off-crds-present": ({}, (SM, PR), set()),
    "no-crds": (ON, (), set()),
    "servicemonitor-crd-only": (ON, (SM,), {"ServiceMonitor"}),
    "both-crds": (ON, (SM, PR), {"ServiceMonitor", "PrometheusRule"}),
    "servicemonitor-switched-off": (
        {"metrics": {"enabled": True, "serviceMonitor": {"enabled": False}}},
        (SM, PR),
        {"PrometheusRule"},
    ),
    "forced-without-crds": (FORCED, (), {"ServiceMonitor", "PrometheusRule"}),
    "forced-but-metrics-off": ({"metrics": {**FORCED["metrics"], "enabled": False}}, (), set()),
}


@pytest.mark.parametrize("case", list(GATES))
def test_operator_objects_render_only_with_their_crds_or_when_forced(case):
    values, api_versions, expected = GATES[case]
    assert kinds(render(values, api_versions=api_versions)) == expected


def test_metrics_off_renders_nothing_of_monitoring():
    docs = render()
    assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "metrics"]
    server = find(docs, "Deployment", f"{FULL}-prefect-server")
    env = {e["name"] for e in pod_spec(server)["containers"][0]["env"]}
    assert "PREFECT_SERVER_METRICS_ENABLED" not in env
    on = render(ON)
    env = {
        e["name"]: e.get("value")
        for e in pod_spec(find(on, "Deployment", f"{FULL}-prefect-server"))["containers"][0]["env"]
    }
    assert env["PREFECT_SERVER_METRICS_ENABLED"] == "true"


# --- the CRDs' own schemas, from the Prometheus Operator's Go module ---------------------------
def _strict(node):
    """An openAPIV3Schema as a JSON Schema that refuses unknown fields, as `kubectl apply` with
    field validation would (the API server prunes them silently otherwise)."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _strict(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    return node


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.Draft7Validator]:
    done = subprocess.run(
        [str(REPO / "scripts" / "prometheus-tools.sh"), "crds"], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        pytest.skip(f"the Prometheus Operator's CRDs are not available: {done.stderr.strip()}")
    folder = Path(done.stdout.strip())
    out = {}
    for kind, file in (("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules")):
        crd = yaml.safe_load((folder / f"monitoring.coreos.com_{file}.yaml").read_text())
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        assert version["served"] and version["storage"]
        out[kind] = jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))
    return out


@pytest.mark.parametrize("values_name", list(VALUE_SETS))
def test_operator_objects_validate_against_the_crd_schemas(crd_validators, values_name):
    docs = [strip_source(d) for d in render(VALUE_SETS[values_name])]
    found = [d for d in docs if d["kind"] in crd_validators]
    assert {d["kind"] for d in found} == {"ServiceMonitor", "PrometheusRule"}
    for doc in found:
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validators[doc["kind"]].iter_errors(doc)
        ]
        assert errors == [], f"{doc['kind']}: {errors}"


def test_the_crd_validation_refuses_what_the_api_server_would(crd_validators):
    docs = [strip_source(d) for d in render(FORCED)]
    monitor = copy.deepcopy(next(d for d in docs if d["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    assert not crd_validators["ServiceMonitor"].is_valid(monitor)
    monitor = copy.deepcopy(next(d for d in docs if d["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "half a minute"
    assert not crd_validators["ServiceMonitor"].is_valid(monitor)
    rule = copy.deepcopy(next(d for d in docs if d["kind"] == "PrometheusRule"))
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    assert not crd_validators["PrometheusRule"].is_valid(rule)


# --- the other objects: Kubernetes schemas, Pod Security, wiring -------------------------------
@pytest.mark.parametrize("values_name", list(VALUE_SETS))
@pytest.mark.parametrize("kube_version", ["1.31", "1.34"])
def test_monitoring_objects_validate_against_kubernetes_schemas(values_name, kube_version):
    for doc in render(VALUE_SETS[values_name]):
        if doc["kind"] in ("ServiceMonitor", "PrometheusRule"):
            continue
        kubernetes_validate.validate(strip_source(doc), kube_version, strict=True)


@pytest.mark.parametrize("values_name", list(VALUE_SETS))
def test_exporter_pod_is_restricted_and_reads_secrets_as_files(values_name):
    docs = render(VALUE_SETS[values_name])
    exporter = find(docs, "Deployment", f"{FULL}-metrics")
    spec = pod_spec(exporter)
    assert restricted_violations(spec) == []
    (container,) = spec["containers"]
    assert spec["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [e for e in container["env"] if "valueFrom" in e], "no secret in the environment"
    env = {e["name"]: e["value"] for e in container["env"]}
    files = secret_files(spec, container)
    assert files[env["PGPASSWORD_FILE"]][1] == "etl-password"
    command, from_files = env_from_files(spec, container)
    assert command[:2] == ["ecommerce-etl", "metrics"]
    basic_auth = VALUE_SETS[values_name].get("prefectServer", {}).get("basicAuth", {}).get("enabled")
    assert ("PREFECT_API_AUTH_STRING" in from_files) == bool(basic_auth)
    port = VALUE_SETS[values_name]["metrics"].get("port", 9464)
    assert command[command.index("--port") + 1] == str(port)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = find(docs, "Service", f"{FULL}-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]
    assert selects(
        {"matchLabels": service["spec"]["selector"]}, spec and exporter["spec"]["template"]["metadata"]["labels"]
    )


def test_servicemonitor_scrapes_the_exporter_and_the_server_with_credentials_when_auth_is_on():
    docs = render(VALUE_SETS["basic-auth"])
    (monitor,) = by_kind(docs, "ServiceMonitor")
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert endpoints["metrics"]["path"] == "/metrics" and "basicAuth" not in endpoints["metrics"]
    server = endpoints["http"]
    assert server["path"] == "/api/metrics"
    secret = f"{FULL}-basic-auth"
    assert server["basicAuth"] == {
        "username": {"name": secret, "key": "username"},
        "password": {"name": secret, "key": "password"},
    }
    # the generated Secret has those keys, consistent with the auth string the server checks
    values = generated_secrets(docs)
    assert values[f"{secret}/auth-string"] == f"{values[f'{secret}/username']}:{values[f'{secret}/password']}"
    # the ServiceMonitor selects exactly the exporter's and the server's Services
    services = {s["metadata"]["name"]: s["metadata"]["labels"] for s in by_kind(docs, "Service")}
    selected = {name for name, labels in services.items() if selects(monitor["spec"]["selector"], labels)}
    assert selected == {f"{FULL}-metrics", f"{FULL}-prefect-server"}
    assert (
        "basicAuth"
        not in {e["port"]: e for e in by_kind(render(FORCED), "ServiceMonitor")[0]["spec"]["endpoints"]}["http"]
    )


def test_rules_select_this_release_by_namespace_and_job():
    docs = render(FORCED, namespace="shop")
    (rule,) = by_kind(docs, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    services = {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    for expr in exprs:
        assert 'namespace="shop"' in expr, expr
        for job in __import__("re").findall(r'job="([^"]+)"', expr):
            assert job in services, (job, expr)
    claims = {f"data-{s['metadata']['name']}-0" for s in by_kind(docs, "StatefulSet")}
    assert any(f'persistentvolumeclaim="{c}"' in e for c in claims for e in exprs)


# --- NetworkPolicies: the scraper gets in, nobody else does -------------------------------------
def reaches(
    docs, target: dict, source_namespace: str, source: dict, port: int, release_namespace: str = "data"
) -> bool:
    """Would the rendered policies admit `source` (a pod in source_namespace) to `target` (a pod of
    the release) on `port`? Namespace-aware: a peer with only a podSelector means the release's own
    namespace; a namespaceSelector is matched on kubernetes.io/metadata.name."""
    ns_labels = {"kubernetes.io/metadata.name": source_namespace}
    policies = [p for p in by_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], target)]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            if rule.get("ports") and port not in [p.get("port") for p in rule["ports"]]:
                continue
            for peer in rule.get("from") or [{}]:
                if "namespaceSelector" in peer:
                    ok = selects(peer["namespaceSelector"], ns_labels)
                else:
                    ok = source_namespace == release_namespace
                if ok and selects(peer.get("podSelector") or {}, source):
                    return True
    return False


def _labels(docs, component: str) -> dict:
    for d in docs:
        if (
            d["kind"] in ("Deployment", "StatefulSet")
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
        ):
            return d["spec"]["template"]["metadata"]["labels"]
    raise AssertionError(component)


def test_network_policies_let_the_scraper_and_the_exporter_in_and_nobody_else():
    docs = render(FORCED)
    exporter, server, pg, worker = (_labels(docs, c) for c in ("metrics", "prefect-server", "postgresql", "worker"))
    prometheus = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "kps"}
    assert reaches(docs, exporter, "monitoring", prometheus, 9464)
    assert reaches(docs, server, "monitoring", prometheus, 4200)
    assert not reaches(docs, pg, "monitoring", prometheus, 5432)
    assert not reaches(docs, exporter, "monitoring", {"app": "curl"}, 9464), "another pod of that namespace"
    assert not reaches(docs, exporter, "elsewhere", prometheus, 9464), "a Prometheus-labelled pod elsewhere"
    assert not reaches(docs, exporter, "data", worker, 9464)
    assert reaches(docs, pg, "data", exporter, 5432) and reaches(docs, server, "data", exporter, 4200)
    # the chart's other paths are unchanged: the worker still does not reach PostgreSQL
    assert not reaches(docs, pg, "data", worker, 5432) and reaches(docs, server, "data", worker, 4200)
    # an empty namespace means the release's own; podLabels null (Helm drops the default map) any pod of it
    same = render({"metrics": {"enabled": True, "networkPolicy": {"namespace": "", "podLabels": None}}})
    assert reaches(same, exporter, "data", {"app": "vmagent"}, 9464)
    assert not reaches(same, exporter, "monitoring", prometheus, 9464)


# --- checkov -------------------------------------------------------------------------------------
def test_checkov_reports_no_failed_check_on_the_monitoring_value_sets(tmp_path):
    for name, report in assert_value_sets_clean(VALUE_SETS, tmp_path).items():
        assert f"Deployment.data.{FULL}-metrics" in report["resources"], name
