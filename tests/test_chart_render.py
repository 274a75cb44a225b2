"""T3: the chart rendered by the real Helm v4 engine, checked object by object."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml

from chart_render import (
    CHART_DIR,
    FULL,
    VALUE_SETS,
    base_job_template,
    by_kind,
    env_from_files,
    find,
    find_versioned,
    generated_secrets,
    pod_labels,
    ingress_allowed,
    lint,
    pod_spec,
    render,
    render_error,
    render_files,
    restricted_violations,
    secret_files,
    source,
    strip_source,
)
from helpers import REPO

pytestmark = pytest.mark.chart

KUBE_VERSIONS = ["1.31", "1.34"]
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
# prefect-kubernetes settings that name a Secret and its key (not a secret themselves)
SECRET_REFERENCES = {"PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_KEY"}


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
    """The chart renders no Secret with a generated value: the secrets hook creates them in the
    cluster. No other object holds one either, or a literal value under a secret-like name."""
    docs = docs_for(values_name)
    assert not [s for s in by_kind(docs, "Secret")], "generated passwords are never rendered"
    secrets = generated_secrets(docs)
    generated = {k: v for k, v in secrets.items() if k.endswith("-password")}
    if values_name in ("default", "pgadmin-off", "networkpolicy-off"):
        assert generated, "the chart should generate passwords"
        assert all(len(v) >= 32 for v in generated.values())
    if values_name in ("existing-secrets",):
        assert secrets == {}, "existingSecret must suppress the generated Secrets"
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        # Embedded JSON (the base job template) is scanned as data too.
        extra = [json.loads(v) for v in (doc.get("data") or {}).values() if v.lstrip().startswith("{")]
        for path, value in [*_walk(doc), *(p for e in extra for p in _walk(e))]:
            if isinstance(value, dict):  # an env entry {name, value}
                assert not (SECRETISH.search(value["name"]) and value.get("value")
                            and value["name"] not in SECRET_REFERENCES), f"{where}{path}"
                continue
            if isinstance(value, str):
                for key, secret in generated.items():
                    assert secret not in value, f"{where}{path} contains the password {key}"
                if SECRETISH.search(path.rsplit(".", 1)[-1]) and value:
                    pytest.fail(f"{where}{path} has a literal value for a secret-like key")


@pytest.mark.parametrize("values_name", SETS)
def test_no_secret_reaches_a_pod_through_env(values_name):
    """Secrets are files (checkov CKV_K8S_35): no container of any pod, the flow-run pod of the
    base job template included, takes a secretKeyRef env; user extraEnv entries aside."""
    docs = docs_for(values_name)
    specs = [(f"{d['kind']}/{d['metadata']['name']}", pod_spec(d)) for d in docs if pod_spec(d)]
    specs.append(("flow-run", base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]))
    extra = {e["name"] for block in ("worker", "flowRun", "prefectServer")
             for e in VALUE_SETS[values_name].get(block, {}).get("extraEnv", [])}
    for where, spec in specs:
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            refs = [e["name"] for e in c.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})]
            assert set(refs) <= extra, f"{where}/{c['name']}: secretKeyRef env {refs}"


def test_connection_url_matches_generated_prefect_password():
    secrets = generated_secrets(render())
    url = secrets[f"{FULL}-db/prefect-connection-url"]
    pw = secrets[f"{FULL}-db/prefect-password"]
    assert url == f"postgresql+asyncpg://prefect:{pw}@{FULL}-postgresql:5432/prefect"
    assert len(set(v for k, v in secrets.items() if k.endswith("-password"))) == 4, "passwords must differ"


@pytest.mark.parametrize("values_name", SETS)
def test_recommended_labels_everywhere(values_name):
    for doc in docs_for(values_name):
        labels = doc["metadata"].get("labels") or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/version", "helm.sh/chart"):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"
        spec = pod_spec(doc)
        if spec is not None and doc["kind"] != "Pod":
            workload = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
            template_labels = workload["template"]["metadata"]["labels"]
            sel = workload.get("selector", {}).get("matchLabels")
            if sel:
                assert all(template_labels.get(k) == v for k, v in sel.items())


def _name(doc: dict) -> tuple[str, str]:
    """(kind, name), with the version suffix of Jobs and test Pods (_gitops.tpl) left out."""
    name = doc["metadata"]["name"]
    return doc["kind"], re.sub(r"-[0-9a-f]{8}$", "", name) if doc["kind"] in ("Job", "Pod") else name


def _objects(docs: list[dict]) -> set[tuple[str, str]]:
    return {_name(d) for d in docs}


def _component(docs: list[dict], component: str) -> set[tuple[str, str]]:
    return {_name(d) for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == component}


def test_default_release_has_every_component():
    objects = _objects(docs_for("default"))
    for expected in [("StatefulSet", f"{FULL}-postgresql"), ("Service", f"{FULL}-postgresql"),
                     ("Service", f"{FULL}-postgresql-hl"), ("ConfigMap", f"{FULL}-postgresql-initdb"),
                     ("Deployment", f"{FULL}-pgadmin"), ("Service", f"{FULL}-pgadmin"),
                     ("ConfigMap", f"{FULL}-pgadmin"), ("Deployment", f"{FULL}-prefect-server"),
                     ("Service", f"{FULL}-prefect-server"), ("Deployment", f"{FULL}-worker"),
                     ("ServiceAccount", f"{FULL}-worker"), ("Role", f"{FULL}-worker"),
                     ("RoleBinding", f"{FULL}-worker"), ("ServiceAccount", f"{FULL}-flow-run"),
                     ("ConfigMap", f"{FULL}-base-job-template"),
                     ("NetworkPolicy", f"{FULL}-default-deny"), ("NetworkPolicy", f"{FULL}-postgresql"),
                     ("NetworkPolicy", f"{FULL}-prefect-server"), ("CronJob", f"{FULL}-backup"),
                     ("ConfigMap", f"{FULL}-backup"), ("PersistentVolumeClaim", f"{FULL}-backup"),
                     ("NetworkPolicy", f"{FULL}-backup")]:
        assert expected in objects, expected


def test_switches_remove_exactly_their_objects():
    default = docs_for("default")
    everything = _objects(default)
    # pgAdmin off: every pgAdmin object goes, nothing else.
    assert _objects(docs_for("pgadmin-off")) == everything - _component(default, "pgadmin")
    # External database: the in-chart Postgres, its backups and their NetworkPolicies go; pgAdmin stays.
    external = _objects(docs_for("external-db"))
    assert not _component(docs_for("external-db"), "postgresql")
    assert external == (everything - _component(default, "postgresql") - _component(default, "backup")
                        - {("NetworkPolicy", f"{FULL}-postgresql"), ("NetworkPolicy", f"{FULL}-backup")}
                        - {o for o in _component(default, "test") if "backup-restore" in o[1]})
    # Backups off: exactly the backup objects and their restore check go.
    off = _objects(render({"backup": {"enabled": False}}))
    assert off == everything - _component(default, "backup") - {("NetworkPolicy", f"{FULL}-backup")} - {
        o for o in _component(default, "test") if "backup-restore" in o[1]}
    # An existing claim: the chart creates none, and the CronJob writes to the given one.
    claimed = render({"backup": {"persistence": {"existingClaim": "nfs-backups"}}})
    assert not by_kind(claimed, "PersistentVolumeClaim")
    assert {v["name"]: v for v in pod_spec(find(claimed, "CronJob", f"{FULL}-backup"))["volumes"]}["backups"] == {
        "name": "backups", "persistentVolumeClaim": {"claimName": "nfs-backups"}}
    # NetworkPolicies off: exactly the policies go.
    assert _objects(docs_for("networkpolicy-off")) == everything - _component(default, "network-policy")
    assert _component(default, "network-policy") == {(k, n) for k, n in everything if k == "NetworkPolicy"}


def secrets_hook_names(docs: list[dict]) -> list[str]:
    """The Secrets the secrets hook Job would create, by name."""
    from chart_render import secrets_hook_command

    command = secrets_hook_command(docs)
    return [s["name"] for s in json.loads(command[3])["secrets"]] if command else []


def test_external_database_wiring():
    docs = render(VALUE_SETS["external-db"])
    assert not [d for d in docs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "postgresql"]
    pod = base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["PGHOST"]["value"] == "pg.example.internal" and env["PGPORT"]["value"] == "6432"
    assert env["PGUSER"]["value"] == "loader" and env["PGDATABASE"]["value"] == "events"
    assert secret_files(pod, pod["containers"][0])[env["PGPASSWORD_FILE"]["value"]] == ("managed-db", "etl-password")
    server = pod_spec(find(docs, "Deployment", f"{FULL}-prefect-server"))
    assert env_from_files(server, server["containers"][0])[1]["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == (
        "managed-db", "prefect-connection-url")
    assert secrets_hook_names(docs) == [f"{FULL}-pgadmin"]  # only pgAdmin's password is generated
    servers = json.loads(find(docs, "ConfigMap", f"{FULL}-pgadmin")["data"]["servers.json"])
    assert servers["Servers"]["1"]["Host"] == "pg.example.internal" and servers["Servers"]["1"]["Port"] == 6432


def test_flow_runtime_env_in_base_job_template():
    docs = render(VALUE_SETS["existing-secrets"])
    pod = base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["PGHOST"]["value"] == f"{FULL}-postgresql"
    assert env["PGPORT"]["value"] == "5432" and env["PGDATABASE"]["value"] == "ecommerce" and env["PGUSER"]["value"] == "etl"
    assert "PGPASSWORD" not in env
    assert env["ETL_TABLE"]["value"] == "ecommerce_events" and env["ETL_DATA_DIR"]["value"] == "/tmp/data"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"]["value"] == "false"
    assert env["ETL_ALERT_QUARANTINE_RATIO"]["value"] == "0.01"
    # Credentials are files of the Secrets; the Kaggle volume is optional (the sample needs none).
    files = secret_files(pod, container)
    assert files[env["PGPASSWORD_FILE"]["value"]] == ("my-db", "etl-password")
    assert files[env["KAGGLE_USERNAME_FILE"]["value"]] == ("kaggle-creds", "user")
    assert files[env["KAGGLE_KEY_FILE"]["value"]] == ("kaggle-creds", "token")
    assert next(v for v in pod["volumes"] if v["name"] == "kaggle")["secret"]["optional"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    # No Kaggle variables at all without a Secret.
    default_env = base_job_template(render())["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not [e for e in default_env if e["name"].startswith("KAGGLE")]


def test_base_job_template_keeps_prefect_kubernetes_variables():
    """Our template is the default prefect-kubernetes one with chart defaults (minus
    cluster_config: the worker runs in-cluster)."""
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    ours = base_job_template(render({"image": {"tag": "9.9.9"}, "flowRun": {"tmpSizeLimit": "3Gi"}}, namespace="shop"))
    # ...plus the placement variables, so a deployment or a run can override them.
    assert set(ours["variables"]["properties"]) == set(default["variables"]["properties"]) - {"cluster_config"} | {
        "node_selector", "tolerations", "affinity", "pod_annotations"}
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
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "3Gi"}} in pod["volumes"]
    assert pod["automountServiceAccountToken"] is False
    assert (pod["nodeSelector"], pod["tolerations"], pod["affinity"]) == (
        "{{ node_selector }}", "{{ tolerations }}", "{{ affinity }}")


def test_worker_deployment():
    docs = render()
    worker = find(docs, "Deployment", f"{FULL}-worker")
    spec = pod_spec(worker)
    c = spec["containers"][0]
    assert c["image"] == "ecommerce-etl:0.3.0" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"][:5] == ["prefect", "worker", "start", "--type", "kubernetes"]
    assert c["command"][c["command"].index("--pool") + 1] == "kubernetes"
    assert c["command"][c["command"].index("--base-job-template") + 1] == "/etc/ecommerce-etl/pool/base-job-template.json"
    assert {"mountPath": "/etc/ecommerce-etl/pool", "name": "base-job-template", "readOnly": True} in c["volumeMounts"]
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
    spec = pod_spec(find(docs, "Deployment", f"{FULL}-prefect-server"))
    c = spec["containers"][0]
    assert c["image"] == "prefecthq/prefect:3.9.1-python3.11"
    command, from_files = env_from_files(spec, c)
    assert command == ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"]
    # The database URL reaches the process from the Secret's file, not from the pod's env.
    assert from_files == {"PREFECT_SERVER_DATABASE_CONNECTION_URL": (f"{FULL}-db", "prefect-connection-url")}
    env = {e["name"]: e for e in c["env"]}
    assert "PREFECT_SERVER_DATABASE_CONNECTION_URL" not in env
    assert env["PREFECT_UI_URL"]["value"] == "http://localhost:4200"
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
    # Passwords as files of the db Secret: the image's POSTGRES_PASSWORD_FILE, and the two role
    # passwords the init script reads (what it does with them: test_chart_prefect.py runs it on
    # a real PostgreSQL).
    env = {e["name"]: e["value"] for e in c["env"]}
    files = secret_files(spec, c)
    assert {name: files[env[name]] for name in env if name.endswith("_PASSWORD_FILE")} == {
        "POSTGRES_PASSWORD_FILE": (f"{FULL}-db", "postgres-password"),
        "ROLE_PREFECT_PASSWORD_FILE": (f"{FULL}-db", "prefect-password"),
        "ROLE_ETL_PASSWORD_FILE": (f"{FULL}-db", "etl-password"),
    }
    assert not [e for e in c["env"] if "valueFrom" in e]


def _registration(docs: list[dict]) -> tuple[dict, dict]:
    """(worker pod spec, its register-deployments initContainer)."""
    spec = pod_spec(find(docs, "Deployment", f"{FULL}-worker"))
    (register,) = [c for c in spec["initContainers"] if c["name"] == "register-deployments"]
    return spec, register


def test_worker_registers_the_deployments_before_it_polls():
    """The registration is part of the worker's pod, not a Helm hook: it runs wherever the worker
    runs (tools without hooks included), after the server answers and before the worker polls."""
    docs = render(VALUE_SETS["everything-set"])
    assert not [d for d in docs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "deploy-hook"]
    hooks = [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert {d["metadata"]["annotations"]["helm.sh/hook"] for d in hooks} == {"pre-install,pre-upgrade", "test"}
    spec, c = _registration(docs)
    assert [i["name"] for i in spec["initContainers"]] == ["wait-for-prefect-server", "register-deployments"]
    assert c["image"] == "registry.example:5000/team/ecommerce-etl:1.2.3" and c["imagePullPolicy"] == "Always"
    assert c["command"] == [
        "ecommerce-etl", "deploy", "--pool", "kubernetes",
        "--base-job-template", "/etc/ecommerce-etl/pool/base-job-template.json", "--concurrency-limit", "1",
        "--schedule", "0 3 * * *", "--timezone", "Europe/Berlin", "--max-parallel-files", "3",
        "--sample-rows", "5000",
    ]
    assert {e["name"]: e["value"] for e in c["env"]}["PREFECT_API_URL"] == f"http://{FULL}-prefect-server:4200/api"
    # It reads the very ConfigMap the worker starts with.
    worker = spec["containers"][0]
    assert [m for m in c["volumeMounts"] if m["name"] == "base-job-template"] == [
        m for m in worker["volumeMounts"] if m["name"] == "base-job-template"]
    plain = _registration(render())[1]["command"]
    assert "--schedule" not in plain and "--sample-rows" not in plain
    # What it registers is in the worker's pod template, so a change rolls the worker out and registers again.
    # A new schedule alone (the other deployments values kept) changes the command by just that.
    everything = VALUE_SETS["everything-set"]
    rescheduled = {**everything, "deployments": {**everything["deployments"], "schedule": "0 4 * * *"}}
    changed = _registration(render(rescheduled))[1]
    assert changed["command"] == ["0 4 * * *" if arg == "0 3 * * *" else arg for arg in c["command"]]


def test_helm_test_pods():
    docs = render()
    tests = [d for d in docs if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    cmds = {base: pod_spec(find_versioned(docs, "Pod", f"{FULL}-{base}"))["containers"][0]["command"]
            for base in ("test-work-pool", "test-db-login", "test-server", "test-backup-restore")}
    assert len(tests) == len(cmds)
    assert cmds["test-work-pool"] == ["prefect", "work-pool", "inspect", "kubernetes"]
    assert cmds["test-db-login"][:2] == ["sh", "-c"] and "psql --no-psqlrc" in cmds["test-db-login"][2]
    assert cmds["test-server"][-1] == f"http://{FULL}-prefect-server:4200/api/health"
    assert cmds["test-backup-restore"] == ["bash", "/etc/ecommerce-etl/backup/verify.sh"]
    no_check = render({"backup": {"testRestore": False}})
    assert [d["metadata"]["name"] for d in no_check if "backup-restore" in d["metadata"]["name"]] == []
    assert find(no_check, "CronJob", f"{FULL}-backup")


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
        labels = pod_labels(d)
        if labels.get("app.kubernetes.io/component") == component:
            return labels
    raise AssertionError(component)


def test_network_policies_allow_only_the_intended_paths():
    docs = render()
    flow_run = base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]["metadata"]["labels"]
    # Prefect overwrites app.kubernetes.io/name on flow-run pods; the policies must not depend on it.
    flow_run = {**flow_run, "app.kubernetes.io/name": "sample"}
    pods = {c: _pod_labels(docs, c) for c in ("postgresql", "pgadmin", "prefect-server", "worker", "backup", "test")}
    pods["flow-run"] = flow_run
    stranger = {"app": "something-else"}
    other_release = {**pods["prefect-server"], "app.kubernetes.io/instance": "other"}
    pg, srv = pods["postgresql"], pods["prefect-server"]
    for allowed in ("prefect-server", "flow-run", "pgadmin", "backup", "test"):
        assert ingress_allowed(docs, pg, pods[allowed], 5432), allowed
    for denied in ("worker",):
        assert not ingress_allowed(docs, pg, pods[denied], 5432), denied
    assert not ingress_allowed(docs, pg, stranger, 5432) and not ingress_allowed(docs, pg, other_release, 5432)
    for allowed in ("worker", "flow-run", "test"):
        assert ingress_allowed(docs, srv, pods[allowed], 4200), allowed
    assert not ingress_allowed(docs, srv, stranger, 4200)
    for denied in ("pgadmin", "backup"):
        assert not ingress_allowed(docs, srv, pods[denied], 4200), denied
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


def test_chart_metadata_and_layout():
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("ecommerce-etl", "0.3.0", "0.3.0")
    # The flow image's default tag is the appVersion: the package it is built from has that version.
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == chart["appVersion"]
    assert "dependencies" not in chart
    # A folder per component: every object comes from the folder of the component it belongs to.
    folders = {}
    for doc in render(VALUE_SETS["everything-set"]):
        folder = source(doc).split("/")[2]
        folders.setdefault(folder, set()).add(doc["metadata"]["labels"]["app.kubernetes.io/component"])
    assert folders == {
        "postgresql": {"postgresql"}, "pgadmin": {"pgadmin"}, "prefect-server": {"prefect-server"},
        "worker": {"worker"}, "flow-run": {"flow-run"}, "tests": {"test"},
        "network-policies": {"network-policy"}, "secrets": {"secrets"}, "backup": {"backup", "network-policy"},
    }, folders
    images = {c["image"] for d in render() if pod_spec(d) for c in pod_spec(d)["containers"]}
    assert not [i for i in images if "bitnami" in i or i.endswith(":latest") or ":" not in i], images


@pytest.mark.parametrize("flow_run, fan_out_env, limit", [
    ({}, "load-file/load-file", "3"),
    ({"maxParallelFiles": 5}, "load-file/load-file", "5"),
    ({"fanOut": False, "maxParallelFiles": 2}, None, "2"),
])
def test_fan_out_values_reach_the_flow_run_env_and_the_hook(flow_run, fan_out_env, limit):
    from flows.names import LOAD_FILE_DEPLOYMENT

    docs = render({"flowRun": flow_run})
    pod = base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env.get("ETL_FILE_DEPLOYMENT") == fan_out_env and env["ETL_MAX_PARALLEL_FILES"] == limit
    assert fan_out_env in (None, LOAD_FILE_DEPLOYMENT)  # the deployment `ecommerce-etl deploy` registers
    command = _registration(docs)[1]["command"]
    assert command[command.index("--max-parallel-files") + 1] == limit
