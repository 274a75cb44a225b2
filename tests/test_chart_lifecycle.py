"""T3: the chart's later life (issue 17) through the real Helm engine: settings that would render
a broken release are refused with the setting and the fix named; every Secret the secrets hook
generates carries the annotations that keep Helm, Argo CD and Flux from deleting it; no object
with an immutable spec keeps its name when values change (so `helm template | kubectl apply` of a
new rendering succeeds); the backup CronJob and the restore Job template are restricted, reach
Postgres and nothing else, and run the postgres image's own client tools.
"""

from __future__ import annotations

import json
import re
import shutil

import helm_python
import kubernetes_validate
import pytest
import yaml

from chart_render import (
    CHART_DIR,
    by_kind,
    find,
    ingress_allowed,
    pod_labels,
    pod_spec,
    render,
    render_error,
    render_files,
    restricted_violations,
    run_secrets_hook,
)
from kube_standin import KubeStandIn

pytestmark = pytest.mark.chart

FULL = "etl-ecommerce-etl"
INGRESS = {"enabled": True, "host": "etl.shop.example", "tls": {"secretName": "etl-tls"}}
CONTROLLER = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
ARGO_FLUX_HELM = {
    "helm.sh/resource-policy": "keep",
    "argocd.argoproj.io/sync-options": "Prune=false",
    "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
    "kustomize.toolkit.fluxcd.io/prune": "disabled",
}


