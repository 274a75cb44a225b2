"""T1: rules of the code's shape that a review would otherwise have to check by eye."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flows.docs import settings_table, with_table
from flows.settings import Settings
from flows.sources import SOURCES
from helpers import REPO

FLOWS = REPO / "flows"
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(FLOWS.rglob("*.py"))


def test_the_readme_configuration_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text()
    assert with_table(readme) == readme, "the README's settings table drifted: run `make docs`"
    assert all(field.description for field in Settings.model_fields.values())
    assert settings_table().count("\n| `") == len(Settings.model_fields)


def test_no_function_in_flows_is_longer_than_60_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long


def _names_a_source(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in SOURCES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_source(e) for e in node.elts)
    return False


def _source_name_tests(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(_names_a_source(n) for n in [node.left, *node.comparators]):
            lines.append(node.lineno)
        if isinstance(node, ast.match_case) and _names_a_source(getattr(node.pattern, "value", None)):
            lines.append(node.pattern.lineno)
    return lines


def test_only_the_source_classes_tell_sources_apart():
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in _modules()
        if FLOWS / "sources" not in path.parents
        for line in _source_name_tests(ast.parse(path.read_text()))
    ]
    assert not found, "a comparison with a source's name outside flows/sources/"


@pytest.mark.parametrize("code", ['if source == "url": pass', 'x = name in ("local", "kaggle")',
                                  'match s:\n    case "sample": pass'])
def test_the_source_name_rule_sees_each_form(code):
    assert _source_name_tests(ast.parse(code))
