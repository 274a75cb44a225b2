"""T3 against real processes: the rendered base job template fed to the real
prefect-kubernetes code for a flow run on a real Prefect server, the `ecommerce-etl deploy`
hook command, and the Postgres init script on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import sqlalchemy as sa

from flows.names import LOAD_FILE_DEPLOYMENT
from flows.localdb import postgres_bin_dir
from helpers import CLI, REPO
from chart_render import (
    VALUE_SETS,
    FULL,
    base_job_template,
    find,
    ingress_allowed,
    job_manifest_for_flow_run,
    render,
    generated_secrets,
    restricted_violations,
    secret_files,
)

pytestmark = pytest.mark.chart

NS = "shop-etl"
VALUES = {
    "image": {"repository": "registry.example:5000/team/ecommerce-etl", "tag": "2.0.1", "pullPolicy": "Always"},
    "kaggle": {"existingSecret": "kaggle-creds"},
    "flowRun": {"tmpSizeLimit": "12Gi"},
}


def _client_call(api_url: str, coro_fn):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def run():
        with temporary_settings({PREFECT_API_URL: api_url}):
            async with get_client() as client:
                return await coro_fn(client)

    return asyncio.run(run())


def _create_run(api_url: str, template: dict, job_variables: dict) -> tuple:
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"t3-{uuid.uuid4().hex[:8]}"

    async def go(client):
        await client.create_work_pool(WorkPoolCreate(name=pool, type="kubernetes", base_job_template=template))
        flow_id = await client.create_flow_from_name("ecommerce-etl")
        deployment_id = await client.create_deployment(
            flow_id=flow_id, name=f"t3-{pool}", work_pool_name=pool,
            entrypoint="flows/etl.py:ecommerce_etl", parameters={"source": "sample"},
            job_variables=job_variables,
        )
        flow_run = await client.create_flow_run_from_deployment(deployment_id)
        return deployment_id, flow_run.id

    return _client_call(api_url, go)


def _validate_job(manifest: dict) -> None:
    """Strict batch/v1 validation. prefect-kubernetes insists on parallelism/completions
    inside the PodSpec (its manifest check requires them there); the API server drops such
    unknown fields, so they are the one thing removed before the strict check."""
    manifest = json.loads(json.dumps(manifest))
    pod = manifest["spec"]["template"]["spec"]
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)
    for version in ("1.31", "1.34"):
        kubernetes_validate.validate(manifest, version, strict=True)


def test_base_job_template_gives_the_job_the_worker_would_create(prefect_server):
    docs = render(VALUES, namespace=NS)
    template = base_job_template(docs)
    deployment_id, flow_run_id = _create_run(
        prefect_server.api_url, template, {"env": {"ETL_TABLE": "events_override", "EXTRA_FLAG": "1"}})
    job = asyncio.run(job_manifest_for_flow_run(prefect_server.api_url, template, deployment_id, flow_run_id))

    _validate_job(job)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["namespace"] == NS
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400 and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{FULL}-flow-run" and pod["automountServiceAccountToken"] is False
    assert restricted_violations(pod) == []
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "12Gi"}} in pod["volumes"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example:5000/team/ecommerce-etl:2.0.1" and c["imagePullPolicy"] == "Always"
    assert c["args"][:3] == ["prefect", "flow-run", "execute"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    # No placement configured: empty, valid fields, but for how long the pod stays on a node that stopped
    # answering (flowRun.nodeLostSeconds); the Job carries checkov's reasons.
    assert (pod["nodeSelector"], pod["tolerations"], pod["affinity"]) == ({}, node_lost(60), {})
    assert job["metadata"]["annotations"]["checkov.io/skip1"].startswith("CKV_K8S_43=")

    names = [e["name"] for e in c["env"]]
    assert len(names) == len(set(names)), f"duplicate env entries: {names}"
    env = {e["name"]: e for e in c["env"]}
    # Prefect's own env, appended by the worker code.
    assert env["PREFECT__FLOW_RUN_ID"]["value"] == str(flow_run_id)
    assert "PREFECT_API_URL" in env
    # The deployment's job_variables env overrides the chart's and adds to it.
    assert env["ETL_TABLE"]["value"] == "events_override" and env["EXTRA_FLAG"]["value"] == "1"
    # Credentials only as files of the Secrets (the Kaggle one optional), never in the env.
    files = secret_files(pod, c)
    assert files[env["PGPASSWORD_FILE"]["value"]] == (f"{FULL}-db", "etl-password")
    assert "PGPASSWORD" not in env
    assert env["PGHOST"]["value"] == f"{FULL}-postgresql" and env["PGUSER"]["value"] == "etl"
    assert files[env["KAGGLE_KEY_FILE"]["value"]] == ("kaggle-creds", "key")
    assert next(v for v in pod["volumes"] if v["name"] == "kaggle")["secret"]["optional"] is True
    passwords = [v for k, v in generated_secrets(docs, namespace=NS).items() if k.endswith("-password")]
    assert passwords and not [p for p in passwords if p in json.dumps(job)]
    for e in c["env"]:
        if any(w in e["name"].upper() for w in ("PASSWORD", "KEY", "SECRET", "TOKEN")):
            # a value only where it names a file of a mounted Secret
            assert "value" not in e or e["value"] in files, e

    # The flow-run pod is what the NetworkPolicies let reach Postgres and the server.
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "flow-run" and labels["prefect.io/flow-run-id"] == str(flow_run_id)
    pg = find(docs, "StatefulSet", f"{FULL}-postgresql")["spec"]["template"]["metadata"]["labels"]
    srv = find(docs, "Deployment", f"{FULL}-prefect-server")["spec"]["template"]["metadata"]["labels"]
    assert ingress_allowed(docs, pg, labels, 5432) and ingress_allowed(docs, srv, labels, 4200)


def test_placement_values_reach_the_job_and_a_run_can_override_them(prefect_server):
    """flowRun.nodeSelector/tolerations/affinity/podAnnotations through the base job template;
    job_variables of a deployment (or one run) replace them, e.g. a nodeSelector no node has."""
    values = VALUE_SETS["production"]
    template = base_job_template(render(values, namespace=NS))
    deployment_id, flow_run_id = _create_run(prefect_server.api_url, template, {})
    job = asyncio.run(job_manifest_for_flow_run(prefect_server.api_url, template, deployment_id, flow_run_id))
    _validate_job(job)
    pod = job["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"pool": "etl"}
    assert pod["spec"]["tolerations"] == node_lost(60) + values["flowRun"]["tolerations"]
    assert pod["spec"]["affinity"] == values["flowRun"]["affinity"]
    assert pod["metadata"]["annotations"] == values["flowRun"]["podAnnotations"]
    assert "@sha256:" in pod["spec"]["containers"][0]["image"]

    nowhere = {"node_selector": {"ecommerce-etl.example/no-such-node": "true"}, "tolerations": []}
    deployment_id, flow_run_id = _create_run(prefect_server.api_url, template, nowhere)
    job = asyncio.run(job_manifest_for_flow_run(prefect_server.api_url, template, deployment_id, flow_run_id))
    _validate_job(job)
    assert job["spec"]["template"]["spec"]["nodeSelector"] == nowhere["node_selector"]
    assert job["spec"]["template"]["spec"]["tolerations"] == []


def node_lost(seconds: int) -> list[dict]:
    return [
        {"key": f"node.kubernetes.io/{key}", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
        for key in ("not-ready", "unreachable")
    ]


def test_sigterm_reschedules_a_run_only_with_backoff_limit_zero(prefect_server):
    """A pod deleted, evicted or drained gets a SIGTERM; its run is rescheduled (AwaitingRetry, a new Job)
    only because flowRun.backoffLimit is 0: prefect-kubernetes then sets the supervisor's SIGTERM behaviour
    to reschedule. Any other value hands the pod back to Kubernetes' retries instead (README, Kubernetes)."""
    behaviour = {}
    for limit in (0, 2):
        template = base_job_template(render({"flowRun": {"backoffLimit": limit, "nodeLostSeconds": 45}}, namespace=NS))
        deployment_id, flow_run_id = _create_run(prefect_server.api_url, template, {})
        job = asyncio.run(job_manifest_for_flow_run(prefect_server.api_url, template, deployment_id, flow_run_id))
        _validate_job(job)
        assert job["spec"]["backoffLimit"] == limit
        assert job["spec"]["template"]["spec"]["tolerations"] == node_lost(45)
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        behaviour[limit] = env.get("PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR")
        # a crashed run is re-run by its pipeline run (load-file) with the chart's bound
        assert (env["ETL_FILE_RETRIES"], env["ETL_RETRY_DELAY_SECONDS"]) == ("2", "10")
    assert behaviour == {0: "reschedule", 2: "relinquish"}


