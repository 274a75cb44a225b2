"""T2: the PostgreSQL that `make run` and the tests start is tuned for bulk loads (flows.localdb.BULK_LOAD_SETTINGS),
and a load then really skips the WAL: its segment tables are created in the loading transaction."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flows import localdb
from flows.cli import _targets
from flows.load import Tuning, load_file
from flows.localdb import BULK_LOAD_SETTINGS
from flows.sample import write_sample
from flows.settings import Settings, copy_segments_for
from flows.sql import Names


def wal_position(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")).scalar_one()
    finally:
        engine.dispose()


def test_the_embedded_server_runs_with_the_bulk_load_settings(postgres):
    shown = {name: postgres.run_sql(f"SHOW {name}").strip() for name in BULK_LOAD_SETTINGS}
    assert shown == BULK_LOAD_SETTINGS


def test_a_fast_load_writes_almost_no_wal(engine, postgres, tmp_path):
    (path,) = write_sample(tmp_path, rows_per_file=60_000, files=("2019-Oct.csv",))  # ~7 MB
    admin = postgres.admin_url("postgres")
    before = wal_position(admin)
    result = load_file(engine, Names("public", "ecommerce_events"), path, tuning=Tuning(parallel=2, min_segment_bytes=1))
    written = wal_position(admin) - before
    assert (result.status, result.load_path, result.rows_loaded) == ("loaded", "fast", 60_000)
    # with wal_level=replica every row would be logged: about as many bytes as the file
    assert written < path.stat().st_size / 10, f"{written:,} bytes of WAL for a {path.stat().st_size:,}-byte file"


@pytest.mark.integration  # starts the real embedded PostgreSQL under ETL_LOCAL_DIR
def test_segments_follow_the_cores_of_a_local_server(monkeypatch, tmp_path):
    assert copy_segments_for(1) == 2
    assert copy_segments_for(2) == 3

    # No database configured: the embedded server runs on this machine, so a load into it takes
    # this machine's cores (flows/cli/_targets.py); ETL_COPY_PARALLELISM, when set, still wins.
    monkeypatch.setattr(localdb, "local_cores", lambda: 7)
    unset = Settings(local_dir=tmp_path, copy_parallelism=None)
    try:
        chosen = _targets.embedded_database(unset)
        assert chosen.embedded and chosen.settings.copy_parallelism == 8
        # the URL it sets names the database `ecommerce`, which exists and answers
        with sa.create_engine(chosen.settings.resolved_database_url()).connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == "ecommerce"
        pinned = _targets.embedded_database(Settings(local_dir=tmp_path, copy_parallelism=3))
        assert pinned.settings.copy_parallelism == 3
    finally:
        _targets.local_postgres(unset).stop()