# --- broken combinations refused, with the setting and the fix named -------------------------------
REFUSED = {
    "ingress-with-localhost-api-url": (
        {"prefectServer": {"ingress": INGRESS}, "networkPolicy": {"serverExtraFrom": CONTROLLER}},
        ["prefectServer.ingress.enabled=true with prefectServer.uiApiUrl=http://localhost:4200/api",
         "each visitor's own machine", "Set prefectServer.uiApiUrl=/api"]),
    "ingress-with-127-api-url": (
        {"prefectServer": {"ingress": INGRESS, "uiApiUrl": "http://127.0.0.1:4200/api"},
         "networkPolicy": {"serverExtraFrom": CONTROLLER}},
        ["prefectServer.uiApiUrl=http://127.0.0.1:4200/api"]),
    "ingress-blocked-by-network-policy": (
        {"prefectServer": {"ingress": INGRESS, "uiApiUrl": "/api"}},
        ["networkPolicy.enabled=true and no networkPolicy.serverExtraFrom",
         "no ingress controller reach the Prefect server", "networkPolicy.serverExtraFrom",
         "networkPolicy.enabled=false"]),
    "postgres-17-on-the-18-layout": (
        {"postgresql": {"image": {"tag": "17.6-bookworm"}}},
        ["postgresql.image.tag=17.6-bookworm is PostgreSQL 17", "/var/lib/postgresql/data",
         'UPGRADING.md, "PostgreSQL major upgrade"']),
    "postgres-tag-without-major": (
        {"postgresql": {"image": {"tag": "bookworm"}}},
        ["postgresql.image.tag=bookworm does not start with the PostgreSQL major version",
         'UPGRADING.md, "PostgreSQL major upgrade"']),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_broken_combinations_are_refused_naming_the_fix(case):
    values, expected = REFUSED[case]
    error = render_error(values)
    assert "Invalid values for ecommerce-etl" in error
    for text in expected:
        assert text in error, f"{text!r} not in {error}"


@pytest.mark.parametrize("values", [
    {"prefectServer": {"ingress": INGRESS, "uiApiUrl": "/api"}, "networkPolicy": {"serverExtraFrom": CONTROLLER}},
    {"prefectServer": {"ingress": INGRESS, "uiApiUrl": "https://etl.shop.example/api"}, "networkPolicy": {"enabled": False}},
    {"prefectServer": {"uiApiUrl": "http://localhost:4200/api"}},  # port-forward only: the default
    {"postgresql": {"image": {"tag": "18"}}},
    {"postgresql": {"image": {"tag": "19.0-trixie"}}},
    {"postgresql": {"enabled": False, "image": {"tag": "bookworm"}},
     "externalDatabase": {"host": "db.example", "existingSecret": "db"}},  # the image is not used then
], ids=["ingress-relative-api", "ingress-absolute-api-no-policies", "port-forward-default", "pg-18", "pg-19",
        "external-database"])
def test_working_combinations_render(values):
    assert render(values)


def _notes(values: dict) -> str:
    return render_files(values)["ecommerce-etl/templates/NOTES.txt"]


def test_basic_auth_over_an_ingress_without_tls_is_warned_about():
    plain = {"enabled": True, "host": "etl.shop.example"}
    auth = {"basicAuth": {"enabled": True}, "uiApiUrl": "/api"}
    warning = "WARNING: basic auth over an Ingress without TLS"
    notes = _notes({"prefectServer": {**auth, "ingress": plain}, "networkPolicy": {"serverExtraFrom": CONTROLLER}})
    assert warning in notes and "in clear text to http://etl.shop.example" in notes
    assert "prefectServer.ingress.tls.secretName" in notes
    # TLS, or no basic auth, or no Ingress: no warning
    for values in ({"prefectServer": {**auth, "ingress": INGRESS}, "networkPolicy": {"serverExtraFrom": CONTROLLER}},
                   {"prefectServer": {"uiApiUrl": "/api", "ingress": plain}, "networkPolicy": {"serverExtraFrom": CONTROLLER}},
                   {"prefectServer": {"basicAuth": {"enabled": True}}}):
        assert warning not in _notes(values), values


def test_storage_quantities_compare_by_size(tmp_path):
    """The helper `helm upgrade`'s volume check uses (that check itself needs a cluster: T5)."""
    chart = tmp_path / "ecommerce-etl"
    shutil.copytree(CHART_DIR, chart)
    probes = {"8Gi": "8Gi", "8192Mi": "8192Mi", "8G": "8G", "10Gi": "10Gi", "1.5Gi": "1.5Gi", "1536Mi": "1536Mi",
              "odd": "7Zi"}
    (chart / "templates" / "probe.yaml").write_text("".join(
        f'{key}: "{{{{ include "ecommerce-etl.bytes" "{q}" }}}}"\n' for key, q in probes.items()))
    out = yaml.safe_load(helm_python.Chart.load(str(chart)).render({}, name="etl", namespace="data")[
        "ecommerce-etl/templates/probe.yaml"])
    assert out["8Gi"] == out["8192Mi"] == str(8 * 2**30)
    assert out["1.5Gi"] == out["1536Mi"] and out["8G"] == str(8 * 10**9) and out["10Gi"] != out["8Gi"]
    assert out["odd"] == "7Zi"  # an unknown unit compares as written


# --- GitOps: generated Secrets that nothing prunes ----------------------------------------------------
@pytest.mark.parametrize("values", [{}, {"prefectServer": {"basicAuth": {"enabled": True}}}], ids=["default", "basic-auth"])
def test_every_generated_secret_carries_the_keep_and_no_prune_annotations(values, tmp_path):
    docs = render(values, namespace="shop")
    with KubeStandIn() as api:
        run_secrets_hook(docs, api, tmp_path)
        created = {name: obj["metadata"] for (_, name), obj in api.secrets.items()}
    expected = {f"{FULL}-db", f"{FULL}-pgadmin"} | ({f"{FULL}-basic-auth"} if values else set())
    assert set(created) == expected
    for name, meta in created.items():
        assert meta["annotations"] == ARGO_FLUX_HELM, name
        assert meta["labels"]["app.kubernetes.io/instance"] == "etl", name


def test_secrets_of_a_0_2_0_release_get_the_annotations_and_keep_every_value(tmp_path):
    """0.2.0's hook marked its Secrets with helm.sh/resource-policy only: the upgrade's hook adds
    the Argo CD and Flux annotations and changes no value."""
    docs = render({}, namespace="shop")
    old = {"postgres-password": "p" * 32, "prefect-password": "q" * 32, "etl-password": "e" * 32,
           "prefect-connection-url": f"postgresql+asyncpg://prefect:{'q' * 32}@{FULL}-postgresql:5432/prefect"}
    with KubeStandIn() as api:
        api.put_secret("shop", f"{FULL}-db", old, annotations={"helm.sh/resource-policy": "keep"})
        api.put_secret("shop", f"{FULL}-pgadmin", {"pgadmin-password": "a" * 32},
                       annotations={"helm.sh/resource-policy": "keep"})
        out = run_secrets_hook(docs, api, tmp_path)
        for name in (f"{FULL}-db", f"{FULL}-pgadmin"):
            assert api.secrets[("shop", name)]["metadata"]["annotations"] == ARGO_FLUX_HELM, name
        assert {k: v for k, v in api.secret_values().items() if k.startswith(f"{FULL}-db/")} == {
            f"{FULL}-db/{k}": v for k, v in old.items()}
        assert api.secret_values()[f"{FULL}-pgadmin/pgadmin-password"] == "a" * 32
        assert "added nothing" in out
        # A second run changes nothing and patches nothing.
        before = len([r for r in api.requests if r[0] == "PATCH"])
        run_secrets_hook(docs, api, tmp_path)
        assert len([r for r in api.requests if r[0] == "PATCH"]) == before


# --- GitOps: nothing immutable keeps its name across renderings ----------------------------------------
def _by_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_jobs_and_pods_get_a_new_name_when_values_change():
    """A Job's or Pod's spec cannot be changed in place: `kubectl apply` of a second rendering
    would fail on them. Every one the chart renders is named by the chart version and values, so
    a new rendering creates new ones; every other object keeps its name (the same values rendered
    again, by a second run of the Helm engine, give the same names). The backup Job is named by what
    its backup depends on instead (test_the_change_backup_job_...): a change of values it does not
    depend on keeps its name and, with it, exactly its spec."""
    first = _by_name(render())
    again = _by_name(render(cached=False))
    changed = _by_name(render({"deployments": {"concurrencyLimit": 2}, "flowRun": {"maxParallelFiles": 2}}))
    assert first.keys() == again.keys()
    immutable = {k for k in first if k[0] in ("Job", "Pod")}
    assert len(immutable) >= 5  # the secrets hook and the helm test pods
    backup = {k for k in immutable if re.fullmatch(rf"{FULL}-backup-[0-9a-f]{{8}}", k[1])}
    assert len(backup) == 1 and backup <= changed.keys()
    assert all(first[k]["spec"] == changed[k]["spec"] for k in backup)
    assert not (immutable - backup) & changed.keys()
    assert {k for k in first if k[0] not in ("Job", "Pod")} == {k for k in changed if k[0] not in ("Job", "Pod")}
    for _kind, name in immutable:
        assert re.fullmatch(rf"{FULL}-[a-z-]+-[0-9a-f]{{8}}", name) and len(name) <= 63, name
    # ...and the chart renders no other object kind whose spec is immutable once created
    assert not {k for k, _ in first} & {"ReplicaSet", "DaemonSet"}
    long = render({"fullnameOverride": "x" * 63})
    assert all(len(d["metadata"]["name"]) <= 63 for d in long)


def test_no_hook_is_needed_for_the_deployments_and_only_the_secrets_hook_with_generated_secrets():
    """What the README promises to tools that skip Helm hooks."""
    own = {"postgresql": {"auth": {"existingSecret": "db"}}, "pgadmin": {"existingSecret": "pga"}}
    hooks = [d for d in render(own) if d["metadata"].get("annotations", {}).get("helm.sh/hook", "test") != "test"]
    assert hooks == []
    readme = (CHART_DIR / "README.md").read_text()
    assert "no hook is rendered" in readme and "register-deployments" in readme


# --- backups -----------------------------------------------------------------------------------------
def test_backup_cronjob_dumps_with_the_servers_own_tools_as_its_user():
    docs = render({"backup": {"schedule": "15 1 * * *", "timeZone": "Europe/Berlin", "keep": 3}})
    cron = find(docs, "CronJob", f"{FULL}-backup")
    assert (cron["spec"]["schedule"], cron["spec"]["timeZone"]) == ("15 1 * * *", "Europe/Berlin")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = pod_spec(cron)
    (c,) = spec["containers"]
    server = pod_spec(find(docs, "StatefulSet", f"{FULL}-postgresql"))["containers"][0]
    assert c["image"] == server["image"]  # pg_dump of the server's own major version
    assert spec["securityContext"]["runAsUser"] == 999 and spec["automountServiceAccountToken"] is False
    assert restricted_violations(spec) == []
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["BACKUP_DATABASES"] == "prefect ecommerce" and env["BACKUP_KEEP"] == "3"
    assert env["PGHOST"] == f"{FULL}-postgresql" and env["PGUSER"] == "postgres"
    assert c["command"] == ["bash", "/etc/ecommerce-etl/backup/backup.sh"]
    cm = find(docs, "ConfigMap", f"{FULL}-backup")["data"]
    for script in ("backup.sh", "common.sh", "restore.sh", "verify.sh"):
        assert cm[script] == (CHART_DIR / "files" / "backup" / script).read_text()
    pvc = find(docs, "PersistentVolumeClaim", f"{FULL}-backup")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"


def test_a_backup_job_runs_at_install_and_at_every_change_and_binds_the_claim():
    """helm install --wait and Argo CD wait for the backup claim to be Bound, which a
    WaitForFirstConsumer StorageClass does only once a pod uses it."""
    from chart_render import find_versioned

    docs = render()
    job = find_versioned(docs, "Job", f"{FULL}-backup")
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {}) and "ttlSecondsAfterFinished" not in job["spec"]
    spec, cron = pod_spec(job), pod_spec(find(docs, "CronJob", f"{FULL}-backup"))
    assert spec["volumes"] == cron["volumes"] and spec["containers"][0]["command"] == cron["containers"][0]["command"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["BACKUP_WAIT_SECONDS"] == "900"  # at install the server may still be initialising
    changed = find_versioned(render({"backup": {"keep": 9}}), "Job", f"{FULL}-backup")
    assert changed["metadata"]["name"] != job["metadata"]["name"]
    assert not [d for d in render({"backup": {"enabled": False}}) if d["kind"] == "Job" and "backup" in d["metadata"]["name"]]


def test_the_change_backup_job_follows_only_what_its_backup_depends_on():
    """The install/change backup Job dumps both databases: it runs again (a new name) when the chart,
    the release, its own spec, or an image that migrates or serves the databases changes, not at
    every change of values (worker replicas, alert thresholds, schedules). Whatever keeps its name
    renders exactly the same spec, so `kubectl apply` never meets a changed immutable Job."""
    from chart_render import find_versioned

    def job(values=None, name="etl"):
        return find_versioned(render(values, name=name), "Job", f"{name}-ecommerce-etl-backup")

    base = job()
    for same in ({"worker": {"replicas": 3}}, {"alerts": {"pendingMinutes": 30, "quarantineRatio": 0.05}},
                 {"deployments": {"concurrencyLimit": 2}}, {"backup": {"schedule": "0 4 * * *"}},
                 {"prefectServer": {"retention": {"eventDays": 3}}}):
        kept = job(same)
        assert kept["metadata"]["name"] == base["metadata"]["name"], same
        assert kept["spec"] == base["spec"], same
    for other in ({"backup": {"keep": 9}}, {"backup": {"resources": {"requests": {"cpu": "200m"}}}},
                  {"postgresql": {"image": {"tag": "19"}}}, {"image": {"tag": "9.9.9"}},
                  {"prefectServer": {"image": {"tag": "3.9.9-python3.12"}}},
                  {"postgresql": {"auth": {"etl": {"database": "shop"}}}}, {"commonLabels": {"team": "data"}}):
        assert job(other)["metadata"]["name"] != base["metadata"]["name"], other
    env = {e["name"]: e["value"] for e in pod_spec(base)["containers"][0]["env"]}
    assert env["BACKUP_KIND"] == "change"
    cron_env = {e["name"]: e["value"] for e in pod_spec(find(render(), "CronJob", f"{FULL}-backup"))["containers"][0]["env"]}
    assert cron_env.get("BACKUP_KIND", "scheduled") == "scheduled"


def test_the_restore_job_template_is_a_valid_restricted_job_that_reaches_only_postgres():
    docs = render()
    job = yaml.safe_load(find(docs, "ConfigMap", f"{FULL}-backup")["data"]["restore-job.yaml"])
    for version in ("1.31", "1.34"):
        kubernetes_validate.validate(job, version, strict=True)
    assert job["metadata"]["generateName"] == f"{FULL}-restore-"
    assert "app.kubernetes.io/managed-by" not in job["metadata"]["labels"]  # made by hand, not by Helm
    assert job["metadata"]["annotations"]["argocd.argoproj.io/compare-options"] == "IgnoreExtraneous"
    spec = job["spec"]["template"]["spec"]
    assert restricted_violations(spec) == [] and spec["containers"][0]["command"][-1].endswith("/restore.sh")
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["BACKUP"] == "latest" and env["RESTORE_DATABASES"] == ""
    cron = pod_spec(find(docs, "CronJob", f"{FULL}-backup"))
    assert spec["volumes"] == cron["volumes"]  # the same scripts, dumps and password file
    labels = job["spec"]["template"]["metadata"]["labels"]
    postgres = pod_labels(find(docs, "StatefulSet", f"{FULL}-postgresql"))
    server = pod_labels(find(docs, "Deployment", f"{FULL}-prefect-server"))
    assert ingress_allowed(docs, postgres, labels, 5432)
    assert ingress_allowed(docs, postgres, pod_labels(find(docs, "CronJob", f"{FULL}-backup")), 5432)
    assert not ingress_allowed(docs, server, labels, 4200)
    # a release without NetworkPolicies renders no backup policy either
    assert not by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_postgres_refuses_another_majors_volume_before_it_starts():
    """The first initContainer runs the chart's check on the data volume, read-only, from the
    postgres image itself (its behaviour on real volumes: tests/test_standin_contract.py)."""
    sts = pod_spec(find(render(), "StatefulSet", f"{FULL}-postgresql"))
    (check,) = sts["initContainers"]
    assert check["name"] == "check-data-layout" and check["image"] == sts["containers"][0]["image"]
    assert check["command"][:2] == ["bash", "-c"]
    assert check["command"][2] == (CHART_DIR / "files" / "postgresql" / "check-data-layout.sh").read_text()
    assert check["volumeMounts"] == [{"name": "data", "mountPath": "/var/lib/postgresql", "readOnly": True}]
    assert 'UPGRADING.md,\n"PostgreSQL major upgrade"' in check["command"][2]
    upgrading = (CHART_DIR / "UPGRADING.md").read_text()
    for section in ("PostgreSQL major upgrade", "Restoring a backup", "Volume size, class or access modes",
                    "Role and database names"):
        assert re.search(rf"^#+ {re.escape(section)}$", upgrading, flags=re.M), section


def test_values_schema_knows_the_backup_block():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert set(schema["properties"]["backup"]["properties"]) == set(yaml.safe_load(
        (CHART_DIR / "values.yaml").read_text())["backup"])
    for bad, where in (({"backup": {"keep": 0}}, "/backup/keep"), ({"backup": {"schedule": "daily"}}, "/backup/schedule"),
                       ({"backup": {"persistence": {"existingClaim": "Bad_Name"}}}, "/backup/persistence/existingClaim")):
        assert where in render_error(bad), bad


def test_chart_version_is_bumped_past_the_release():
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert tuple(int(x) for x in chart["version"].split(".")) > (0, 2, 0)
    assert f"## 0.2.x → {chart['version']}" in (CHART_DIR / "UPGRADING.md").read_text()


def test_A6_pgadmin_runs_without_postfix():
    """k8s/README.md A6: the official entrypoint runs `sudo postfix start` unless
    PGADMIN_DISABLE_POSTFIX is set, and sudo cannot work with allowPrivilegeEscalation false."""
    spec = pod_spec(find(render(), "Deployment", f"{FULL}-pgadmin"))
    (c,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PGADMIN_DISABLE_POSTFIX"] and c["securityContext"]["allowPrivilegeEscalation"] is False
