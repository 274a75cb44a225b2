"""Print scalar values of a YAML file, read with a real YAML parser (PyYAML), one per line.

Usage: yaml_value.py FILE KEY [KEY ...]      KEY is a dotted path: postgresql.image.tag, name, and a number
                                             picks a list item: deploy.helm.releases.0.name
The scripts in scripts/local-k8s read kind-config.yaml and the chart's values.yaml only through
this file (lib.sh: yaml_value, chart_image, lk_cluster), so no script depends on indentation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def lookup(doc: object, key: str) -> str:
    """The string at a dotted path; anything else (missing, a map, a number, empty) is an error."""
    node = doc
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"{key}: no {part!r} there")
    # An unquoted 9.10 is the float 9.1: only a string is an unambiguous image tag or name.
    if not isinstance(node, str) or not node:
        raise ValueError(f"{key} must be a non-empty (quoted) string, got {node!r}")
    return node


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, keys = Path(argv[0]), argv[1:]
    doc = yaml.safe_load(path.read_text())
    try:
        values = [lookup(doc, key) for key in keys]
    except (KeyError, ValueError) as err:
        print(f"{path}: {err.args[0]}", file=sys.stderr)
        return 1
    print("\n".join(values))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
