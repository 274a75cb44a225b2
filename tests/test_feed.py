"""T2: the fast path's producer threads (flows/load/feed.py: one per segment, reading, checking and hashing
beside COPY) never outlive their load, whatever ends it: COPY killed by the server, a segment that gives up,
a file that shrinks under the loader. Nothing of such a load stays in the database either."""

from __future__ import annotations

import threading

import psycopg2
import pytest
import sqlalchemy as sa

from flows.load import Tuning, load_file
from flows.sample import write_sample
from flows.sql import Names

NAMES = Names("public", "ecommerce_events")
# many small chunks in three segments, so that every segment is mid-stream when something happens
SMALL = Tuning(parallel=3, min_segment_bytes=1, chunk_bytes=16 << 10)


def feed_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith("-feed")]


def leftovers(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        tables = conn.execute(sa.text("select count(*) from pg_class where starts_with(relname, 'ecommerce_events$')"))
        ledger = conn.execute(sa.text("select count(*) from ecommerce_events_ledger"))
        return tables.scalar_one(), ledger.scalar_one()


def test_copy_killed_by_the_server_leaves_no_thread_and_nothing_committed(engine, postgres, tmp_path):
    (path,) = write_sample(tmp_path, rows_per_file=30_000, files=("2019-Oct.csv",))
    killed = []

    def kill_the_copies(advance: int) -> None:
        """Once COPY is under way: end every backend that runs one (as a restarted server would)."""
        if advance > 0 and not killed:
            admin = psycopg2.connect(postgres.admin_url("postgres").replace("postgresql+psycopg2", "postgresql"))
            try:
                with admin.cursor() as cur:
                    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'COPY %'")
                    killed.extend(cur.fetchall())
            finally:
                admin.close()

    with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError, sa.exc.DBAPIError)):
        load_file(engine, NAMES, path, progress=kill_the_copies, tuning=SMALL)
    assert killed, "no COPY was running"
    assert feed_threads() == []
    engine.dispose()  # the pool may hold connections the server ended
    assert leftovers(engine) == (0, 0)
    assert load_file(engine, NAMES, path, tuning=SMALL).rows_loaded == 30_000


def test_a_segment_that_gives_up_stops_every_producer(engine, tmp_path):
    """A quote near the end refuses the last segment; the others stop mid-stream and the careful path loads
    the file."""
    (path,) = write_sample(tmp_path, rows_per_file=30_000, files=("2019-Oct.csv",))
    data = path.read_bytes()
    last_line = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    quoted = b'"' + last_line[:23] + b'"' + last_line[23:]  # the same record, its timestamp quoted
    path.write_bytes(data[: data.rindex(last_line)] + quoted + b"\n")
    result = load_file(engine, NAMES, path, tuning=SMALL)
    assert (result.status, result.load_path, result.rows_loaded) == ("loaded", "careful", 30_000)
    assert feed_threads() == []


def test_a_file_that_shrinks_during_its_load_leaves_no_thread(engine, tmp_path):
    (path,) = write_sample(tmp_path, rows_per_file=30_000, files=("2019-Oct.csv",))
    size = path.stat().st_size
    cut = []

    def truncate_once(advance: int) -> None:
        if advance > 0 and not cut:
            cut.append(True)
            with path.open("r+b") as f:
                f.truncate(size // 2)

    result = load_file(engine, NAMES, path, progress=truncate_once, tuning=SMALL)
    assert cut and result.status == "failed", result
    assert "being written" in result.error or "changed while loading" in result.error, result.error
    assert feed_threads() == []
    assert leftovers(engine) == (0, 0)
