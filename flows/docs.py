"""The README's configuration table, generated from the settings' fields (as helm-docs does for the chart).

python -m flows.docs     (make docs) rewrites it; tests/test_docs.py fails when it drifts
"""

from __future__ import annotations

import sys
from pathlib import Path

from flows.settings import Settings

BEGIN = "<!-- settings table: generated from flows/settings.py by `make docs`, do not edit -->"
END = "<!-- end of settings table -->"


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for field in Settings.model_fields.values():
        default = "—" if field.default is None else f"`{field.default}`"
        lines.append(f"| `{field.validation_alias}` | {default} | {field.description} |")
    return "\n".join(lines)


def with_table(readme: str) -> str:
    """The README with its table section replaced by the generated one."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"the README has no settings table section ({BEGIN} ... {END})")
    return f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}"


def main(readme: Path = Path("README.md")) -> int:
    text = readme.read_text()
    updated = with_table(text)
    if updated != text:
        readme.write_text(updated)
        print(f"{readme}: settings table updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
