"""T2: one regression test per load defect found by review, on a real PostgreSQL, on both load paths where a
file can take either (the careful path forced, and the default choice)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from oracle import expected_fate

from flows.errors import ConfigError
from flows.load import Tuning, ensure_schema, forget_file, load_file
from flows.load.careful import _Batch
from flows.csv_spec import CSV_HEADER
from flows.sql import Names
from helpers import CLI

NAMES = Names("public", "ecommerce_events")
HEADER = ",".join(CSV_HEADER) + "\n"
GOOD = ("2019-10-01 00:00:{s:02d} UTC,view,5773203,1487580005134238553,,runail,2.62,463240011,"
        "26dd6e6e-4dac-4778-8d2c-92e149dab885\n")
PATHS = {"careful": Tuning(path="careful"), "auto": Tuning()}


def rows(engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]


def state(engine, file: str) -> tuple[list, dict]:
    """(loaded source lines, {quarantined line: (raw, reason)}) of one file."""
    loaded = [r[0] for r in rows(engine, "select source_line from ecommerce_events where source_file = :f order by 1",
                                 f=file)]
    quarantined = {r[0]: (r[1], r[2]) for r in rows(
        engine, "select source_line, raw_line, reason from ecommerce_events_quarantine where source_file = :f", f=file)}
    return loaded, quarantined


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
    return path


# --- 1: line numbers after multi-line records --------------------------------------------------
MULTILINE = (HEADER + GOOD.format(s=1)
             + GOOD.format(s=2).replace(",,runail", ',"two\nlines",runail')  # lines 3-4: one good record
             + GOOD.format(s=3).replace("2.62", "bad")  # line 5
             + GOOD.format(s=4) + GOOD.format(s=5))  # lines 6-7


@pytest.mark.parametrize("path", PATHS)
def test_the_bad_line_after_a_multiline_record_is_the_one_quarantined(engine, tmp_path, path):
    file = write(tmp_path, f"multi-{path}.csv", MULTILINE)
    result = load_file(engine, NAMES, file, tuning=PATHS[path])
    assert (result.status, result.rows_read, result.rows_loaded, result.rows_quarantined) == ("loaded", 5, 4, 1)
    loaded, quarantined = state(engine, file.name)
    assert loaded == [2, 3, 6, 7]
    bad = GOOD.format(s=3).replace("2.62", "bad").rstrip("\n")
    assert quarantined == {5: (bad, 'price: "bad" is not a finite decimal number')}


@pytest.mark.parametrize("path", PATHS)
def test_a_bad_multiline_record_at_the_end_is_quarantined_whole(engine, tmp_path, path):
    bad_last = GOOD.format(s=9).replace(",,runail", ',"x\ny",runail').replace("2.62", "bad")
    file = write(tmp_path, f"multi-last-{path}.csv", HEADER + GOOD.format(s=1) + bad_last)
    result = load_file(engine, NAMES, file, tuning=PATHS[path])
    assert (result.status, result.rows_loaded, result.rows_quarantined) == ("loaded", 1, 1)
    assert state(engine, file.name)[1] == {3: (bad_last.rstrip("\n"), 'price: "bad" is not a finite decimal number')}


def test_copy_lines_map_back_to_records_across_quoted_line_breaks():
    batch = _Batch()
    batch.add(2, "a", "x\n")
    batch.add(3, "b", '"multi\nline"\n')  # COPY lines 2-3
    batch.add(5, "c", "y\n")  # COPY line 4
    assert [batch.record_at(n)[0] for n in (1, 2, 3, 4)] == [2, 3, 3, 5]


# --- 2: file-level problems fail only their file, at once --------------------------------------
FILE_LEVEL = {
    "cr-only.csv": ((HEADER + GOOD.format(s=1)).replace("\n", "\r").encode(), "carriage return"),
    "long-header.csv": (("x" * 131_073 + "," + HEADER + GOOD.format(s=1)).encode(), "longer than 65536 bytes"),
    "quoted-header.csv": (('"event_time' + HEADER[10:] + GOOD.format(s=1)).encode(), "not a CSV header"),
}


@pytest.mark.parametrize("name", FILE_LEVEL)
def test_file_level_problems_fail_that_file_with_a_message_and_the_next_file_loads(engine, tmp_path, name):
    data, message = FILE_LEVEL[name]
    started = time.monotonic()
    bad = load_file(engine, NAMES, write(tmp_path, name, data))
    assert (bad.status, bad.rows_read) == ("failed", 0) and message in bad.error, bad.error
    assert time.monotonic() - started < 10
    assert load_file(engine, NAMES, write(tmp_path, "good.csv", HEADER + GOOD.format(s=1))).status == "loaded"
    assert rows(engine, "select source_file from ecommerce_events_ledger") == [("good.csv",)]


def test_a_file_name_that_is_not_utf8_fails_that_file_with_a_message(engine, tmp_path):
    name = os.fsdecode(b"caf\xe9.csv")
    result = load_file(engine, NAMES, write(tmp_path, name, HEADER + GOOD.format(s=1)))
    assert result.status == "failed" and "is not valid UTF-8: rename the file" in result.error
    assert rows(engine, "select count(*) from ecommerce_events_ledger") == [(0,)]


# --- 3: the ledger holds the checksum of the bytes loaded; a file changing mid-load fails ----------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("how", ["in-place", "appended"])
def test_a_file_rewritten_during_its_load_fails_and_commits_nothing(engine, tmp_path, path, how):
    file = write(tmp_path, f"changing-{path}-{how}.csv", HEADER + "".join(GOOD.format(s=s % 60) for s in range(20_000)))
    rewritten = []

    def rewrite_once(advance):
        """Once the loader has read its first chunk, rewrite bytes it has already read (in place, same
        size: only the bytes can tell), or append rows (the size tells)."""
        if advance > 0 and not rewritten:
            rewritten.append(True)
            with file.open("r+b") as f:
                if how == "in-place":
                    f.seek(len(HEADER))
                    f.write(GOOD.format(s=7).replace("view", "cart").encode() * 100)
                else:
                    f.seek(0, 2)
                    f.write(GOOD.format(s=7).replace("view", "cart").encode() * 100)

    tuning = Tuning(path=PATHS[path].path, chunk_bytes=64 << 10)
    result = load_file(engine, NAMES, file, progress=rewrite_once, tuning=tuning)
    assert rewritten and result.status == "failed", result
    assert "changed while loading" in result.error or "being written" in result.error, result.error
    assert rows(engine, "select count(*) from ecommerce_events_ledger") == [(0,)]
    assert rows(engine, "select count(*) from pg_class where starts_with(relname, 'ecommerce_events$')") == [(0,)]
    # once the file is complete it loads, and the ledger's checksum is that of the bytes now in the table
    again = load_file(engine, NAMES, file, tuning=tuning)
    assert again.status == "loaded" and again.rows_loaded == 20_000 + (100 if how == "appended" else 0)
    assert rows(engine, "select count(*) from ecommerce_events where event_type = 'cart'") != [(0,)]
    assert load_file(engine, NAMES, file, tuning=tuning).status == "skipped"


# --- 4: a changed file whose name has a backslash is replaced -----------------------------------
def test_a_changed_file_with_a_backslash_in_its_name_is_replaced(engine, tmp_path):
    file = write(tmp_path, "back\\slash.csv", HEADER + GOOD.format(s=1))
    assert load_file(engine, NAMES, file).status == "loaded"
    file.write_text(HEADER + GOOD.format(s=1) + GOOD.format(s=2))
    again = load_file(engine, NAMES, file)
    assert (again.status, again.rows_loaded) == ("loaded", 2), again.error
    assert rows(engine, "select count(*) from ecommerce_events") == [(2,)]
    assert rows(engine, "select count(*) from pg_inherits where inhparent = 'ecommerce_events'::regclass") == [(1,)]


# --- 5: table names whose objects would meet another's ------------------------------------------
@pytest.mark.parametrize("first, second, taken", [
    ("sales_price", "sales", "sales_price"),  # the price domain would be the other table's row type
    ("sales", "sales_price", "sales_price"),  # and the other way round
    ("te_event_type", "te", "te_event_type"),
    ("tl_ledger", "tl", "tl_ledger"),
])
def test_a_table_name_whose_objects_are_taken_is_refused_with_a_message(data_db, first, second, taken):
    engine = sa.create_engine(data_db)
    try:
        ensure_schema(engine, Names("public", first))
        with pytest.raises(ConfigError, match=rf"--table='{second}' cannot be used.*public\.{taken} already exists"):
            ensure_schema(engine, Names("public", second, table_setting="--table"))
        # nothing half-made, and the first table still loads
        assert rows(engine, "select count(*) from pg_class where relname = :t", t=second) == [(0,)]
    finally:
        engine.dispose()


def test_a_preexisting_table_that_is_not_ours_is_refused(data_db, tmp_path):
    engine = sa.create_engine(data_db)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table orders (id int)"))
        refused = r"ETL_TABLE='orders' cannot be used.*public\.orders already exists as a table"
        with pytest.raises(ConfigError, match=refused):
            ensure_schema(engine, Names("public", "orders"))
    finally:
        engine.dispose()


# --- 6, 7, 9: the zone per field, one meaning of an empty field, no lenient values --------------
def _row(**values: str) -> str:
    fields = dict(zip(CSV_HEADER, GOOD.format(s=1).rstrip("\n").split(",")))
    return ",".join({**fields, **values}[c] for c in CSV_HEADER) + "\n"


LENIENT = {
    "zone only in brand": _row(event_time="2019-10-01 00:00:05", brand="x UTC"),
    "other zone": _row(event_time="2019-10-01 00:00:05+03"),
    "today": _row(event_time="today UTC"),
    "tomorrow": _row(event_time="tomorrow UTC"),
    "yesterday": _row(event_time="yesterday UTC"),
    "hour 24": _row(event_time="2019-10-01 24:00:00 UTC"),
    "hex": _row(product_id="0x10"),
    "binary": _row(category_id="0b101"),
    "octal": _row(user_id="0o17"),
    "underscore": _row(product_id="1_000"),
    "huge price": _row(price="1" * 60_000),
    "exponent": _row(price="1e5"),
    "uuid without hyphens": _row(user_session="26dd6e6e4dac47788d2c92e149dab885"),
}


@pytest.mark.parametrize("path", PATHS)
def test_lenient_values_and_misplaced_zones_are_quarantined(engine, tmp_path, path):
    text = HEADER + GOOD.format(s=1) + "".join(LENIENT.values()) + GOOD.format(s=2)
    file = write(tmp_path, f"lenient-{path}.csv", text)
    result = load_file(engine, NAMES, file, tuning=PATHS[path])
    loaded, quarantined = state(engine, file.name)
    assert loaded == [2, 3 + len(LENIENT)]
    assert sorted(quarantined) == list(range(3, 3 + len(LENIENT)))
    assert quarantined[3][1] == 'event_time: "2019-10-01 00:00:05" has no " UTC" zone suffix'
    assert quarantined[4][1] == 'event_time: "2019-10-01 00:00:05+03" has no " UTC" zone suffix'
    assert quarantined[5][1] == 'event_time: "today UTC" is not a timestamp like "2019-10-01 00:00:00 UTC"'
    assert quarantined[9][1] == 'product_id: "0x10" is not a whole number within bigint range'
    assert quarantined[13][1] == f'price: "{"1" * 60_000}" is not a finite decimal number'
    assert result.rows_read == result.rows_loaded + result.rows_quarantined == 2 + len(LENIENT)
    assert rows(engine, "select count(*) from ecommerce_events where event_time::date <> '2019-10-01'") == [(0,)]


def test_quoted_empty_fields_mean_the_same_as_empty_fields_on_both_paths(engine, tmp_path):
    plain = write(tmp_path, "plain.csv", HEADER + _row(brand="", user_session=""))  # the fast path
    quoted = write(tmp_path, "quoted.csv", HEADER + _row(brand='""', user_session='""'))  # quotes: the careful path
    results = [load_file(engine, NAMES, p) for p in (plain, quoted)]
    assert [r.load_path for r in results] == ["fast", "careful"]
    assert rows(engine, "select source_file, brand, user_session from ecommerce_events order by 1") == [
        ("plain.csv", None, None), ("quoted.csv", None, None)]


def test_the_oracle_agrees_with_these_cases():
    """The cases above, as the reference implementation sees them (so the two cannot drift apart)."""
    fate = expected_fate((HEADER + GOOD.format(s=1) + "".join(LENIENT.values())).encode())
    assert sorted(fate.loaded) == [2] and sorted(fate.quarantined) == list(range(3, 3 + len(LENIENT)))
    assert sorted(expected_fate(MULTILINE.encode()).loaded) == [2, 3, 6, 7]


# --- 8: no ledger DDL waits behind a running load -----------------------------------------------
def test_a_second_run_neither_waits_for_nor_blocks_a_running_load(engine, tmp_path, data_db):
    file = write(tmp_path, "2019-Oct.csv", HEADER + "".join(GOOD.format(s=s % 60) for s in range(2000)))
    inside, release = threading.Event(), threading.Event()

    def hold(step, when):
        if step == "commit.ledger" and when == "before":  # the load's transaction holds its locks here
            inside.set()
            release.wait(60)

    loader = threading.Thread(target=load_file, args=(engine, NAMES, file), kwargs={"checkpoint": hold})
    loader.start()
    try:
        assert inside.wait(30)
        other = sa.create_engine(data_db, connect_args={"options": "-c lock_timeout=5s -c statement_timeout=10s"})
        try:
            started = time.monotonic()
            ensure_schema(other, NAMES)  # what a second run does first
            with other.connect() as conn:  # and a reader of the ledger
                conn.execute(sa.text("select count(*) from ecommerce_events_ledger")).scalar()
            assert time.monotonic() - started < 5
        finally:
            other.dispose()
    finally:
        release.set()
        loader.join(60)
    assert rows(engine, "select rows_loaded from ecommerce_events_ledger") == [(2000,)]


# --- identity: forget ----------------------------------------------------------------------------
def test_forget_removes_a_files_rows_quarantine_and_ledger_entry_and_it_loads_again(engine, tmp_path, data_db):
    file = write(tmp_path, "2019-Nov.csv", HEADER + GOOD.format(s=1) + _row(price="NaN") + GOOD.format(s=2))
    other = write(tmp_path, "2019-Dec.csv", HEADER + GOOD.format(s=3))
    for path in (file, other):
        assert load_file(engine, NAMES, path).status == "loaded"
    env = {**os.environ, "DATABASE_URL": data_db}
    done = subprocess.run([CLI, "forget", str(file)], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "forgot 2019-Nov.csv: 2 rows and 1 quarantined rows removed" in done.stdout
    assert rows(engine, "select source_file from ecommerce_events_ledger") == [("2019-Dec.csv",)]
    assert rows(engine, "select distinct source_file from ecommerce_events") == [("2019-Dec.csv",)]
    assert rows(engine, "select count(*) from ecommerce_events_quarantine") == [(0,)]
    again = subprocess.run([CLI, "forget", "2019-Nov.csv"], capture_output=True, text=True, env=env, timeout=120,
                           check=False)
    assert again.returncode == 1
    assert "2019-Nov.csv is not in the ledger of public.ecommerce_events" in again.stderr
    assert load_file(engine, NAMES, file).status == "loaded"  # forgotten, so it loads again
    assert forget_file(engine, NAMES, "2019-Dec.csv").rows_loaded == 1
