"""The local Prefect server of `make run`: UI and API on 127.0.0.1, runs kept in the embedded PostgreSQL.

It runs in the background (`prefect server start`, in its own session), with its pid, log and
PREFECT_HOME under the local state folder, and its metadata in the database `prefect` beside
`ecommerce`. A later `make run` reuses it; `make stop` stops it. This module must not import
prefect: the CLI points Prefect at this server before Prefect reads its settings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from flows.errors import ConfigError
from flows.localdb import LocalPostgres, process_alive

PREFECT_DATABASE = "prefect"
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class LocalPrefectServer:
    state_dir: Path  # holds prefect-server.pid, prefect-server.log and prefect-home/
    port: int
    postgres: LocalPostgres

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "prefect-server.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "prefect-server.log"

    @property
    def home(self) -> Path:
        return self.state_dir / "prefect-home"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    # --- lifecycle -------------------------------------------------------------------------
    def ensure_running(self, timeout: float = 300) -> str:
        """Start the server, or reuse the one a previous run started; returns 'started' or 'reused'."""
        pid, port = self._recorded()
        if pid and port != self.port:  # ETL_PREFECT_PORT changed since it was started
            self.stop()
            pid = None
        if pid:
            self._wait_healthy(pid, timeout)
            return "reused"
        if _port_answers(self.port):
            raise ConfigError(
                f"port {self.port} on 127.0.0.1 is in use by another program, not by the Prefect server this "
                f"project starts: set ETL_PREFECT_PORT to a free port (or stop that program); to run against "
                f"a Prefect server you started yourself, set PREFECT_API_URL=http://127.0.0.1:{self.port}/api"
            )
        self._start()
        return "started"

    def stop(self, timeout: float = 30) -> bool:
        """Stop the server if it runs; True when it was running."""
        pid, _ = self._recorded()
        if not pid:
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if process_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def is_running(self) -> bool:
        return self._recorded()[0] is not None

    def _start(self) -> None:
        self.postgres.start()
        self.postgres.ensure_database(PREFECT_DATABASE)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        with self.log_file.open("a") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting on port {self.port}\n")
        proc = spawn_server(self.port, self._environment(), self.log_file)  # outlives this command
        self.pid_file.write_text(f"{proc.pid} {self.port}\n")
        self._wait_healthy(proc.pid, timeout=300)

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.postgres.url(PREFECT_DATABASE, driver="asyncpg"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_API_URL": "/api",  # relative: the UI works under 127.0.0.1 and localhost alike
            }
        )
        return env

    def _recorded(self) -> tuple[int | None, int | None]:
        """(pid, port) of the server this project started, when it is still that process."""
        try:
            pid_text, port_text = self.pid_file.read_text().split()
            pid, port = int(pid_text), int(port_text)
        except (OSError, ValueError):
            return None, None
        if not process_alive(pid) or not _is_prefect_server(pid):
            self.pid_file.unlink(missing_ok=True)  # stale: the machine restarted or it was killed
            return None, None
        return pid, port

    def _wait_healthy(self, pid: int, timeout: float) -> None:
        """The first start creates and migrates the database: this can take minutes on a busy machine."""
        problem = wait_healthy(self.api_url, lambda: process_alive(pid), timeout)
        if problem == "exited":
            self.pid_file.unlink(missing_ok=True)
            raise RuntimeError(
                f"the local Prefect server exited; its log ({self.log_file}) ends with:\n{self.log_tail()}"
            )
        if problem:
            raise RuntimeError(f"the local Prefect server did not answer within {timeout:.0f}s; see {self.log_file}")

    def log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""


def server_command(port: int, *, services: bool = True) -> list[str]:
    """`prefect server start` on 127.0.0.1:port, from this Python's environment."""
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return command if services else [*command, "--no-services"]


def spawn_server(port: int, env: dict[str, str], log: Path, *, services: bool = True) -> subprocess.Popen:
    """`prefect server start` in its own session (stopped as a process group), its output appended to `log`."""
    with log.open("a") as out:
        return subprocess.Popen(
            server_command(port, services=services),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_healthy(api_url: str, running: Callable[[], bool], timeout: float) -> str | None:
    """None once GET {api_url}/health answers 200; "exited" when `running()` turns false; "timed out".

    The one health check of a Prefect server process we started: the local one, the tests', the benchmarks'."""
    deadline = time.monotonic() + timeout
    while running():
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            return "timed out"
        time.sleep(0.5)
    return "exited"


@contextlib.contextmanager
def prefect_server_process(
    env: dict[str, str], log: Path, *, port: int | None = None, services: bool = True
) -> Iterator[str]:
    """A `prefect server start` child on 127.0.0.1 (tests, benchmarks), stopped on exit; yields its API URL.
    Without `port`, a free one."""
    port = port or _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log.write_text("")
    proc = spawn_server(port, {**env, "PREFECT_API_URL": api_url}, log, services=services)
    try:
        problem = wait_healthy(api_url, lambda: proc.poll() is None, timeout=180)
        if problem:
            raise RuntimeError(f"the Prefect server {problem}; its log ends with:\n{log.read_text()[-LOG_TAIL_CHARS:]}")
        yield api_url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _is_prefect_server(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return b"prefect" in argv and b"server" in argv and b"start" in argv


def _port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def configured_api_url(env: dict[str, str] | os._Environ = os.environ) -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile: a server the user chose."""
    if env.get("PREFECT_API_URL"):
        return env["PREFECT_API_URL"]
    home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
    profiles = Path(env.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(profiles.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    profile = data.get("profiles", {}).get(env.get("PREFECT_PROFILE") or data.get("active", ""), {})
    return profile.get("PREFECT_API_URL") or None
