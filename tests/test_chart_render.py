"""T3: the chart rendered by the real Helm v4 engine, checked object by object."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml

from chart_render import (
    CHART_DIR,
    base_job_template,
    by_kind,
    find,
    ingress_allowed,
    lint,
    pod_spec,
    render,
    render_error,
    render_files,
    restricted_violations,
    secret_values,
    source,
    strip_source,
)

KUBE_VERSIONS = ["1.31", "1.34"]
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
}
SETS = list(VALUE_SETS)


def docs_for(name: str) -> list[dict]:
    return render(VALUE_SETS[name])


def test_helm_lint_clean():
    report = lint()
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("values_name", SETS)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_validates_against_kubernetes_schema(values_name, kube_version):
    docs = docs_for(values_name)
    assert len(docs) >= 15
    for doc in docs:
        try:
            kubernetes_validate.validate(strip_source(doc), kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{source(doc)} {doc['kind']}/{doc['metadata']['name']} invalid for {kube_version}: {exc}")


@pytest.mark.parametrize("values_name", SETS)
def test_every_pod_spec_is_restricted(values_name):
    specs = [(f"{d['kind']}/{d['metadata']['name']}", pod_spec(d)) for d in docs_for(values_name)]
    specs = [(n, s) for n, s in specs if s is not None]
    # ...and the flow-run pod as written in the base job template.
    tmpl = base_job_template(docs_for(values_name))
    specs.append(("base-job-template", tmpl["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]))
    assert len(specs) >= 6
    for name, spec in specs:
        assert restricted_violations(spec) == [], name


@pytest.mark.parametrize("values_name", SETS)
def test_read_only_root_filesystem_except_pgadmin(values_name):
    for doc in docs_for(values_name):
        spec = pod_spec(doc)
        if spec is None:
            continue
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            expected = c["name"] != "pgadmin"  # its entrypoint writes config_distro.py under /pgadmin4
            assert c["securityContext"]["readOnlyRootFilesystem"] is expected, (doc["metadata"]["name"], c["name"])


@pytest.mark.parametrize("values_name", SETS)
def test_workloads_have_resources_and_probes(values_name):
    workloads = [d for d in docs_for(values_name) if d["kind"] in ("Deployment", "StatefulSet")]
    assert workloads
    for doc in workloads:
        for c in pod_spec(doc)["containers"]:
            where = f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            res = c.get("resources") or {}
            assert res.get("requests", {}).get("cpu") and res["requests"].get("memory"), where
            assert res.get("limits", {}).get("memory"), where
            assert c.get("livenessProbe") and c.get("readinessProbe"), where
    # Pods that are not long-running still carry resources.
    for doc in docs_for(values_name):
        spec = pod_spec(doc)
        if spec is not None:
            for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
                assert c.get("resources", {}).get("limits"), (doc["metadata"]["name"], c["name"])


SECRETISH = re.compile(r"(?i)(password|passwd|secret|token|api_?key|_key)$")


def _walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
        if isinstance(node.get("name"), str) and "value" in node:
            yield (f"{path}[env {node['name']}]", node)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield (path, node)


@pytest.mark.parametrize("values_name", SETS)
def test_no_password_outside_secrets(values_name):
    docs = docs_for(values_name)
    secrets = secret_values(docs)
    generated = {k: v for k, v in secrets.items() if k.endswith("-password")}
    if values_name in ("default", "pgadmin-off", "networkpolicy-off"):
        assert generated, "the chart should generate passwords"
        assert all(len(v) >= 32 for v in generated.values())
    if values_name in ("existing-secrets",):
        assert not by_kind(docs, "Secret"), "existingSecret must suppress the generated Secrets"
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        # Embedded JSON (the base job template) is scanned as data too.
        extra = [json.loads(v) for v in (doc.get("data") or {}).values() if v.lstrip().startswith("{")]
        for path, value in [*_walk(doc), *(p for e in extra for p in _walk(e))]:
            if isinstance(value, dict):  # an env entry {name, value}
                assert not (SECRETISH.search(value["name"]) and value.get("value")), f"{where}{path}"
                continue
            if isinstance(value, str):
                for key, secret in generated.items():
                    assert secret not in value, f"{where}{path} contains the password {key}"
                if SECRETISH.search(path.rsplit(".", 1)[-1]) and value:
                    pytest.fail(f"{where}{path} has a literal value for a secret-like key")


def test_connection_url_matches_generated_prefect_password():
    secrets = secret_values(render())
    url = secrets[f"{FULL}-db/prefect-connection-url"]
    pw = secrets[f"{FULL}-db/prefect-password"]
    assert url == f"postgresql+asyncpg://prefect:{pw}@{FULL}-postgresql:5432/prefect"
    assert len(set(v for k, v in secrets.items() if k.endswith("-password"))) == 4, "passwords must differ"


def test_secrets_reuse_live_values_via_lookup():
    text = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret"' in text and "randAlphaNum" in text
    for path in ("postgresql/secret.yaml", "pgadmin/secret.yaml"):
        assert 'include "ecommerce-etl.password"' in (CHART_DIR / "templates" / path).read_text()


@pytest.mark.parametrize("values_name", SETS)
def test_recommended_labels_everywhere(values_name):
    for doc in docs_for(values_name):
        labels = doc["metadata"].get("labels") or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/version", "helm.sh/chart"):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"
        spec = pod_spec(doc)
        if spec is not None and doc["kind"] != "Pod":
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            sel = doc["spec"].get("selector", {}).get("matchLabels")
            if sel:
                assert all(pod_labels.get(k) == v for k, v in sel.items())


def test_objects_rendered_per_values_set():
    counts = {name: len(docs_for(name)) for name in SETS}
    assert counts["default"] == 24, counts
    assert counts["pgadmin-off"] == counts["default"] - 4  # Deployment, Service, ConfigMap, Secret
    assert counts["external-db"] == counts["default"] - 6  # StatefulSet, 2 Services, initdb, Secret, NP; pgAdmin stays
    assert counts["networkpolicy-off"] == counts["default"] - 3


def test_external_database_wiring():
    docs = render(VALUE_SETS["external-db"])
    assert not [d for d in docs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "postgresql"]
    env = {e["name"]: e for e in base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]
           ["spec"]["containers"][0]["env"]}
    assert env["PGHOST"]["value"] == "pg.example.internal" and env["PGPORT"]["value"] == "6432"
    assert env["PGUSER"]["value"] == "loader" and env["PGDATABASE"]["value"] == "events"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "managed-db", "key": "etl-password"}
    server = find(docs, "Deployment", f"{FULL}-prefect-server")
    url = {e["name"]: e for e in pod_spec(server)["containers"][0]["env"]}["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "managed-db", "key": "prefect-connection-url"}
    servers = json.loads(find(docs, "ConfigMap", f"{FULL}-pgadmin")["data"]["servers.json"])
    assert servers["Servers"]["1"]["Host"] == "pg.example.internal" and servers["Servers"]["1"]["Port"] == 6432


def test_flow_runtime_env_in_base_job_template():
    docs = render(VALUE_SETS["existing-secrets"])
    container = base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["PGHOST"]["value"] == f"{FULL}-postgresql"
    assert env["PGPORT"]["value"] == "5432" and env["PGDATABASE"]["value"] == "ecommerce" and env["PGUSER"]["value"] == "etl"
    assert env["PGPASSWORD"] == {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "my-db", "key": "etl-password"}}}
    assert env["ETL_TABLE"]["value"] == "ecommerce_events" and env["ETL_DATA_DIR"]["value"] == "/tmp/data"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"]["value"] == "false"
    assert env["KAGGLE_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "kaggle-creds", "key": "user", "optional": True}
    assert env["KAGGLE_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "kaggle-creds", "key": "token", "optional": True}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    # No Kaggle variables at all without a Secret.
    default_env = base_job_template(render())["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not [e for e in default_env if e["name"].startswith("KAGGLE")]


def test_base_job_template_keeps_prefect_kubernetes_variables():
    """Our template is the default prefect-kubernetes one with chart defaults (minus
    cluster_config: the worker runs in-cluster)."""
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    ours = base_job_template(render({"image": {"tag": "9.9.9"}, "flowRun": {"tmpSizeLimit": "3Gi"}}, namespace="shop"))
    assert set(ours["variables"]["properties"]) == set(default["variables"]["properties"]) - {"cluster_config"}
    assert set(ours["job_configuration"]) == set(default["job_configuration"]) - {"cluster_config"}
    props = ours["variables"]["properties"]
    assert props["image"]["default"] == "ecommerce-etl:9.9.9"
    assert props["image_pull_policy"]["default"] == "IfNotPresent"
    assert props["namespace"]["default"] == "shop"
    assert props["service_account_name"]["default"] == f"{FULL}-flow-run"
    assert props["finished_job_ttl"]["default"] == 86400 and props["backoff_limit"]["default"] == 0
    assert (props["cpu_request"]["default"], props["memory_limit"]["default"]) == ("500m", "4Gi")
    jc = ours["job_configuration"]
    assert jc["env"] == "{{ env }}" and jc["command"] == "{{ command }}"
    pod = jc["job_manifest"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "3Gi"}}]
    assert pod["automountServiceAccountToken"] is False


def test_worker_deployment():
    docs = render()
    worker = find(docs, "Deployment", f"{FULL}-worker")
    spec = pod_spec(worker)
    c = spec["containers"][0]
    assert c["image"] == "ecommerce-etl:0.1.0" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"][:5] == ["prefect", "worker", "start", "--type", "kubernetes"]
    assert c["command"][c["command"].index("--pool") + 1] == "kubernetes"
    assert c["command"][c["command"].index("--base-job-template") + 1] == "/etc/ecommerce-etl/base-job-template.json"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PREFECT_API_URL"] == f"http://{FULL}-prefect-server:4200/api"
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_CLUSTER_UID"]
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == "data"
    assert env["PREFECT_HOME"] == "/tmp/prefect"
    assert spec["serviceAccountName"] == f"{FULL}-worker"
    assert [v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v] == [f"{FULL}-base-job-template"]
    role = find(docs, "Role", f"{FULL}-worker")
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete", "patch"]},
        {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list", "watch"]},
    ]
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    binding = find(docs, "RoleBinding", f"{FULL}-worker")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULL}-worker", "namespace": "data"}]
    flow_sa = find(docs, "ServiceAccount", f"{FULL}-flow-run")
    assert flow_sa["automountServiceAccountToken"] is False
    assert not [b for b in by_kind(docs, "RoleBinding") if any(s["name"] == f"{FULL}-flow-run" for s in b["subjects"])]


def test_prefect_server_deployment():
    docs = render()
    c = pod_spec(find(docs, "Deployment", f"{FULL}-prefect-server"))["containers"][0]
    assert c["image"] == "prefecthq/prefect:3.9.1-python3.11"
    assert c["command"] == ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"]
    env = {e["name"]: e for e in c["env"]}
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULL}-db", "key": "prefect-connection-url"}
    assert env["PREFECT_UI_API_URL"]["value"] == "http://localhost:4200/api"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"]["value"] == "false"
    # Writable copy of the UI bundle (the root filesystem is read-only).
    assert env["PREFECT_SERVER_UI_STATIC_DIRECTORY"]["value"].startswith("/tmp/")
    assert c["livenessProbe"]["httpGet"]["path"] == "/api/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/ready"


def test_postgres_statefulset_and_init_script():
    docs = render()
    sts = find(docs, "StatefulSet", f"{FULL}-postgresql")
    spec = pod_spec(sts)
    assert spec["securityContext"]["runAsUser"] == 999 and spec["securityContext"]["fsGroup"] == 999
    c = spec["containers"][0]
    assert c["image"] == "postgres:18.1-bookworm"
    assert c["livenessProbe"]["exec"]["command"][0] == "pg_isready"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert find(docs, "Service", f"{FULL}-postgresql-hl")["spec"]["clusterIP"] == "None"
    script = find(docs, "ConfigMap", f"{FULL}-postgresql-initdb")["data"]["10-ecommerce-etl.sh"]
    assert "REVOKE CONNECT ON DATABASE :\"etl_db\" FROM PUBLIC" in script
    assert "$ETL_DB_PASSWORD" in script and "$PREFECT_DB_PASSWORD" in script


def test_deploy_hook_job():
    docs = render(VALUE_SETS["everything-set"])
    job = find(docs, "Job", f"{FULL}-deploy")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    spec = pod_spec(job)
    c = spec["containers"][0]
    assert c["image"] == "registry.example:5000/team/ecommerce-etl:1.2.3" and c["imagePullPolicy"] == "Always"
    assert c["command"] == [
        "ecommerce-etl", "deploy", "--pool", "kubernetes",
        "--base-job-template", "/etc/ecommerce-etl/base-job-template.json",
        "--schedule", "0 3 * * *", "--timezone", "Europe/Berlin", "--max-parallel-files", "3",
        "--sample-rows", "5000",
    ]
    assert {e["name"]: e["value"] for e in c["env"]}["PREFECT_API_URL"] == f"http://{FULL}-prefect-server:4200/api"
    assert spec["initContainers"][0]["name"] == "wait-for-prefect-server"
    # The hook mounts the very ConfigMap the worker mounts.
    worker = pod_spec(find(docs, "Deployment", f"{FULL}-worker"))
    assert [v for v in spec["volumes"] if "configMap" in v] == [v for v in worker["volumes"] if "configMap" in v]
    plain = pod_spec(find(render(), "Job", f"{FULL}-deploy"))["containers"][0]["command"]
    assert "--schedule" not in plain and "--sample-rows" not in plain


def test_helm_test_pods():
    tests = [d for d in render() if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    assert len(tests) == 3
    cmds = {d["metadata"]["name"]: pod_spec(d)["containers"][0]["command"] for d in tests}
    assert cmds[f"{FULL}-test-work-pool"] == ["prefect", "work-pool", "inspect", "kubernetes"]
    assert cmds[f"{FULL}-test-db-login"][:2] == ["sh", "-c"] and "psql --no-psqlrc" in cmds[f"{FULL}-test-db-login"][2]
    assert cmds[f"{FULL}-test-server"][-1] == f"http://{FULL}-prefect-server:4200/api/health"


def test_prefect_server_waits_for_its_database():
    """Without it the server crash-loops while a fresh Postgres initialises (seen on kind)."""
    for values, host in (({}, f"{FULL}-postgresql"),
                         ({"postgresql": {"enabled": False},
                           "externalDatabase": {"host": "db.example.com", "existingSecret": "ext"}}, "db.example.com")):
        server = next(d for d in render(values) if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{FULL}-prefect-server")
        (init,) = pod_spec(server)["initContainers"]
        assert init["name"] == "wait-for-postgresql" and "pg_isready" in init["command"][2]
        assert init["command"][3:] == [host, "5432"]


def _pod_labels(docs, component):
    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        labels = d["metadata"]["labels"] if d["kind"] == "Pod" else d["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") == component:
            return labels
    raise AssertionError(component)


def test_network_policies_allow_only_the_intended_paths():
    docs = render()
    flow_run = base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]["metadata"]["labels"]
    # Prefect overwrites app.kubernetes.io/name on flow-run pods; the policies must not depend on it.
    flow_run = {**flow_run, "app.kubernetes.io/name": "sample"}
    pods = {c: _pod_labels(docs, c) for c in ("postgresql", "pgadmin", "prefect-server", "worker", "deploy-hook", "test")}
    pods["flow-run"] = flow_run
    stranger = {"app": "something-else"}
    other_release = {**pods["prefect-server"], "app.kubernetes.io/instance": "other"}
    pg, srv = pods["postgresql"], pods["prefect-server"]
    for allowed in ("prefect-server", "flow-run", "deploy-hook", "pgadmin", "test"):
        assert ingress_allowed(docs, pg, pods[allowed], 5432), allowed
    for denied in ("worker",):
        assert not ingress_allowed(docs, pg, pods[denied], 5432), denied
    assert not ingress_allowed(docs, pg, stranger, 5432) and not ingress_allowed(docs, pg, other_release, 5432)
    for allowed in ("worker", "flow-run", "deploy-hook", "test"):
        assert ingress_allowed(docs, srv, pods[allowed], 4200), allowed
    assert not ingress_allowed(docs, srv, stranger, 4200)
    assert not ingress_allowed(docs, srv, pods["pgadmin"], 4200)
    for target in ("pgadmin", "worker", "flow-run"):
        assert not ingress_allowed(docs, pods[target], stranger, 8080), target
    assert ingress_allowed(render({"networkPolicy": {"enabled": False}}), pg, stranger, 5432)


VALIDATION_CASES = {
    "no-external-host": ({"postgresql": {"enabled": False}, "externalDatabase": {"existingSecret": "s"}},
                         ["postgresql.enabled=false requires externalDatabase.host"]),
    "no-external-secret": ({"postgresql": {"enabled": False}, "externalDatabase": {"host": "db"}},
                           ["postgresql.enabled=false requires externalDatabase.existingSecret"]),
    "both-secrets": ({"postgresql": {"enabled": False, "auth": {"existingSecret": "a"}},
                      "externalDatabase": {"host": "db", "existingSecret": "b"}},
                     ["postgresql.auth.existingSecret is set but postgresql.enabled=false"]),
    "host-with-in-chart-db": ({"externalDatabase": {"host": "db"}},
                              ["externalDatabase.host is set but postgresql.enabled=true"]),
    "external-secret-with-in-chart-db": ({"externalDatabase": {"existingSecret": "b"}},
                                         ["externalDatabase.existingSecret is set but postgresql.enabled=true"]),
    "same-database": ({"postgresql": {"auth": {"etl": {"username": "etl", "database": "prefect"}}}},
                      ["postgresql.auth.prefect.database and postgresql.auth.etl.database must differ"]),
    "same-role": ({"postgresql": {"auth": {"etl": {"username": "prefect", "database": "ecommerce"}}}},
                  ["postgresql.auth.prefect.username and postgresql.auth.etl.username must differ"]),
    "pgadmin-secret-without-pgadmin": ({"pgadmin": {"enabled": False, "existingSecret": "x"}},
                                       ["pgadmin.existingSecret is set but pgadmin.enabled=false"]),
    "timezone-without-schedule": ({"deployments": {"timezone": "Europe/Berlin"}},
                                  ["deployments.timezone is set but deployments.schedule is empty"]),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_validation_tpl_gives_clear_messages(case):
    values, expected = VALIDATION_CASES[case]
    error = render_error(values)
    assert "Invalid values for ecommerce-etl" in error
    for message in expected:
        assert message in error, error


def test_validation_reports_every_problem_at_once():
    error = render_error({"postgresql": {"enabled": False}})
    assert "externalDatabase.host" in error and "externalDatabase.existingSecret" in error


def test_notes():
    notes = render_files()["ecommerce-etl/templates/NOTES.txt"]
    assert f"port-forward svc/{FULL}-prefect-server 4200:4200" in notes
    assert f"port-forward svc/{FULL}-pgadmin 8080:80" in notes
    assert "PREFECT_API_URL=http://localhost:4200/api" in notes
    assert "prefect deployment run 'ecommerce-etl/sample'" in notes
    assert f"get secret {FULL}-db -o jsonpath='{{.data.etl-password}}' | base64 -d" in notes
    assert f"get secret {FULL}-pgadmin -o jsonpath='{{.data.pgadmin-password}}' | base64 -d" in notes
    assert "-pgadmin" not in render_files({"pgadmin": {"enabled": False}})["ecommerce-etl/templates/NOTES.txt"]


def test_readme_documents_every_value():
    readme = (CHART_DIR / "README.md").read_text()
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    table_keys = set(re.findall(r"^\| `([^`]+)` \|", readme.split("## Values", 1)[1], flags=re.M))

    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict) and v and k not in ("resources", "nodeSelector", "affinity", "commonLabels"):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    for key in values:
        assert f"`{key}" in readme, f"top-level value {key} missing from README"
    missing = set(leaves(values)) - table_keys
    assert not missing, f"values not in the README table: {sorted(missing)}"
    stale = table_keys - set(leaves(values))
    assert not stale, f"README documents values that do not exist: {sorted(stale)}"


def test_chart_metadata_and_layout():
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("ecommerce-etl", "0.1.0", "0.1.0")
    assert "dependencies" not in chart
    for folder in ("postgresql", "pgadmin", "prefect-server", "worker", "flow-run", "deploy-hook", "tests",
                   "network-policies"):
        assert (CHART_DIR / "templates" / folder).is_dir(), folder
    for f in ("_helpers.tpl", "_validation.tpl", "NOTES.txt"):
        assert (CHART_DIR / "templates" / f).is_file(), f
    images = {c["image"] for d in render() if pod_spec(d) for c in pod_spec(d)["containers"]}
    assert not [i for i in images if "bitnami" in i or i.endswith(":latest") or ":" not in i], images


@pytest.mark.parametrize("flow_run, fan_out_env, limit", [
    ({}, "load-file/load-file", "3"),
    ({"maxParallelFiles": 5}, "load-file/load-file", "5"),
    ({"fanOut": False, "maxParallelFiles": 2}, None, "2"),
])
def test_fan_out_values_reach_the_flow_run_env_and_the_hook(flow_run, fan_out_env, limit):
    from flows.deploy import LOAD_FILE_DEPLOYMENT

    docs = render({"flowRun": flow_run})
    pod = base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env.get("ETL_FILE_DEPLOYMENT") == fan_out_env and env["ETL_MAX_PARALLEL_FILES"] == limit
    assert fan_out_env in (None, LOAD_FILE_DEPLOYMENT)  # the deployment `ecommerce-etl deploy` registers
    command = find(docs, "Job", f"{FULL}-deploy")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--max-parallel-files") + 1] == limit
