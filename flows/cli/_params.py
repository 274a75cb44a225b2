"""Typed command parameters: a frozen dataclass per command, its fields carrying their argparse options.

    @dataclass(frozen=True)
    class Params:
        table: str | None = option("--table", help="target table")

The parser is built from the fields (`add_parameters`), and the parsed namespace becomes the dataclass
(`parameters`), so a command's code sees typed values and never argparse's namespace.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, field, fields
from typing import Any, TypeVar

P = TypeVar("P")


def option(*flags: str, default: Any = None, group: str | None = None, **argparse_options: Any) -> Any:
    """A parameter: its flags (none: a positional argument named like the field), argparse's options,
    and the mutually exclusive `group` it belongs to, if any."""
    metadata = {"flags": flags, "group": group, "argparse": argparse_options}
    required = argparse_options.get("required") or not flags
    return field(metadata=metadata) if required else field(default=default, metadata=metadata)


def add_parameters(parser: argparse.ArgumentParser, params: type) -> None:
    groups: dict[str, Any] = {}
    for f in fields(params):
        flags, group = f.metadata["flags"], f.metadata["group"]
        options = dict(f.metadata["argparse"])
        target: Any = parser
        if group:
            if group not in groups:
                groups[group] = parser.add_mutually_exclusive_group()
            target = groups[group]
        if not flags:
            target.add_argument(f.name, **options)
            continue
        if f.default is not MISSING:
            options.setdefault("default", f.default)
        target.add_argument(*flags, dest=f.name, **options)


def parameters(params: type[P], namespace: argparse.Namespace) -> P:
    return params(**{f.name: getattr(namespace, f.name) for f in fields(params)})  # type: ignore[arg-type]


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def database_url_option() -> Any:
    return option(
        "--database-url",
        help="PostgreSQL URL; default DATABASE_URL, then PG* variables, "
        "then an embedded PostgreSQL under ETL_LOCAL_DIR",
    )


def table_option() -> Any:
    return option("--table", help="target table (default ETL_TABLE or ecommerce_events)")