def test_job_variables_can_still_override_image_and_resources(prefect_server):
    template = base_job_template(render(namespace=NS))
    deployment_id, flow_run_id = _create_run(prefect_server.api_url, template, {
        "image": "ecommerce-etl:hotfix", "cpu_limit": "4", "memory_limit": "8Gi", "namespace": "other"})
    job = asyncio.run(job_manifest_for_flow_run(prefect_server.api_url, template, deployment_id, flow_run_id))
    _validate_job(job)
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "ecommerce-etl:hotfix" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    assert job["metadata"]["namespace"] == "other"


def _deploy(prefect_server, template_path: Path, *extra: str) -> subprocess.CompletedProcess:
    assert Path(CLI).exists(), f"console script {CLI} missing (project not installed?)"
    env = {**os.environ, **prefect_server.env}
    return subprocess.run(
        [CLI, "deploy", "--base-job-template", str(template_path), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_deploy_command_registers_pool_and_deployments_idempotently(prefect_server, tmp_path):
    docs = render({"deployments": {"schedule": "0 3 * * *", "timezone": "Europe/Berlin", "sampleRows": 500}})
    # The exact argv and file the worker's register-deployments initContainer runs, pointed at a
    # local copy of the ConfigMap.
    worker = find(docs, "Deployment", f"{FULL}-worker")["spec"]["template"]["spec"]
    hook = next(c for c in worker["initContainers"] if c["name"] == "register-deployments")["command"]
    template = base_job_template(docs)
    template_path = tmp_path / "base-job-template.json"
    template_path.write_text(find(docs, "ConfigMap", f"{FULL}-base-job-template")["data"]["base-job-template.json"])
    pool = f"t3-deploy-{uuid.uuid4().hex[:8]}"
    args = hook[2:]
    args[args.index("--pool") + 1] = pool
    args = args[:args.index("--base-job-template")] + args[args.index("--base-job-template") + 2:]

    async def state(client):
        wp = await client.read_work_pool(pool)
        deps = {}
        for name in ("sample", "kaggle"):
            d = await client.read_deployment_by_name(f"ecommerce-etl/{name}")
            deps[name] = d
        deps["load-file"] = await client.read_deployment_by_name(LOAD_FILE_DEPLOYMENT)
        return wp, deps

    first = _deploy(prefect_server, template_path, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    wp, deps = _client_call(prefect_server.api_url, state)
    assert wp.type == "kubernetes" and wp.base_job_template == template
    for name, source in (("sample", "sample"), ("kaggle", "kaggle")):
        d = deps[name]
        assert d.work_pool_name == pool and d.entrypoint == "flows/etl.py:ecommerce_etl"
        assert d.parameters["source"] == source
    assert deps["sample"].parameters.get("rows_per_file") == 500
    # deployments.concurrencyLimit (1), passed by the hook: the server holds extra runs back.
    # load-file has its own limit, flowRun.maxParallelFiles (below).
    assert {n: deps[n].global_concurrency_limit.limit for n in ("sample", "kaggle")} == {"sample": 1, "kaggle": 1}
    assert [(s.schedule.cron, s.schedule.timezone) for s in deps["kaggle"].schedules] == [("0 3 * * *", "Europe/Berlin")]
    assert deps["sample"].schedules == []
    # One Job per file: the load-file deployment the chart's ETL_FILE_DEPLOYMENT names, limited to
    # flowRun.maxParallelFiles runs at once by the server (a file beyond it waits, never cancelled).
    load_file = deps["load-file"]
    assert load_file.work_pool_name == pool and load_file.entrypoint == "flows/etl.py:file_flow"
    assert load_file.global_concurrency_limit.limit == 3
    assert load_file.concurrency_options.collision_strategy.value == "ENQUEUE"
    env = {e["name"]: e.get("value") for e in
           template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ETL_FILE_DEPLOYMENT"] == LOAD_FILE_DEPLOYMENT and env["ETL_MAX_PARALLEL_FILES"] == "3"
    schema = load_file.parameter_openapi_schema
    assert set(schema["properties"]) == {"file"} and schema["required"] == ["file"]
    assert set(schema["definitions"]["FileRequest"]["properties"]) == {
        "name", "source", "location", "rows_per_file", "table", "run_id"}

    # A second install with another flowRun.maxParallelFiles updates the limit in place.
    args[args.index("--max-parallel-files") + 1] = "5"
    second = _deploy(prefect_server, template_path, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    wp2, deps2 = _client_call(prefect_server.api_url, state)
    assert deps2["load-file"].global_concurrency_limit.limit == 5
    assert deps2["sample"].global_concurrency_limit.limit == 1  # the fan-out's limit is load-file's alone
    assert wp2.id == wp.id and wp2.base_job_template == template
    assert {n: d.id for n, d in deps2.items()} == {n: d.id for n, d in deps.items()}
    assert len(deps2["kaggle"].schedules) == 1

    async def count(client):
        from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
        return len(await client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))))
    assert _client_call(prefect_server.api_url, count) == 3

    # What the worker would run for the hook-registered sample deployment.
    flow_run = _client_call(prefect_server.api_url,
                            lambda c: c.create_flow_run_from_deployment(deps2["sample"].id))
    job = asyncio.run(job_manifest_for_flow_run(prefect_server.api_url, wp2.base_job_template,
                                                deps2["sample"].id, flow_run.id))
    _validate_job(job)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PREFECT__FLOW_RUN_ID"]["value"] == str(flow_run.id)
    assert "PGPASSWORD" not in env and env["PGPASSWORD_FILE"]["value"].startswith("/etc/ecommerce-etl/secrets/")

    # A file's run, as the pipeline run creates it (run_deployment with one file's parameters):
    # the worker builds its Job from the same template, with its own flow run id.
    child = _client_call(prefect_server.api_url, lambda c: c.create_flow_run_from_deployment(
        deps2["load-file"].id, parameters={"file": {"name": "2019-Oct.csv", "source": "sample", "rows_per_file": 500}}))
    child_job = asyncio.run(job_manifest_for_flow_run(prefect_server.api_url, wp2.base_job_template,
                                                      deps2["load-file"].id, child.id))
    _validate_job(child_job)
    pod = child_job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    child_env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert child_env["PREFECT__FLOW_RUN_ID"]["value"] == str(child.id)
    assert child_job["metadata"]["labels"]["prefect.io/flow-run-id"] == str(child.id)
    assert pod["containers"][0]["args"][:3] == ["prefect", "flow-run", "execute"]
    assert {k: v for k, v in pod.items() if k != "containers"} == {
        k: v for k, v in job["spec"]["template"]["spec"].items() if k != "containers"}  # same template


def test_deploy_command_fails_clearly_on_a_bad_template(prefect_server, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a template"}')
    result = _deploy(prefect_server, bad, "--pool", "t3-never")
    assert result.returncode != 0
    assert "base-job-template" in (result.stdout + result.stderr)


def test_postgres_init_script_on_real_postgres(postgres, tmp_path):
    """The initdb script from the rendered ConfigMap, run as the image's entrypoint would:
    two roles and databases, each role reaching only its own database."""
    tag = uuid.uuid4().hex[:6]
    auth = {"prefect": {"username": f"t3p_{tag}", "database": f"t3pdb_{tag}"},
            "etl": {"username": f"t3e_{tag}", "database": f"t3edb_{tag}"}}
    docs = render({"postgresql": {"auth": auth}})
    script = find(docs, "ConfigMap", f"{FULL}-postgresql-initdb")["data"]["10-ecommerce-etl.sh"]
    path = tmp_path / "10-ecommerce-etl.sh"
    path.write_text(script)
    path.chmod(0o755)
    pw = {k.rsplit("/", 1)[1]: v for k, v in generated_secrets(docs).items() if k.startswith(f"{FULL}-db/")}
    # The StatefulSet's env names the password files; they hold what the secrets hook generated.
    sts = find(docs, "StatefulSet", f"{FULL}-postgresql")["spec"]["template"]["spec"]
    files = secret_files(sts, sts["containers"][0])
    sts_env = {e["name"]: e["value"] for e in sts["containers"][0]["env"]}
    env = {**os.environ, "PATH": f"{postgres_bin_dir()}:{os.environ['PATH']}",
           "POSTGRES_USER": "postgres", "PGHOST": postgres.host, "PGPORT": str(postgres.port),
           "PGPASSWORD": postgres.password}
    for name in ("ROLE_PREFECT_PASSWORD_FILE", "ROLE_ETL_PASSWORD_FILE"):
        secret, key = files[sts_env[name]]
        local = tmp_path / key
        local.write_text(pw[key])
        env[name] = str(local)
    # The script revokes PUBLIC CONNECT on postgres/template1 too; restore it for the shared server.
    try:
        subprocess.run([str(path)], env=env, check=True, capture_output=True, text=True, timeout=60)

        def connect(user, password, db):
            engine = sa.create_engine(postgres.tcp_url(user, password, db))
            try:
                with engine.connect() as conn:
                    return conn.execute(sa.text("select current_user || '@' || current_database()")).scalar()
            finally:
                engine.dispose()

        e, p = auth["etl"], auth["prefect"]
        assert connect(e["username"], pw["etl-password"], e["database"]) == f"{e['username']}@{e['database']}"
        assert connect(p["username"], pw["prefect-password"], p["database"]) == f"{p['username']}@{p['database']}"
        for user, password, db in ((e["username"], pw["etl-password"], p["database"]),
                                   (p["username"], pw["prefect-password"], e["database"]),
                                   (e["username"], pw["etl-password"], "postgres")):
            with pytest.raises(sa.exc.OperationalError, match="permission denied for database"):
                connect(user, password, db)
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            connect(e["username"], "wrong-password", e["database"])
        # The data role owns its database, so the pipeline can create its tables.
        engine = sa.create_engine(postgres.tcp_url(e["username"], pw["etl-password"], e["database"]))
        with engine.begin() as conn:
            conn.execute(sa.text("create table t3_probe (id int)"))
        engine.dispose()
    finally:
        postgres.run_sql("GRANT CONNECT ON DATABASE postgres TO PUBLIC")
        postgres.run_sql("GRANT CONNECT ON DATABASE template1 TO PUBLIC")
        for db in (auth["prefect"]["database"], auth["etl"]["database"]):
            postgres.run_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        for role in (auth["prefect"]["username"], auth["etl"]["username"]):
            postgres.run_sql(f'DROP ROLE IF EXISTS "{role}"')
