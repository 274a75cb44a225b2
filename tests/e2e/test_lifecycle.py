"""T5: a release's later life on kind (`make lifecycle-local`; pytest -m e2e with ETL_E2E_LIFECYCLE=1).

1. The release users have (chart 0.2.0 of commit b95aa7e, with the flow image built from that
   commit) is installed and loads the sample; `helm upgrade` to this chart and image keeps every
   row, every password, and reloads no file (the ledger is untouched, a rerun skips everything);
   the generated Secrets gain the Argo CD/Flux annotations; the worker registered the deployments.
2. Backup (the CronJob's Job) -> rows and a ledger entry deleted -> the restore Job of
   UPGRADING.md: the tables and the ledger are exactly back, a rerun skips every file.
3. The major-version guard: on a volume holding another major's data the chart's
   check-data-layout initContainer refuses with its message, as does the image's own entrypoint;
   `helm upgrade` refuses a tag below 18 and changes of the volume or role names, naming UPGRADING.md.
4. `helm template | kubectl apply` of one rendering, then of a second with changed values: both
   apply, the second rendering's secrets Job and registration run, the passwords stay.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from helpers import REPO
from kube_tools import Kube, prefect, run_deployment, sh, unload_images

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(5400)]

CHART = REPO / "charts" / "ecommerce-etl"
VALUES = REPO / "k8s" / "values-kind.yaml"
RELEASE_COMMIT = "b95aa7e"
CLUSTER = os.environ.get("CLUSTER") or yaml.safe_load((REPO / "kind-config.yaml").read_text())["name"]
CONTEXT = f"kind-{CLUSTER}"
TAG = f"lc-{secrets.token_hex(3)}"
NEW_IMAGE = f"ecommerce-etl:{TAG}"
OLD_IMAGE = f"ecommerce-etl:{TAG}-{RELEASE_COMMIT}"
SAMPLE_ROWS = 400
FILES = ("2019-Oct.csv", "2019-Nov.csv", "2019-Dec.csv", "2020-Jan.csv", "2020-Feb.csv")
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _requirements(request):
    missing = [t for t in ("kind", "kubectl", "helm", "docker") if not shutil.which(t)]
    if missing:
        pytest.skip(f"T5 needs kind, kubectl, helm and docker; missing: {', '.join(missing)}")
    if os.environ.get("ETL_E2E_LIFECYCLE") != "1":
        pytest.skip("the lifecycle tests (about 30 min) run via `make lifecycle-local`, or with ETL_E2E=1 ETL_E2E_LIFECYCLE=1")
    if CLUSTER not in sh("kind", "get", "clusters", check=False).split():
        pytest.skip(f"no kind cluster {CLUSTER} (make lifecycle-local creates one)")
    yield
    print("\nlifecycle figures: " + json.dumps(FIGURES), file=sys.stderr)


@pytest.fixture(scope="module")
def release_tree(tmp_path_factory) -> Path:
    """The repository as of the release users have (its chart, values and flow image source)."""
    tree = tmp_path_factory.mktemp("release")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", RELEASE_COMMIT], capture_output=True, timeout=120)
    if archive.returncode != 0:
        pytest.skip(f"commit {RELEASE_COMMIT} is not in this clone: {archive.stderr.decode()[:200]}")
    archive_path = tree / "release.tar"
    archive_path.write_bytes(archive.stdout)
    with tarfile.open(archive_path) as tar:
        tar.extractall(tree / "src", filter="data")
    return tree / "src"


@pytest.fixture(scope="module")
def images(release_tree):
    """Both flow images, built and loaded into every node; removed from the engine and the nodes
    afterwards (each node keeps its own copy of a loaded image: about 1 GB each)."""
    started = time.monotonic()
    try:
        sh(str(REPO / "scripts" / "build-image.sh"), NEW_IMAGE, timeout=1800)
        sh("env", "APP_UID=10001", str(release_tree / "scripts" / "build-image.sh"), OLD_IMAGE, timeout=1800)
        for ref in (NEW_IMAGE, OLD_IMAGE):
            sh("kind", "load", "docker-image", ref, "--name", CLUSTER, timeout=900)
        FIGURES["images_s"] = round(time.monotonic() - started, 1)
        yield
    finally:
        unload_images(CLUSTER, [NEW_IMAGE, OLD_IMAGE])
        for ref in (NEW_IMAGE, OLD_IMAGE):
            sh("docker", "image", "rm", ref, check=False)


def image_args(image: str) -> list[str]:
    repo, tag = image.split(":")
    return ["--set", f"image.repository={repo}", "--set", f"image.tag={tag}", "--set", f"deployments.sampleRows={SAMPLE_ROWS}"]


def fingerprint(kube: Kube, prefix: str) -> dict[str, str]:
    """Every table of the data database: rows and an order-independent digest of them."""
    tables = kube.psql(prefix, "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                               "WHERE schemaname = 'public' ORDER BY 1").split()
    return {t: kube.psql(prefix, f"SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                 f"FROM ONLY {t} x") for t in tables}


# What a load writes into the ledger (chart 0.2.0's columns): equal entries mean the file was not loaded again.
LEDGER_COLUMNS = ("source_file", "checksum", "size_bytes", "partition_name", "rows_read", "rows_loaded",
                  "rows_quarantined", "run_id", "loaded_at")


def ledger(kube: Kube, prefix: str) -> list[str]:
    return kube.psql(prefix, f"SELECT concat_ws(' ', {', '.join(LEDGER_COLUMNS)}) FROM ecommerce_events_ledger ORDER BY 1"
                     ).splitlines()


def data_tables(kube: Kube, prefix: str) -> dict[str, str]:
    """fingerprint() of every table but the ledger (ledger() compares its entries: a newer loader may
    add columns to it, which UPGRADING.md announces)."""
    return {t: v for t, v in fingerprint(kube, prefix).items() if t != "public.ecommerce_events_ledger"}


def ledger_columns(kube: Kube, prefix: str) -> list[str]:
    return kube.psql(prefix, "SELECT column_name FROM information_schema.columns "
                             "WHERE table_name = 'ecommerce_events_ledger' ORDER BY ordinal_position").split()


def rows_per_file(kube: Kube, prefix: str) -> dict[str, int]:
    out = kube.psql(prefix, "SELECT source_file, count(*) FROM ecommerce_events GROUP BY 1")
    return {name: int(n) for name, n in (line.split("|") for line in out.split())}


# --- 1 and 2: upgrade from the release, then backup -> delete -> restore --------------------------------
UPGRADE = Kube(CONTEXT, "lc-upgrade")
UP_RELEASE = "etl"
UP_PREFIX = f"{UP_RELEASE}-ecommerce-etl"


@pytest.fixture(scope="module")
def upgraded(images, release_tree):
    kube = UPGRADE
    kube.create_namespace()
    try:
        with kube.dump_on_failure():
            started = time.monotonic()
            kube.helm("install", UP_RELEASE, str(release_tree / "charts" / "ecommerce-etl"),
                      "-f", str(release_tree / "k8s" / "values-kind.yaml"), *image_args(OLD_IMAGE),
                      "--wait", "--timeout", "15m", timeout=1200)
            FIGURES["install_0.2.0_s"] = round(time.monotonic() - started, 1)
            with kube.port_forward(f"{UP_PREFIX}-prefect-server", 4200) as url:
                run = run_deployment(f"{url}/api")
                assert run.state.type.value == "COMPLETED", run.state
            before = {"rows": rows_per_file(kube, UP_PREFIX), "ledger": ledger(kube, UP_PREFIX),
                      "tables": data_tables(kube, UP_PREFIX), "columns": ledger_columns(kube, UP_PREFIX),
                      "db": kube.secret(f"{UP_PREFIX}-db"),
                      "pgadmin": kube.secret(f"{UP_PREFIX}-pgadmin")}
            assert before["rows"] == dict.fromkeys(FILES, SAMPLE_ROWS) and len(before["ledger"]) == len(FILES)
            assert "argocd.argoproj.io/sync-options" not in before["db"]["annotations"]  # 0.2.0's hook

            started = time.monotonic()
            kube.helm("upgrade", UP_RELEASE, str(CHART), "-f", str(VALUES), *image_args(NEW_IMAGE),
                      "--wait", "--timeout", "15m", timeout=1200)
            FIGURES["upgrade_to_this_chart_s"] = round(time.monotonic() - started, 1)
        yield before
    finally:
        if os.environ.get("ETL_E2E_KEEP") != "1":
            kube.helm("uninstall", UP_RELEASE, "--wait", "--timeout", "5m", check=False, timeout=600)
            kube.delete_namespace()


def test_upgrade_from_the_release_keeps_rows_passwords_and_loads_nothing_again(upgraded):
    kube, before = UPGRADE, upgraded
    with kube.dump_on_failure():
        assert rows_per_file(kube, UP_PREFIX) == before["rows"]
        assert ledger(kube, UP_PREFIX) == before["ledger"]  # same checksums and load times: nothing reloaded
        assert data_tables(kube, UP_PREFIX) == before["tables"]
        for name in ("db", "pgadmin"):
            after = kube.secret(f"{UP_PREFIX}-{name}")
            assert after["data"] == before[name]["data"], f"{name}: a password changed"
            assert after["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"
            assert after["annotations"]["kustomize.toolkit.fluxcd.io/prune"] == "disabled"
        # the deploy hook Job is gone; the worker registered the pool with this chart's image
        assert not json.loads(kube.kubectl("get", "jobs", "-l", "app.kubernetes.io/component=deploy-hook", "-o", "json"))["items"]
        with kube.port_forward(f"{UP_PREFIX}-prefect-server", 4200) as url:
            pool = prefect(f"{url}/api", lambda c: c.read_work_pool("kubernetes"))
            assert pool.base_job_template["variables"]["properties"]["image"]["default"] == NEW_IMAGE
            run = run_deployment(f"{url}/api")
            assert run.state.type.value == "COMPLETED", run.state
        assert ledger(kube, UP_PREFIX) == before["ledger"] and data_tables(kube, UP_PREFIX) == before["tables"]
        # the changes UPGRADING.md announces: the ledger's new columns (load_seconds, empty for earlier
        # loads; load_id, numbering them), added in place
        assert ledger_columns(kube, UP_PREFIX) == [*before["columns"], "load_seconds", "load_id"]
        assert kube.psql(UP_PREFIX, "SELECT count(*) FROM ecommerce_events_ledger WHERE load_seconds IS NOT NULL") == "0"
        started = time.monotonic()
        kube.helm("test", UP_RELEASE, "--logs", "--timeout", "15m", timeout=1200)  # with the restore check
        FIGURES["helm_test_s"] = round(time.monotonic() - started, 1)


def _restore_job(kube: Kube, prefix: str, **env: str) -> str:
    template = kube.kubectl("get", "configmap", f"{prefix}-backup", "-o", "jsonpath={.data.restore-job\\.yaml}")
    if env:
        template = kube.kubectl("set", "env", "--local", "-f", "-", *(f"{k}={v}" for k, v in env.items()), "-o", "yaml",
                                input=template)
    return kube.kubectl("create", "-f", "-", "-o", "name", input=template).strip()


def test_backup_delete_restore_gives_the_rows_and_the_ledger_back(upgraded):
    kube = UPGRADE
    with kube.dump_on_failure():
        started = time.monotonic()
        kube.kubectl("create", "job", f"--from=cronjob/{UP_PREFIX}-backup", "lc-backup-1")
        logs = kube.wait_job("job/lc-backup-1")
        FIGURES["backup_s"] = round(time.monotonic() - started, 1)
        assert " complete in " in logs, logs
        tables, entries = fingerprint(kube, UP_PREFIX), ledger(kube, UP_PREFIX)

        # the loss
        kube.psql(UP_PREFIX, "DELETE FROM ecommerce_events WHERE source_file = '2019-Nov.csv'")
        kube.psql(UP_PREFIX, "DELETE FROM ecommerce_events_ledger WHERE source_file = '2019-Dec.csv'")
        assert rows_per_file(kube, UP_PREFIX).get("2019-Nov.csv") is None and len(ledger(kube, UP_PREFIX)) == 4

        listed = kube.wait_job(_restore_job(kube, UP_PREFIX, BACKUP="list"))
        assert f"ecommerce {SAMPLE_ROWS * len(FILES) + len(FILES)} rows" in listed, listed  # events + ledger

        # UPGRADING.md, "Restoring a backup": stop the writers, run the restore Job, start again
        kube.kubectl("scale", f"deploy/{UP_PREFIX}-worker", f"deploy/{UP_PREFIX}-prefect-server", "--replicas=0")
        started = time.monotonic()
        restore = _restore_job(kube, UP_PREFIX)
        logs = kube.wait_job(restore, timeout=1800)
        FIGURES["restore_s"] = round(time.monotonic() - started, 1)
        assert "restore of backup" in logs and "every table's row count as dumped" in logs, logs
        kube.kubectl("scale", f"deploy/{UP_PREFIX}-prefect-server", f"deploy/{UP_PREFIX}-worker", "--replicas=1")
        for name in ("prefect-server", "worker"):
            kube.kubectl("rollout", "status", f"deploy/{UP_PREFIX}-{name}", "--timeout=600s", timeout=700)

        assert fingerprint(kube, UP_PREFIX) == tables and ledger(kube, UP_PREFIX) == entries
        with kube.port_forward(f"{UP_PREFIX}-prefect-server", 4200) as url:
            run = run_deployment(f"{url}/api")
            assert run.state.type.value == "COMPLETED", run.state
        assert fingerprint(kube, UP_PREFIX) == tables and ledger(kube, UP_PREFIX) == entries  # every file skipped
        FIGURES["rows_restored"] = sum(int(v.split()[0]) for v in tables.values())


def test_helm_upgrade_refuses_what_the_installed_release_cannot_take(upgraded):
    kube = UPGRADE
    base = ["upgrade", UP_RELEASE, str(CHART), "-f", str(VALUES), *image_args(NEW_IMAGE), "--dry-run=server"]
    cases = {
        "postgresql.persistence.size changed from 1Gi to 2Gi": ["--set", "postgresql.persistence.size=2Gi"],
        'postgresql.persistence.storageClass changed from "" to "fast"': ["--set", "postgresql.persistence.storageClass=fast"],
        "postgresql.auth.etl.database changed from ecommerce to events": ["--set", "postgresql.auth.etl.database=events"],
        "postgresql.image.tag=17.6-bookworm is PostgreSQL 17": ["--set", "postgresql.image.tag=17.6-bookworm"],
    }
    for message, extra in cases.items():
        refused = kube.helm_result(*base, *extra)
        assert refused.returncode != 0 and message in refused.stderr, (message, refused.stderr[-2000:])
        assert "UPGRADING.md" in refused.stderr
    # the same size written another way is no change
    assert kube.helm_result(*base, "--set", "postgresql.persistence.size=1024Mi").returncode == 0


# --- 3: the major-version guard on a real volume ------------------------------------------------------------
def test_major_guard_refuses_a_volume_of_another_major(images):
    """The StatefulSet's PVC, pre-filled as a PostgreSQL 17 volume would be (17/docker/PG_VERSION),
    before the chart is installed."""
    kube = Kube(CONTEXT, "lc-guard")
    release, prefix = "guard", "guard-ecommerce-etl"
    values = yaml.safe_load(VALUES.read_text())
    pg_image = "postgres:" + yaml.safe_load((CHART / "values.yaml").read_text())["postgresql"]["image"]["tag"]
    kube.create_namespace()
    try:
        with kube.dump_on_failure():
            claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"data-{prefix}-postgresql-0"},
                     "spec": {"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": values["postgresql"]["persistence"]["size"]}}}}
            kube.kubectl("apply", "-f", "-", input=json.dumps(claim))
            restricted = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                          "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
            seed = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "seed"}, "spec": {"backoffLimit": 0, "template": {
                "spec": {"restartPolicy": "Never", "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999},
                         "containers": [{"name": "seed", "image": pg_image, "imagePullPolicy": "IfNotPresent",
                                         "command": ["bash", "-c", "mkdir -p /v/17/docker && echo 17 > /v/17/docker/PG_VERSION"],
                                         "securityContext": restricted,
                                         "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                         "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}]}}}}
            kube.kubectl("apply", "-f", "-", input=json.dumps(seed))
            kube.wait_job("job/seed", timeout=300)
            kube.helm("install", release, str(CHART), "-f", str(VALUES), *image_args(NEW_IMAGE), "--set", "pgadmin.enabled=false",
                      "--timeout", "10m", timeout=900)  # no --wait: PostgreSQL is meant never to start
            deadline = time.monotonic() + 300
            while True:
                logs = kube.kubectl("logs", f"{prefix}-postgresql-0", "-c", "check-data-layout", check=False)
                if "Refusing to start PostgreSQL 18" in logs:
                    break
                assert time.monotonic() < deadline, logs
                time.sleep(5)
            assert "/var/lib/postgresql/17/docker (PostgreSQL 17)" in logs and '"PostgreSQL major upgrade"' in logs, logs
            pod = json.loads(kube.kubectl("get", "pod", f"{prefix}-postgresql-0", "-o", "json"))
            assert not [c for c in pod["status"].get("containerStatuses") or [] if "running" in c["state"]], pod["status"]
            # the image's own entrypoint refuses the same volume (without the chart's check in front)
            kube.helm("uninstall", release, "--wait", timeout=600)
            probe = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "entrypoint"}, "spec": {"backoffLimit": 0, "template": {
                "spec": {"restartPolicy": "Never", "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999},
                         "containers": [{"name": "postgres", "image": pg_image, "imagePullPolicy": "IfNotPresent",
                                         "env": [{"name": "POSTGRES_PASSWORD", "value": "unused-probe"}],
                                         "securityContext": restricted,
                                         "volumeMounts": [{"name": "v", "mountPath": "/var/lib/postgresql"},
                                                          {"name": "run", "mountPath": "/var/run/postgresql"},
                                                          {"name": "tmp", "mountPath": "/tmp"}]}],
                         "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}},
                                     {"name": "run", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}}}}
            kube.kubectl("apply", "-f", "-", input=json.dumps(probe))
            deadline = time.monotonic() + 300
            while not json.loads(kube.kubectl("get", "job/entrypoint", "-o", "json"))["status"].get("failed"):
                assert time.monotonic() < deadline, kube.kubectl("logs", "job/entrypoint", check=False)
                time.sleep(3)
            logs = kube.kubectl("logs", "job/entrypoint")
            assert "/var/lib/postgresql/17/docker" in logs and "refusing to initialise" in logs, logs
            seeded = kube.kubectl("get", "pvc", claim["metadata"]["name"], "-o", "jsonpath={.status.phase}")
            assert seeded == "Bound"
    finally:
        kube.helm("uninstall", release, "--wait", check=False, timeout=600)
        kube.delete_namespace()


# --- 4: helm template | kubectl apply, twice ---------------------------------------------------------------------
def test_two_renderings_apply_with_kubectl(images):
    kube = Kube(CONTEXT, "lc-apply")
    release, prefix = "gitops", "gitops-ecommerce-etl"
    kube.create_namespace()

    def apply(*extra: str) -> None:
        rendered = sh("helm", "template", release, str(CHART), "-n", kube.namespace, "-f", str(VALUES),
                      *image_args(NEW_IMAGE), "--set", "pgadmin.enabled=false", *extra)
        kube.kubectl("apply", "-f", "-", input=rendered, timeout=300)
        for job in json.loads(kube.kubectl("get", "jobs", "-l", "app.kubernetes.io/component=secrets", "-o", "json"))["items"]:
            kube.wait_job(f"job/{job['metadata']['name']}", timeout=600)
        kube.kubectl("rollout", "status", f"statefulset/{prefix}-postgresql", "--timeout=600s", timeout=700)
        for name in ("prefect-server", "worker"):
            kube.kubectl("rollout", "status", f"deploy/{prefix}-{name}", "--timeout=900s", timeout=1000)

    try:
        with kube.dump_on_failure():
            started = time.monotonic()
            apply()
            first = kube.secret(f"{prefix}-db")
            jobs_first = set(kube.kubectl("get", "jobs", "-o", "name").split())
            apply("--set", "deployments.concurrencyLimit=2", "--set", "flowRun.maxParallelFiles=2",
                  "--set", "prefectServer.retention.flowRunDays=10")
            FIGURES["two_renderings_applied_s"] = round(time.monotonic() - started, 1)
            jobs_second = set(kube.kubectl("get", "jobs", "-o", "name").split())
            assert jobs_second - jobs_first, "the second rendering's secrets Job has a name of its own"
            assert kube.secret(f"{prefix}-db")["data"] == first["data"]
            with kube.port_forward(f"{prefix}-prefect-server", 4200) as url:
                deployment = prefect(f"{url}/api", lambda c: c.read_deployment_by_name("ecommerce-etl/sample"))
                assert deployment.global_concurrency_limit.limit == 2  # registered by the new worker pod, no hook
                run = run_deployment(f"{url}/api")
                assert run.state.type.value == "COMPLETED", run.state
    finally:
        kube.delete_namespace()
