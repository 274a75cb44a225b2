"""Where a command's work goes: the database (configured, or the embedded one) and the Prefect server
(the user's, or the local one). Shared by run, forget and psql."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flows.errors import ConfigError

if TYPE_CHECKING:
    from flows.localdb import LocalPostgres
    from flows.localserver import LocalPrefectServer
    from flows.settings import Settings

EMBEDDED_DATABASE = "ecommerce"


def local_postgres(settings: Settings) -> LocalPostgres:
    from flows.localdb import LocalPostgres

    return LocalPostgres(settings.local_db_dir)


def local_prefect(settings: Settings) -> LocalPrefectServer:
    from flows.localserver import LocalPrefectServer

    return LocalPrefectServer(settings.local_dir.resolve(), settings.prefect_port, local_postgres(settings))


@dataclass(frozen=True)
class Database:
    settings: Settings  # with database_url set to where the data goes
    where: str  # for people
    embedded: bool


def configured_database(settings: Settings, database_url: str | None) -> Database | None:
    """The run's database when one is configured: --database-url, else DATABASE_URL/PG*; else None."""
    from pydantic import SecretStr

    from flows.settings import normalise_database_url

    if database_url:
        url = normalise_database_url(database_url, "--database-url")
        chosen = settings.model_copy(update={"database_url": SecretStr(url)})
        return Database(chosen, "the PostgreSQL of --database-url", embedded=False)
    if settings.resolved_database_url():
        return Database(settings, "the configured PostgreSQL", embedded=False)
    return None


def embedded_database(settings: Settings) -> Database:
    """No database configured: the embedded server under ETL_LOCAL_DIR (started if needed), database ecommerce."""
    from pydantic import SecretStr

    from flows.localdb import local_cores
    from flows.settings import copy_segments_for

    server = local_postgres(settings).start()
    server.ensure_database(EMBEDDED_DATABASE)
    where = f"the embedded PostgreSQL in {settings.local_db_dir.resolve()} (database {EMBEDDED_DATABASE})"
    # it runs here, so its cores are known
    segments = settings.copy_parallelism or copy_segments_for(local_cores())
    update = {"database_url": SecretStr(server.url(EMBEDDED_DATABASE)), "copy_parallelism": segments}
    return Database(settings.model_copy(update=update), where, embedded=True)


def database(settings: Settings, database_url: str | None) -> Database:
    return configured_database(settings, database_url) or embedded_database(settings)


def check_database(settings: Settings) -> None:
    """One connection before anything starts: a wrong or unreachable database fails now, clearly."""
    import sqlalchemy as sa

    engine = sa.create_engine(settings.required_database_url(), connect_args={"connect_timeout": 10})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        reason = " ".join(str(exc.orig).split())
        raise ConfigError(
            f"cannot use the database: {reason} (check DATABASE_URL or PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE)"
        ) from None
    finally:
        engine.dispose()


def prefect_ui(settings: Settings) -> str:
    """Point Prefect at the user's server, or at the local one (started or reused); returns the UI URL.

    This runs before anything imports prefect, which reads PREFECT_API_URL once, on import."""
    from flows.localserver import configured_api_url

    api = configured_api_url()
    if api:
        return api.rstrip("/").removesuffix("/api")
    server = local_prefect(settings)
    if not server.is_running():
        print(
            f"Starting the local Prefect server on {server.ui_url} (the first start sets up its database; "
            f"log: {server.log_file})",
            file=sys.stderr,
        )
    server.ensure_running()
    os.environ["PREFECT_API_URL"] = server.api_url
    return server.ui_url
