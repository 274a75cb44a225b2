"""`make reliability`: run the fault, bad-input and security tests and report what they measured.

The scenarios live in the tests (tests/test_faults.py, tests/test_bad_inputs.py,
tests/test_security.py); they publish their measurements with pytest's record_property, and
this collects them from the test reports. A figure counts only for tests that passed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = ("tests/test_faults.py", "tests/test_bad_inputs.py", "tests/test_security.py")


class Collector:
    """(test id, outcome, properties) of every test's call phase (setup errors included)."""

    def __init__(self):
        self.tests: list[tuple[str, str, dict]] = []

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            props: dict = {}
            for key, value in report.user_properties:
                props.setdefault(key, []).append(value)
            self.tests.append((report.nodeid, report.outcome, props))


def summarise(tests: list[tuple[str, str, dict]]) -> tuple[list[str], dict]:
    def passed_with(key):
        return [p for _, outcome, p in tests if outcome == "passed" and key in p]

    def total(key, only_passed=True):
        return sum(sum(p.get(key, [])) for _, outcome, p in tests if outcome == "passed" or not only_passed)

    figures = {
        "kills": len(passed_with("kill_point")),
        "restarts": total("restarts"),
        "concurrent": total("concurrent_runs"),
        "bad_inputs": len(passed_with("bad_input")),
        "lost": total("lost", only_passed=False),
        "duplicated": total("duplicated", only_passed=False),
    }
    checkov = passed_with("checkov_failed") or [p for _, _, p in tests if "checkov_failed" in p]
    outcomes = Counter(outcome for _, outcome, _ in tests)
    lines = [f"tests: {', '.join(f'{n} {o}' for o, n in sorted(outcomes.items()))}"]
    lines.append(
        f"kills survived (SIGKILL + rerun): {figures['kills']}: "
        + ", ".join(p["kill_point"][0] for p in passed_with("kill_point"))
    )
    lines.append(f"Postgres restarts survived: {figures['restarts']}")
    lines.append(f"concurrent runs (exactly once, one loaded + one skipped per file): {figures['concurrent']}")
    lines.append(f"bad-input cases with their expected outcome: {figures['bad_inputs']}")
    for _, outcome, p in tests:
        for case in map(json.loads, p.get("bad_input", [])):
            lines.append(f"  {'ok  ' if outcome == 'passed' else 'FAIL'} {case['case']}: {case['outcome'][:140]}")
    if checkov:
        c = checkov[0]
        figures["checkov_failed"] = c["checkov_failed"][0]
        lines.append(
            f"checkov ({c['checkov_value_sets'][0]} value sets of the chart, each with its flow-run Job): "
            f"{c['checkov_passed'][0]} passed, {c['checkov_failed'][0]} failed, "
            f"{c['checkov_skipped'][0]} skipped by the chart's checkov.io/skip annotations (each with its reason)"
        )
    else:
        figures["checkov_failed"] = "not-run"
        lines.append("checkov: not run (make checkov)")
    failures = [nodeid for nodeid, outcome, _ in tests if outcome == "failed"]
    lines += [f"FAILED {f}" for f in failures]
    lines.append(
        " ".join(
            f"{k}={figures[k]}" for k in ("kills", "restarts", "bad_inputs", "lost", "duplicated", "checkov_failed")
        )
    )
    return lines, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -k sigkill")
    args = parser.parse_args(argv)
    collector = Collector()
    code = pytest.main(
        ["-q", "-p", "no:cacheprovider", *(str(REPO / m) for m in MODULES), *args.pytest_args], plugins=[collector]
    )
    lines, _ = summarise(collector.tests)
    print("\n== reliability ==")
    print("\n".join(lines), flush=True)
    return int(code)


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # Prefect's exit-time logging would otherwise print after the figures
