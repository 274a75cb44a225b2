"""checkov on rendered manifests, for the chart tests.

checkov cannot share the test venv (it pins packaging<24, pytest 9 needs >=24), so it runs from its
own venv: CHECKOV, else .cache/checkov/bin/checkov (`make checkov`), else PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from helpers import REPO

SKIP = re.compile(r"^checkov\.io/skip\d+$")


def checkov_binary() -> str | None:
    for candidate in (os.environ.get("CHECKOV"), str(REPO / ".cache" / "checkov" / "bin" / "checkov"),
                      shutil.which("checkov")):  # fmt: skip
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def without_skips(doc: dict) -> dict:
    """The object without the chart's checkov.io/skipN annotations."""
    doc = json.loads(json.dumps(doc))
    annotations = doc.get("metadata", {}).get("annotations") or {}
    for key in [k for k in annotations if SKIP.match(k)]:
        del annotations[key]
    return doc


def scan(checkov: str, folder: Path) -> dict[str, dict]:
    """checkov over every file of the folder in one run; {file stem: {"failed": [...], "skipped": [...],
    "passed": [...], "resources": n}}."""
    done = subprocess.run([checkov, "-d", str(folder), "--framework", "kubernetes", "--compact", "-o", "json"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    out = {p.stem: {"failed": [], "skipped": [], "passed": [], "resources": set()} for p in folder.glob("*.yaml")}
    for outcome in ("failed", "skipped", "passed"):
        for check in report["results"][f"{outcome}_checks"]:
            entry = out[Path(check["file_path"]).stem]
            entry[outcome].append(check)
            entry["resources"].add(check["resource"])
    return out


def scan_documents(checkov: str, sets: dict[str, list[dict]], workdir: Path) -> tuple[dict, dict]:
    """checkov on each named set of objects, once as given and once without the skip annotations:
    (reports, reports without skips), keyed by set name."""
    rendered, bare = workdir / "rendered", workdir / "bare"
    rendered.mkdir(parents=True, exist_ok=True)
    bare.mkdir(parents=True, exist_ok=True)
    for name, docs in sets.items():
        (rendered / f"{name}.yaml").write_text(yaml.safe_dump_all(docs))
        (bare / f"{name}.yaml").write_text(yaml.safe_dump_all([without_skips(d) for d in docs]))
    return scan(checkov, rendered), scan(checkov, bare)


def assert_value_sets_clean(value_sets: dict[str, dict], workdir: Path) -> dict[str, dict]:
    """Render each value set, scan it, and check what the chart promises: no failed check, and its
    skip annotations hide exactly the checks that fail without them. Skips when checkov is missing;
    returns the reports for further checks."""
    import pytest

    from chart_render import render, strip_source

    checkov = checkov_binary()
    if not checkov:
        pytest.skip("checkov not installed: `make checkov` (own venv under .cache/checkov) or set CHECKOV")
    sets = {name: [strip_source(d) for d in render(values)] for name, values in value_sets.items()}
    reports, without = scan_documents(checkov, sets, workdir)
    failed = {n: sorted({(f["check_id"], f["resource"]) for f in r["failed"]}) for n, r in reports.items()}
    assert {n: f for n, f in failed.items() if f} == {}
    for name, report in reports.items():
        skipped = {(c["check_id"], c["resource"]) for c in report["skipped"]}
        assert skipped == {(c["check_id"], c["resource"]) for c in without[name]["failed"]}, name
    return reports
