"""T2 (real PostgreSQL): the edges of exactly-once.

- identity: two files whose names share a short-hash prefix load at the same time, with the interleaving
  that lost a file's rows forced through the load's checkpoint hook; orphaned segment tables are dropped
  only when they are provably unattached and provably that file's, without waiting for any lock; a
  database whose tables were named by that hash (and whose ledger has no load_id) upgrades in place;
- reasons: a value COPY refuses on the fast path gets the careful path's reason, whole (PostgreSQL's
  notice cuts it to 100 bytes and "...");
- a carriage return in a file name or a quarantined line reaches the quarantine table intact.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from fault_tools import NAMES, CutIn, audit

from flows.load import Tuning, load_file

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
ROW = ("2019-10-01 00:{m:02d}:{s:02d} UTC,view,{n},1487580005134238553,,runail,2.62,463240011,"
       "26dd6e6e-4dac-4778-8d2c-92e149dab885\n")
# Both names' md5 start with bdf9a342: the 32-bit key that once named their internal tables.
COLLIDING = ("2019-Oct-part20184.csv", "2019-Oct-part20266.csv")
SEGMENTED = Tuning(parallel=3, min_segment_bytes=1, block_bytes=4096)


def rows_text(count: int, salt: int = 0) -> str:
    return HEADER + "".join(ROW.format(m=(n // 60) % 60, s=n % 60, n=n + salt) for n in range(count))


def q(engine: sa.Engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]


# --- identity ------------------------------------------------------------------------------
@pytest.mark.parametrize("step, when", [
    ("stage-fast.commit", "after"),  # the first file's segments are committed, not attached
    ("commit.attach", "after"),  # attached, not committed: the interleaving that lost rows (0 rows, ledger 1,000)
])
def test_two_files_whose_name_hashes_share_a_prefix_load_at_once_with_every_row_kept(
        engine, data_db, tmp_path, step, when):
    first, second = COLLIDING
    assert hashlib.md5(first.encode()).hexdigest()[:8] == hashlib.md5(second.encode()).hexdigest()[:8]
    paths = {}
    for salt, name in enumerate(COLLIDING):
        paths[name] = tmp_path / name
        paths[name].write_text(rows_text(1000, salt * 10_000))
    cut_in = CutIn(engine, step, when, lambda: load_file(engine, NAMES, paths[second], tuning=SEGMENTED))
    results = {first: load_file(engine, NAMES, paths[first], tuning=SEGMENTED, checkpoint=cut_in)}
    assert cut_in.fired.is_set(), f"the first load never reached {step} {when}"
    results[second] = cut_in.join()
    assert {n: (r.status, r.load_path, r.rows_loaded) for n, r in results.items()} == {
        first: ("loaded", "fast", 1000), second: ("loaded", "fast", 1000)}
    found = audit(data_db)
    assert found.problems == [] and found.leftovers == []
    assert (found.counts(first), found.counts(second)) == ((1000, 1000, 0), (1000, 1000, 0))
    assert q(engine, "select source_file, count(distinct product_id) from ecommerce_events group by 1 order by 1") == [
        (first, 1000), (second, 1000)]
    # and a rerun skips both: such a loss was permanent, because the ledger said 1,000
    assert [load_file(engine, NAMES, paths[n], tuning=SEGMENTED).status for n in COLLIDING] == ["skipped", "skipped"]


# --- the same reasons on both paths ------------------------------------------------------
LONG_VALUES = {
    "150 ASCII characters": "x" * 150,
    "60 two-byte characters": "\u00e9" * 60,  # 120 bytes: PostgreSQL cuts at a character boundary
    "exactly 100 bytes": "y" * 100,
    "101 bytes": "y" * 101,
    "a value ending in dots": "z" * 100 + "...",
}


@pytest.mark.parametrize("value", LONG_VALUES.values(), ids=LONG_VALUES.keys())
def test_a_long_value_copy_refuses_gets_the_careful_paths_whole_reason_on_the_fast_path(engine, tmp_path, value):
    text = rows_text(3).splitlines(keepends=True)
    text[2] = text[2].replace(",view,", f",{value},")  # line 3: an unknown event type
    results = {}
    for path in ("auto", "careful"):
        file = tmp_path / f"{path}.csv"
        file.write_text("".join(text))
        results[path] = load_file(engine, NAMES, file, tuning=Tuning(path=path))
    assert [r.load_path for r in results.values()] == ["fast", "careful"]
    expected = f'event_type: "{value}" is not one of view, cart, remove_from_cart, purchase'
    assert q(engine, "select source_file, source_line, reason from ecommerce_events_quarantine order by 1") == [
        ("auto.csv", 3, expected), ("careful.csv", 3, expected)]
    assert [r.quarantine_examples[0]["reason"] for r in results.values()] == [expected, expected]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


# --- identity: orphans, and installs with hash-named tables ----------------------------------------------
def legacy_name(kind: str, source_file: str, run: str = "abcdef", index: int | str = "") -> str:
    """How a table was named before load ids: by md5(file name)[:8] and a 24-bit run key."""
    return f"ecommerce_events${kind}{hashlib.md5(source_file.encode()).hexdigest()[:8]}{run}{index}"


def committed_segment(engine: sa.Engine, table: str, source_file: str) -> None:
    """A segment table as a load commits it before attaching it (what a crash leaves behind)."""
    from flows import sql as q

    with engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        for statement in q.create_leaf(NAMES, table, source_file, 2, None, None) + q.finish_leaf(NAMES, table, None):
            cursor.execute(statement)


def tables(engine: sa.Engine) -> set[str]:
    return {r[0] for r in q(engine, "select relname from pg_class where starts_with(relname, 'ecommerce_events$s')")}


def test_orphans_are_dropped_only_when_they_hold_that_files_rows_and_nothing_holds_them(engine, data_db, tmp_path):
    """A crashed load's segment tables, named the old way (a short hash both names share) or the new
    way: the next load of a file drops only its own, proven by their CHECK constraint, and neither
    waits for nor drops one that something holds (a pg_dump holds every table it reads)."""
    mine, other = COLLIDING
    own = {legacy_name("s", mine, "aaaaaa", 0), "ecommerce_events$s_999_0", "ecommerce_events$s_998_c"}
    others = {legacy_name("s", other, "bbbbbb", 0), "ecommerce_events$s_997_0"}
    held = "ecommerce_events$s_996_1"
    for table in own | {held}:
        committed_segment(engine, table, mine)
    for table in others:
        committed_segment(engine, table, other)
    holder = engine.connect()
    try:
        holder.execute(sa.text(f'lock table "{held}" in access share mode'))  # as pg_dump would
        path = write(tmp_path, mine, rows_text(50))
        results = []
        loading = threading.Thread(target=lambda: results.append(load_file(engine, NAMES, path, tuning=SEGMENTED)),
                                   daemon=True)
        loading.start()
        loading.join(30)
        assert not loading.is_alive(), "the load waits for a table that something else holds"
        assert [r.rows_loaded for r in results] == [50]
        assert tables(engine) & (own | others | {held}) == others | {held}
    finally:
        holder.rollback()
        holder.close()
    write(tmp_path, mine, rows_text(60))  # changed: it loads again, and the held orphan goes now
    assert load_file(engine, NAMES, path, tuning=SEGMENTED).rows_loaded == 60
    assert tables(engine) & (own | others | {held}) == others
    assert load_file(engine, NAMES, write(tmp_path, other, rows_text(5)), tuning=SEGMENTED).status == "loaded"
    assert audit(data_db).leftovers == [] and audit(data_db).problems == []


def test_an_install_with_hash_named_tables_and_no_load_id_upgrades_in_place(engine, data_db, tmp_path):
    """Partitions named by the old short hash, a ledger without load_id: the next run adds the column,
    skips unchanged files, replaces a changed one atomically and forgets an old one."""
    from flows.load import ensure_schema, forget_file

    files = {name: write(tmp_path, name, rows_text(20, salt)) for salt, name in enumerate(["a.csv", "b.csv", "c.csv"])}
    for path in files.values():
        assert load_file(engine, NAMES, path).status == "loaded"
    with engine.begin() as conn:  # back to the old layout
        for name, partition in conn.execute(sa.text("select source_file, partition_name from ecommerce_events_ledger")):
            old = legacy_name("p", name)
            conn.execute(sa.text(f'alter table "{partition}" rename to "{old}"'))
            conn.execute(sa.text("update ecommerce_events_ledger set partition_name = :p where source_file = :f"),
                         {"p": old, "f": name})
        conn.execute(sa.text("alter table ecommerce_events_ledger drop column load_id"))
    ensure_schema(engine, NAMES)
    ids = "select count(*), count(distinct load_id), count(load_id) from ecommerce_events_ledger"
    assert q(engine, ids) == [(3, 3, 3)]
    assert [load_file(engine, NAMES, p).status for p in files.values()] == ["skipped"] * 3
    write(tmp_path, "b.csv", rows_text(30, 1))
    changed = load_file(engine, NAMES, files["b.csv"])
    assert (changed.status, changed.rows_loaded) == ("loaded", 30)
    assert forget_file(engine, NAMES, "c.csv").rows_loaded == 20
    found = audit(data_db)
    assert found.problems == [] and found.leftovers == []
    assert {f: found.counts(f) for f in found.ledger} == {"a.csv": (20, 20, 0), "b.csv": (30, 30, 0)}
    partitions = dict(q(engine, "select source_file, partition_name from ecommerce_events_ledger"))
    load_id = q(engine, "select load_id from ecommerce_events_ledger where source_file = 'b.csv'")[0][0]
    assert partitions == {"a.csv": legacy_name("p", "a.csv"), "b.csv": f"ecommerce_events$p_{load_id}"}


# --- names and raw text with carriage returns -------------------------------------------------------
@pytest.mark.parametrize("name, line", [
    ("\r", ROW.format(m=0, s=0, n=1).replace("2019-10-01", "2019-02-29")),  # found by the paired-names fuzzing
    ("cr\rinside.csv", ROW.format(m=0, s=0, n=1).replace("2019-10-01", "2019-02-29")),
    ("plain.csv", "lone\rcarriage-return\n"),  # a raw line with a bare CR and no comma
    ("plain.csv", "x\r\r\n"),  # raw text "x\r": one CR is part of the line ending, the other is not
])
def test_quarantine_rows_with_a_carriage_return_in_the_file_name_or_raw_text_are_written(engine, tmp_path, name, line):
    path = tmp_path / name
    path.write_text(HEADER + line + ROW.format(m=0, s=1, n=2), newline="")
    result = load_file(engine, NAMES, path)
    assert (result.status, result.rows_loaded, result.rows_quarantined) == ("loaded", 1, 1), result.error
    raw = line.removesuffix("\n").removesuffix("\r")
    assert q(engine, "select source_file, source_line, raw_line from ecommerce_events_quarantine") == [(name, 2, raw)]
