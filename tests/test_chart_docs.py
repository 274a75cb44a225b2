"""T3: the chart's three descriptions of its values agree, and the README is generated.

values.yaml (with its `# --` comments) is the source; the README values table is generated from
it by the real helm-docs (scripts/helm-docs.sh, pinned and cached), and values.schema.json
constrains the same keys. The app uid is one value shared by the Dockerfile and the chart.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_render import CHART_DIR, base_job_template, pod_spec, render
from helpers import REPO

pytestmark = pytest.mark.chart

HELM_DOCS = REPO / "scripts" / "helm-docs.sh"


def values() -> dict:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())


def readme_rows() -> dict[str, str]:
    """Key -> description of every row of the README's generated values table."""
    section = (CHART_DIR / "README.md").read_text().split("\n## Values\n", 1)[1]
    rows = re.findall(r"^\| ([A-Za-z0-9_.]+) \| \w+ \| .*? \| (.*) \|$", section, flags=re.M)
    return {k: d for k, d in rows if k != "Key"}  # not the header row


def value_paths(node: dict, prefix: str = "") -> dict[str, object]:
    """Every key of values.yaml as a dotted path -> its value."""
    out = {}
    for k, v in node.items():
        out[f"{prefix}{k}"] = v
        if isinstance(v, dict):
            out.update(value_paths(v, f"{prefix}{k}."))
    return out


def test_readme_is_generated_by_helm_docs_without_drift(tmp_path):
    """Regenerate the README into a copy of the chart with the pinned helm-docs: it must equal
    the committed one (edit values.yaml or README.md.gotmpl, then run scripts/helm-docs.sh)."""
    caches = [
        Path(os.environ.get("HELM_DOCS_CACHE", "/var/cache/ecommerce-etl/tools")),
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ecommerce-etl" / "tools",
    ]
    if not shutil.which("go") and not [b for c in caches for b in c.glob("helm-docs-*/helm-docs")]:
        pytest.skip("helm-docs is not cached and there is no Go toolchain to build it (scripts/helm-docs.sh)")
    built = subprocess.run([str(HELM_DOCS), "--print-path"], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    charts = tmp_path / "charts"
    shutil.copytree(CHART_DIR, charts / CHART_DIR.name)
    (charts / CHART_DIR.name / "README.md").unlink()
    done = subprocess.run(
        [str(HELM_DOCS)], env={**os.environ, "HELM_DOCS_ROOT": str(charts)}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    generated = charts / CHART_DIR.name / "README.md"
    assert generated.is_file(), "helm-docs wrote no README"
    assert filecmp.cmp(generated, CHART_DIR / "README.md", shallow=False), (
        "charts/ecommerce-etl/README.md is stale: run scripts/helm-docs.sh"
    )
    # ...and the generator really reads the comments: change one, and the README follows.
    text = (charts / CHART_DIR.name / "values.yaml").read_text()
    (charts / CHART_DIR.name / "values.yaml").write_text(
        text.replace("# -- Worker replicas.", "# -- Worker replicas (drift probe).")
    )
    subprocess.run(
        [str(HELM_DOCS)],
        env={**os.environ, "HELM_DOCS_ROOT": str(charts)},
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert "Worker replicas (drift probe)." in generated.read_text()


def test_every_value_is_documented_and_every_row_is_a_value():
    rows = readme_rows()
    paths = value_paths(values())
    assert len(rows) >= 50, "the README values table did not parse"
    stale = sorted(set(rows) - set(paths))
    assert not stale, f"README rows without a value in values.yaml: {stale}"

    def undocumented(node, prefix=""):
        for k, v in node.items():
            path = f"{prefix}{k}"
            if path in rows:
                continue  # documented as a whole (e.g. resources)
            if isinstance(v, dict) and v:
                yield from undocumented(v, f"{path}.")
            else:
                yield path

    missing = sorted(undocumented(values()))
    assert not missing, f"values without a `# --` comment (so without a README row): {missing}"
    empty = sorted(k for k, d in rows.items() if not d.strip())
    assert not empty, f"README rows without a description: {empty}"


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_schema_and_values_yaml_have_the_same_keys():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    problems = []

    def walk(node: dict, vals: object, path: str):
        node = _resolve(schema, node)
        props = node.get("properties")
        if not props or not isinstance(vals, dict):
            return
        for key in sorted(set(props) | set(vals)):
            where = f"{path}{key}"
            if key not in vals:
                problems.append(f"{where}: in values.schema.json, not in values.yaml")
            elif key not in props:
                problems.append(f"{where}: in values.yaml, not in values.schema.json")
            else:
                walk(props[key], vals[key], f"{where}.")

    walk(schema, values(), "")
    assert problems == []


# --- the app uid: one value, used by the Dockerfile and the chart ---------------------------------


def test_dockerfile_uid_is_the_chart_image_uid_and_the_build_passes_it():
    uid = values()["image"]["uid"]
    dockerfile = (REPO / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert re.search(rf"^ARG APP_UID={uid}$", final_stage, re.M), "Dockerfile ARG APP_UID differs from image.uid"
    assert re.search(r"^USER \$\{APP_UID\}:\$\{APP_UID\}$", final_stage, re.M)
    assert 'useradd --uid "${APP_UID}"' in final_stage
    build = (REPO / "scripts" / "build-image.sh").read_text()
    assert '--build-arg "APP_UID=$APP_UID"' in build and '["image"]["uid"]' in build


def test_build_script_reads_the_uid_with_a_yaml_parser():
    """The expression build-image.sh runs yields the chart's value (not an indentation guess)."""
    build = (REPO / "scripts" / "build-image.sh").read_text()
    program = re.search(r"-c '([^']+)'", build)[1]
    py = REPO / ".venv" / "bin" / "python"
    out = subprocess.run(
        [str(py if py.exists() else "python3"), "-c", program, str(CHART_DIR / "values.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == values()["image"]["uid"]


@pytest.mark.parametrize("uid", [None, 23456])
def test_every_flow_image_pod_and_the_server_run_as_the_app_uid(uid):
    vals = {"image": {"uid": uid}} if uid else {}
    expected = uid or values()["image"]["uid"]
    docs = render(vals)
    flow_image = f"{values()['image']['repository']}:"
    seen = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        images = {c["image"] for c in spec["containers"]}
        if any(i.startswith(flow_image) or i.startswith("prefecthq/prefect:") for i in images):
            seen.append(doc["metadata"]["name"])
            assert spec["securityContext"]["runAsUser"] == expected, doc["metadata"]["name"]
            assert spec["securityContext"]["runAsGroup"] == expected
    pod = base_job_template(docs)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == expected
    assert len(seen) >= 4, seen  # worker (and its registration), server, two helm test pods
