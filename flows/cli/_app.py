"""The command line's frame: commands found by module, the parser built from their parameters, and the
one error handler (ConfigError and usage errors: exit 2; anything else: exit 1; with --json exactly
one JSON object on stdout, whatever happened).

A command module defines `HELP` (one line), `Params` (a frozen dataclass of `option`s, see _params.py)
and `execute(params, out) -> int`; it imports what it needs inside `execute`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NoReturn

from flows.cli._params import add_parameters, parameters
from flows.errors import ConfigError
from flows.settings import Secrets

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
STATUS = {EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_CONFIG: "error"}
PROG = "ecommerce-etl"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # a usage error is a configuration error: exit 2, via the handler
        self.print_usage(sys.stderr)
        raise ConfigError(f"{message} (see {self.prog} --help)")


@dataclass
class Output:
    """Where a command's results go: one JSON object on stdout (--json), or people's text on stderr.

    `body` is what the JSON object holds besides status, exit code and error, so a command that fails
    half-way still prints its own shape; `trailer` is what people read after an error (a link)."""

    json: bool
    secrets: Secrets = field(default_factory=Secrets.from_environment)
    body: dict[str, Any] = field(default_factory=dict)
    trailer: list[str] = field(default_factory=list)
    emitted: bool = False

    def learn(self, secrets: Secrets) -> None:
        """Secrets the command read (its settings, a --database-url): never printed from now on."""
        self.secrets = self.secrets | secrets

    def redact(self, text: str) -> str:
        return self.secrets.redact(text)

    def emit(self, code: int, error: str | None = None, **body: Any) -> int:
        """The JSON object (once), with --json; returns the exit code."""
        if self.json and not self.emitted:
            status = {"status": STATUS.get(code, "error"), "exit_code": code, "error": error and self.redact(error)}
            print(json.dumps({**status, **self.body, **body}))
            self.emitted = True
        return code

    def say(self, text: str) -> None:
        """A line for people, on stderr (stdout is the JSON object's, or a command's own data)."""
        print(self.redact(text), file=sys.stderr)

    def fail(self, message: str, code: int) -> int:
        self.emit(code, message)
        self.say(f"{PROG}: error: {message}")
        for line in self.trailer:
            self.say(line)
        return code


def _commands() -> dict[str, ModuleType]:
    package = importlib.import_module("flows.cli")
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
    return {name: importlib.import_module(f"flows.cli.{name}") for name in names}


def build_parser(commands: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=(sys.modules["flows.cli"].__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, module in commands.items():
        add_parameters(sub.add_parser(name, help=module.HELP, description=module.HELP), module.Params)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    argv = sys.argv[1:] if argv is None else argv
    out = Output(json="--json" in argv)  # known before parsing, so a usage error is one JSON object too
    try:
        commands = _commands()
        args = build_parser(commands).parse_args(argv)
        command = commands[args.command_name]
        params = parameters(command.Params, args)
        out.json = bool(getattr(params, "json", False))
        return command.execute(params, out)
    except ConfigError as exc:
        return out.fail(str(exc), EXIT_CONFIG)
    except Exception as exc:
        return out.fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)
