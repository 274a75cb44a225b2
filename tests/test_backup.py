"""T2/T3: the chart's backup, restore-check and restore scripts (files/backup/, shipped in the
backup ConfigMap) run exactly as rendered, with the rendered CronJob's environment, against a real
PostgreSQL 18 set up by the chart's own init script and loaded by the real loader.

Backup while rows are being written, restore check, a tampered count caught, prune to
backup.keep, change-triggered backups (the chart's install/change Job) pruned apart from the
scheduled ones and never at their expense, and the restore: rows deleted after the backup come back exactly, ledger included,
owner and privileges of the database as before, a rerun of the load skips every file, and the
replaced database is kept.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from chart_render import find, pod_spec, render
from flows.load import ensure_schema, load_file
from flows.localdb import LocalPostgres, postgres_bin_dir
from flows.sample import write_sample
from flows.sql import Names
from helpers import started_postgres, tcp_url

# a PostgreSQL of its own (set up by the chart's init script) and the Helm engine
pytestmark = [pytest.mark.integration, pytest.mark.chart]

FULL = "etl-ecommerce-etl"
AUTH = {"prefect": {"username": "bk_prefect", "database": "bk_prefect_db"},
        "etl": {"username": "bk_etl", "database": "bk_ecommerce"}}
VALUES = {"postgresql": {"auth": AUTH}, "backup": {"keep": 2}}
NAMES = Names("public", "ecommerce_events")
ROWS_PER_FILE = 400
CHANGE_KEEP = 3  # change-triggered backups kept (backup.sh, README "Backups and restore")


class Release:
    """A PostgreSQL set up as the chart's init script sets it up, and the backup scripts beside it."""

    def __init__(self, server: LocalPostgres, password: str, work: Path):
        self.server, self.password, self.work = server, password, work
        docs = render(VALUES)
        self.scripts = work / "scripts"
        self.scripts.mkdir()
        for name, text in find(docs, "ConfigMap", f"{FULL}-backup")["data"].items():
            (self.scripts / name).write_text(text)
        self.backups = work / "backups"
        self.backups.mkdir()
        (work / "postgres-password").write_text(password)
        container = pod_spec(find(docs, "CronJob", f"{FULL}-backup"))["containers"][0]
        self.rendered_env = {e["name"]: e["value"] for e in container["env"]}
        self.command = container["command"]
        self.passwords = {"prefect": secrets.token_urlsafe(12), "etl": secrets.token_urlsafe(12)}
        self._init_databases(docs)

    def _init_databases(self, docs) -> None:
        script = self.work / "10-ecommerce-etl.sh"
        script.write_text(find(docs, "ConfigMap", f"{FULL}-postgresql-initdb")["data"]["10-ecommerce-etl.sh"])
        script.chmod(0o755)
        env = {**self.env(), "POSTGRES_USER": "postgres", "PGPASSWORD": self.password}
        for role in ("prefect", "etl"):
            (self.work / f"{role}-password").write_text(self.passwords[role])
            env[f"ROLE_{role.upper()}_PASSWORD_FILE"] = str(self.work / f"{role}-password")
        subprocess.run([str(script)], env=env, check=True, capture_output=True, text=True, timeout=60)

    def env(self, **extra: str) -> dict[str, str]:
        """The CronJob's environment, pointed at this server and folder."""
        return {"PATH": f"{postgres_bin_dir()}:/usr/bin:/bin", "LC_ALL": "C.UTF-8",
                **self.rendered_env, "PGHOST": "127.0.0.1", "PGPORT": str(self.server.port),
                "PGPASSWORD_FILE": str(self.work / "postgres-password"), "BACKUP_ROOT": str(self.backups),
                **extra}

    def run(self, script: str, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
        assert self.command[0] == "bash"
        done = subprocess.run(["bash", str(self.scripts / script), *args], env=self.env(**extra),
                              capture_output=True, text=True, timeout=300)
        if check:
            assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done

    def url(self, role: str, db: str | None = None) -> str:
        if role == "postgres":
            return tcp_url(self.server, "postgres", self.password, db or "postgres")
        return tcp_url(self.server, AUTH[role]["username"], self.passwords[role], db or AUTH[role]["database"])

    def query(self, role: str, sql: str, db: str | None = None) -> list:
        engine = sa.create_engine(self.url(role, db))
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(sql))
                return result.all() if result.returns_rows else []
        finally:
            engine.dispose()

    def backup_names(self) -> list[str]:
        return sorted(p.name for p in self.backups.iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    with started_postgres("backup", secrets.token_urlsafe(16)) as pg:
        yield Release(pg.server, pg.password, tmp_path_factory.mktemp("backup"))


@pytest.fixture(scope="module")
def loaded(release, tmp_path_factory):
    """The sample loaded by the real loader as the data role; a Prefect-like table as the prefect role."""
    files = write_sample(tmp_path_factory.mktemp("sample"), rows_per_file=ROWS_PER_FILE)
    engine = sa.create_engine(release.url("etl"))
    try:
        ensure_schema(engine, NAMES)
        assert [load_file(engine, NAMES, f).status for f in files] == ["loaded"] * len(files)
    finally:
        engine.dispose()
    release.query("prefect", "CREATE TABLE flow_run (id bigserial PRIMARY KEY, name text NOT NULL)")
    release.query("prefect", "INSERT INTO flow_run (name) SELECT 'run-' || i FROM generate_series(1, 50) i")
    return files


ACL_SQL = ("SELECT datdba::regrole::text, array(SELECT a::text FROM unnest(datacl) a ORDER BY 1) "
           "FROM pg_database WHERE datname = 'bk_ecommerce'")


def _fingerprint(release, table: str = "ecommerce_events") -> tuple:
    """Row count and an order-independent digest of every row of a table."""
    return tuple(release.query("etl", f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t")[0])


def test_backup_counts_match_the_dump_while_rows_are_written(release, loaded):
    """The counts are read in the dump's own snapshot: rows committed during the dump are in
    neither, so the restore check matches although the table grew all along."""
    stop = threading.Event()
    inserted = []

    def writer():
        engine = sa.create_engine(release.url("prefect"))
        try:
            while not stop.is_set():
                with engine.begin() as conn:
                    conn.execute(sa.text("INSERT INTO flow_run (name) VALUES ('during-backup')"))
                inserted.append(1)
                time.sleep(0.005)
        finally:
            engine.dispose()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        done = release.run("backup.sh")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    (name,) = release.backup_names()
    folder = release.backups / name
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["bk_prefect_db.dump", "bk_ecommerce.dump", "counts.tsv", "globals.sql", "server-version"])
    counts = {tuple(line.split("\t")[:2]): int(line.split("\t")[2]) for line in (folder / "counts.tsv").read_text().splitlines()}
    # every partition of the events table (one per file), the ledger and the quarantine, counted on their own
    partitions = [n for (db, t), n in counts.items() if db == "bk_ecommerce" and t.startswith('public."ecommerce_events$')]
    assert partitions == [ROWS_PER_FILE] * len(loaded)
    assert counts[("bk_ecommerce", "public.ecommerce_events_ledger")] == len(loaded)
    in_dump = counts[("bk_prefect_db", "public.flow_run")]
    live = release.query("prefect", "SELECT count(*) FROM flow_run")[0][0]
    assert len(inserted) > 20 and 50 < in_dump < live, (in_dump, live, len(inserted))  # the dump was taken mid-stream
    assert "PASSWORD" not in (folder / "globals.sql").read_text().upper().replace("NOPASSWORD", "")
    assert f"backup {name} complete" in done.stdout

    check = release.run("verify.sh")
    assert "every count as dumped" in check.stdout and f"restore check passed: backup {name}" in check.stdout
    # the scratch databases are gone again
    assert not release.query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'restore_check_%'")


def test_restore_check_catches_a_dump_that_does_not_match(release, loaded):
    name = release.backup_names()[-1]
    counts = release.backups / name / "counts.tsv"
    original = counts.read_text()
    try:
        counts.write_text(original.replace("public.ecommerce_events_ledger\t5", "public.ecommerce_events_ledger\t6"))
        assert counts.read_text() != original
        failed = release.run("verify.sh", name, check=False)
        assert failed.returncode != 0
        assert f"backup {name} does not restore to the counts it was taken with" in failed.stderr
        assert "public.ecommerce_events_ledger\t6" in failed.stdout  # the diff names the table
    finally:
        counts.write_text(original)


def test_restore_brings_back_exactly_the_backed_up_rows(release, loaded):
    release.run("backup.sh")
    backed_up = {t: _fingerprint(release, t) for t in ("ecommerce_events", "ecommerce_events_ledger")}
    acl_before = release.query("postgres", ACL_SQL)
    # the loss: rows and a ledger entry deleted, a file's partition emptied
    release.query("etl", "DELETE FROM ecommerce_events WHERE source_file = '2019-Nov.csv'")
    release.query("etl", "DELETE FROM ecommerce_events_ledger WHERE source_file = '2019-Dec.csv'")
    assert _fingerprint(release)[0] == ROWS_PER_FILE * (len(loaded) - 1)
    # a client holding a connection to the live database does not stop the swap
    holder = sa.create_engine(release.url("etl"))
    conn = holder.connect()
    try:
        done = release.run("restore.sh", RESTORE_DATABASES="bk_ecommerce")
    finally:
        conn.close()
        holder.dispose()
    assert "every table's row count as dumped" in done.stdout
    assert {t: _fingerprint(release, t) for t in backed_up} == backed_up
    assert release.query("postgres", ACL_SQL) == acl_before
    # the data role still reaches only its own database
    with pytest.raises(sa.exc.OperationalError, match="permission denied for database"):
        release.query("etl", "SELECT 1", db="bk_prefect_db")
    # the replaced database is kept, with the loss in it; only the asked-for database was restored
    (replaced,) = [r[0] for r in release.query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'bk_ecommerce_replaced_%'")]
    assert release.query("postgres", "SELECT count(*) FROM ecommerce_events", db=replaced)[0][0] == ROWS_PER_FILE * 4
    assert not release.query("postgres", "SELECT 1 FROM pg_database WHERE datname LIKE 'bk_prefect_db_replaced_%'")
    # a rerun of the load skips every file: the ledger and the rows agree again
    engine = sa.create_engine(release.url("etl"))
    try:
        assert [load_file(engine, NAMES, f).status for f in loaded] == ["skipped"] * len(loaded)
    finally:
        engine.dispose()
    assert {t: _fingerprint(release, t) for t in backed_up} == backed_up


def test_prune_keeps_the_newest_backups(release, loaded):
    for _ in range(2):
        time.sleep(1.1)  # backup folders are named by the second
        release.run("backup.sh")
    names = release.backup_names()
    assert len(names) == VALUES["backup"]["keep"] and names == sorted(names)
    # a leftover of a backup that died long ago goes; one that may still be running stays
    old, recent = release.backups / ".partial-20200101T000000Z", release.backups / ".partial-20990101T000000Z"
    old.mkdir()
    recent.mkdir()
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    time.sleep(1.1)
    release.run("backup.sh")
    assert not old.exists() and recent.exists()
    assert release.backup_names()[0] == names[1]


def test_change_backups_never_prune_the_scheduled_ones(release, loaded):
    """The Job of every install and values change (BACKUP_KIND=change, as the chart renders it)
    writes <time>-change folders and keeps the newest CHANGE_KEEP of those only: a day of routine
    upgrades leaves every scheduled backup where it was. "latest" is the newest of either kind."""
    docs = render(VALUES)
    from chart_render import find_versioned

    job_env = {e["name"]: e["value"] for e in pod_spec(find_versioned(docs, "Job", f"{FULL}-backup"))["containers"][0]["env"]}
    assert job_env["BACKUP_KIND"] == "change" and release.rendered_env.get("BACKUP_KIND", "scheduled") == "scheduled"
    scheduled = release.backup_names()
    assert len(scheduled) == VALUES["backup"]["keep"] and not [n for n in scheduled if n.endswith("-change")]
    changes = []
    for _ in range(CHANGE_KEEP + 2):
        time.sleep(1.1)  # backup folders are named by the second
        done = release.run("backup.sh", BACKUP_KIND="change")
        (new,) = set(release.backup_names()) - set(scheduled) - set(changes)
        assert new.endswith("-change") and f"backup {new} complete" in done.stdout
        changes = sorted([*changes, new])[-CHANGE_KEEP:]
        assert release.backup_names() == sorted(scheduled + changes)  # no scheduled backup pruned
    # the newest backup of either kind is the one a restore (and its check) takes by default
    check = release.run("verify.sh")
    assert f"restore check passed: backup {changes[-1]}" in check.stdout
    assert [line.split("\t")[0] for line in release.run("restore.sh", "list").stdout.splitlines()] == release.backup_names()
    # a scheduled backup prunes scheduled ones only, by backup.keep, and is then the latest
    time.sleep(1.1)
    release.run("backup.sh")
    (newest,) = set(release.backup_names()) - set(scheduled) - set(changes)
    assert release.backup_names() == sorted([*scheduled[1:], newest, *changes])
    assert f"restore check passed: backup {newest}" in release.run("verify.sh").stdout
    unknown = release.run("backup.sh", BACKUP_KIND="weekly", check=False)
    assert unknown.returncode != 0 and "BACKUP_KIND" in unknown.stderr


def test_restore_of_a_missing_backup_names_what_exists(release, loaded):
    failed = release.run("restore.sh", "20000101T000000Z", check=False)
    assert failed.returncode != 0
    assert "no backup 20000101T000000Z" in failed.stderr and release.backup_names()[-1] in failed.stderr


def test_restore_lists_the_backups_with_their_rows(release, loaded):
    listed = release.run("restore.sh", BACKUP="list").stdout.splitlines()
    assert [line.split("\t")[0] for line in listed] == release.backup_names()
    assert f"bk_ecommerce {ROWS_PER_FILE * len(loaded) + len(loaded)} rows" in listed[-1]  # events + ledger
