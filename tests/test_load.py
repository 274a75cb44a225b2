"""T2: the loader against a real PostgreSQL 18: exactly once, nothing lost, atomic replace."""

import threading

import psycopg2
import pytest
import sqlalchemy as sa

from flows.load import Tuning, load_file
from flows.sample import write_sample
from flows.csv_spec import CSV_HEADER
from flows.sql import Names

NAMES = Names("public", "ecommerce_events")
HEADER = ",".join(CSV_HEADER) + "\n"
ROW = "2019-10-01 00:00:{s:02d} UTC,view,5773203,1487580005134238553,,runail,2.62,463240011,26dd6e6e-4dac-4778-8d2c-92e149dab885\n"


def q(engine, sql, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def counts(engine):
    return q(engine, """select (select count(*) from ecommerce_events),
                               (select count(*) from (select distinct source_file, source_line from ecommerce_events) d),
                               (select count(*) from ecommerce_events_quarantine),
                               (select count(*) from ecommerce_events_ledger)""")[0]


def test_all_rows_load_once_and_rerun_skips(engine, tmp_path):
    paths = write_sample(tmp_path, rows_per_file=3000)
    first = [load_file(engine, NAMES, p) for p in paths]
    assert [r.status for r in first] == ["loaded"] * 5
    assert all(r.load_path == "fast" and r.rows_read == r.rows_loaded == 3000 for r in first)
    assert counts(engine) == (15000, 15000, 0, 5)
    # exact-duplicate rows of the dataset are real data: kept, on their own lines
    dupes = q(engine, "select count(*) - count(distinct (event_time, event_type, product_id, user_id, user_session, price)) from ecommerce_events")[0][0]
    assert dupes > 0
    assert q(engine, "select min(source_line), max(source_line) from ecommerce_events where source_file='2019-Oct.csv'")[0] == (2, 3001)
    # lineage: the loaded row is the row on that line of the file
    line_10 = paths[0].read_text().splitlines()[9].split(",")
    row = q(engine, "select product_id, price::text, user_id from ecommerce_events where source_file='2019-Oct.csv' and source_line=10")[0]
    assert row == (int(line_10[2]), line_10[6], int(line_10[7]))

    second = [load_file(engine, NAMES, p) for p in paths]
    assert [r.status for r in second] == ["skipped"] * 5
    assert counts(engine) == (15000, 15000, 0, 5)


def test_changed_file_is_replaced_atomically(engine, tmp_path):
    path = tmp_path / "2019-Oct.csv"
    path.write_text(HEADER + "".join(ROW.format(s=s) for s in range(10)))
    assert load_file(engine, NAMES, path).rows_loaded == 10
    path.write_text(HEADER + "".join(ROW.format(s=s) for s in range(4)) + ROW.format(s=0).replace("view", "bogus"))
    result = load_file(engine, NAMES, path)
    assert (result.status, result.rows_read, result.rows_loaded, result.rows_quarantined) == ("loaded", 5, 4, 1)
    assert counts(engine) == (4, 4, 1, 1)
    assert q(engine, "select count(*) from pg_inherits where inhparent = 'ecommerce_events'::regclass")[0][0] == 1


def test_failure_mid_copy_leaves_nothing_and_retry_loads_once(engine, tmp_path):
    (path,) = write_sample(tmp_path, rows_per_file=60_000, files=("2019-Oct.csv",))
    calls = 0

    def crash_midway(_advance):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionError("injected failure in the middle of COPY")

    # psycopg2 aborts the COPY and reports the reader's exception as QueryCanceled
    with pytest.raises(psycopg2.errors.QueryCanceled, match="injected failure"):
        load_file(engine, NAMES, path, progress=crash_midway)
    assert counts(engine) == (0, 0, 0, 0)
    leftovers = q(engine, "select count(*) from pg_class where starts_with(relname, 'ecommerce_events$')")
    assert leftovers[0][0] == 0
    assert load_file(engine, NAMES, path).rows_loaded == 60_000
    assert counts(engine) == (60_000, 60_000, 0, 1)


def test_bad_rows_are_quarantined_and_nothing_is_lost(engine, tmp_path):
    lines = [ROW.format(s=s) for s in range(8)]
    # values of the right layout that PostgreSQL refuses: the fast path quarantines them itself
    lines[1] = lines[1].replace("view", "bogus")
    lines[2] = lines[2].replace("2019-10-01", "2019-04-31")
    lines[3] = lines[3].replace("463240011", "18446744073709551615")
    lines[4] = lines[4].replace("5773203", "99999999999999999999")
    path = tmp_path / "types.csv"
    path.write_text(HEADER + "".join(lines))
    fast = load_file(engine, NAMES, path)
    assert (fast.load_path, fast.rows_read, fast.rows_loaded, fast.rows_quarantined) == ("fast", 8, 4, 4)
    assert dict(q(engine, "select source_line, reason from ecommerce_events_quarantine where source_file='types.csv'")) == {
        3: 'event_type: "bogus" is not one of view, cart, remove_from_cart, purchase',
        4: 'event_time: "2019-04-31 00:00:02 UTC" is not a timestamp like "2019-10-01 00:00:00 UTC"',
        5: 'user_id: "18446744073709551615" is not a whole number within bigint range',
        6: 'product_id: "99999999999999999999" is not a whole number within bigint range',
    }
    lines[2] = lines[2].replace("2019-04-31", "2019-10-01").replace("2.62", "NaN")
    lines[3] = lines[3].replace("18446744073709551615", "463240011").replace("26dd6e6e-4dac", "zz")

    lines[5] = "only,three,fields\n"
    lines[6] = lines[6].replace(" UTC", "")
    path = tmp_path / "structure.csv"
    path.write_text(HEADER + "".join(lines) + '2019-10-01 00:00:09 UTC,cart,1,2,"multi\nline",b,1,3,\n')
    careful = load_file(engine, NAMES, path)
    assert (careful.load_path, careful.rows_read, careful.rows_loaded, careful.rows_quarantined) == ("careful", 9, 3, 6)
    reasons = dict(q(engine, "select source_line, reason from ecommerce_events_quarantine where source_file='structure.csv'"))
    assert reasons == {
        3: 'event_type: "bogus" is not one of view, cart, remove_from_cart, purchase',
        4: 'price: "NaN" is not a finite decimal number',
        5: 'user_session: "zz-4778-8d2c-92e149dab885" is not a uuid',
        6: 'product_id: "99999999999999999999" is not a whole number within bigint range',
        7: "expected 9 fields, found 3",
        8: 'event_time: "2019-10-01 00:00:06" has no " UTC" zone suffix',
    }
    assert q(engine, "select source_line from ecommerce_events where source_file='structure.csv' order by 1") == [(2,), (9,), (10,)]
    assert q(engine, "select raw_line from ecommerce_events_quarantine where source_file='structure.csv' and source_line=7") == [("only,three,fields",)]
    ledger = q(engine, "select rows_read, rows_loaded, rows_quarantined from ecommerce_events_ledger where source_file='structure.csv'")
    assert ledger == [(9, 3, 6)]


def test_file_level_problems_fail_only_that_file(engine, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text(HEADER + ROW.format(s=1))
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b,c\n1,2,3\n")
    results = [load_file(engine, NAMES, p) for p in (tmp_path / "missing.csv", wrong, good)]
    assert [r.status for r in results] == ["failed", "failed", "loaded"]
    assert "file not found" in results[0].error
    assert "wrong header" in results[1].error and "expected the columns event_time" in results[1].error
    assert counts(engine) == (1, 1, 0, 1)


def test_two_runs_at_once_load_each_file_exactly_once(engine, tmp_path):
    paths = write_sample(tmp_path, rows_per_file=20_000, files=("2019-Oct.csv", "2019-Nov.csv"))
    outcomes: list = []

    def run():
        outcomes.extend(load_file(engine, NAMES, p) for p in paths)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_file = {}
    for r in outcomes:
        by_file.setdefault(r.file, []).append(r.status)
    assert {f: sorted(s) for f, s in by_file.items()} == {p.name: ["loaded", "skipped"] for p in paths}
    assert counts(engine) == (40_000, 40_000, 0, 2)


@pytest.mark.parametrize("table", ["x; drop table y", "Events", 'e"v'])
def test_table_names_cannot_inject_sql(table):
    from flows.errors import ConfigError

    with pytest.raises(ConfigError, match="ETL_TABLE"):
        Names("public", table)
    with pytest.raises(ConfigError, match="^--table="):  # the setting actually used is named
        Names("public", table, table_setting="--table")


# Split even small test files, so the parallel segment path runs.
SMALL = Tuning(min_segment_bytes=1, block_bytes=512)


def test_segments_load_in_parallel_with_exact_line_numbers(engine, tmp_path):
    lines = [ROW.format(s=s % 60) for s in range(1000)]
    lines[10] = lines[10].replace("view", "bogus")  # first segment
    lines[900] = lines[900].replace("2019-10-01", "2019-02-30")  # last segment
    path = tmp_path / "2019-Oct.csv"
    path.write_text(HEADER + "".join(lines))
    result = load_file(engine, NAMES, path, tuning=Tuning(parallel=4, min_segment_bytes=1, block_bytes=512))
    assert (result.load_path, result.rows_read, result.rows_loaded, result.rows_quarantined) == ("fast", 1000, 998, 2)
    segments = q(engine, """select count(*) from pg_inherits i join pg_class c on c.oid = i.inhparent
                            where starts_with(c.relname, 'ecommerce_events$p')""")[0][0]
    assert segments == 4
    assert q(engine, "select source_line from ecommerce_events_quarantine order by 1") == [(12,), (902,)]
    loaded = [r[0] for r in q(engine, "select source_line from ecommerce_events order by 1")]
    assert loaded == [n for n in range(2, 1002) if n not in (12, 902)]
    # the rows' content sits on the line it claims
    assert q(engine, "select extract(second from event_time)::int from ecommerce_events where source_line = 501") == [(499 % 60,)]


def test_structural_problem_in_one_segment_loads_whole_file_carefully(engine, tmp_path):
    lines = [ROW.format(s=s % 60) for s in range(400)]
    lines[350] = "ragged,row\n"
    path = tmp_path / "2019-Nov.csv"
    path.write_text(HEADER + "".join(lines))
    advances = []
    result = load_file(engine, NAMES, path, progress=advances.append, tuning=Tuning(parallel=3, min_segment_bytes=1, block_bytes=512))
    assert (result.load_path, result.rows_read, result.rows_loaded, result.rows_quarantined) == ("careful", 400, 399, 1)
    # progress starts over (a negative advance) for the careful pass instead of counting the file twice
    running = [sum(advances[: i + 1]) for i in range(len(advances))]
    assert max(running) <= path.stat().st_size - len(HEADER)
    assert running[-1] == path.stat().st_size - len(HEADER)
    assert counts(engine) == (399, 399, 1, 1)
    # the segments the fast path had committed are gone
    assert q(engine, "select count(*) from pg_class where starts_with(relname, 'ecommerce_events$s') and not relispartition") == [(0,)]


def test_segments_left_by_a_crash_are_dropped_by_the_next_load(engine, tmp_path):
    (path,) = write_sample(tmp_path, rows_per_file=5000, files=("2019-Dec.csv",))
    import flows.load.pipeline

    def crash(step, when):
        if step == "commit.assemble":
            raise KeyboardInterrupt("simulated crash after the segments committed, before the swap")

    # a killed process runs no cleanup: keep the committed segments where a crash would leave them
    tuning = Tuning(parallel=3, min_segment_bytes=1, block_bytes=512)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flows.load.pipeline, "drop_quietly", lambda *a: None)
        with pytest.raises(KeyboardInterrupt):
            load_file(engine, NAMES, path, tuning=tuning, checkpoint=crash)
    assert counts(engine) == (0, 0, 0, 0)
    orphans = "select count(*) from pg_class where starts_with(relname, 'ecommerce_events$s') and not relispartition"
    assert q(engine, orphans) == [(3,)]
    assert load_file(engine, NAMES, path, tuning=tuning).rows_loaded == 5000
    assert q(engine, orphans) == [(0,)]
    assert counts(engine) == (5000, 5000, 0, 1)


def test_same_size_but_changed_file_is_hashed_and_replaced(engine, tmp_path):
    path = tmp_path / "2020-Jan.csv"
    path.write_text(HEADER + "".join(ROW.format(s=s) for s in range(5)))
    first = load_file(engine, NAMES, path)
    path.write_text(HEADER + "".join(ROW.format(s=s).replace("2.62", "3.62") for s in range(5)))
    second = load_file(engine, NAMES, path)
    assert second.status == "loaded" and second.checksum != first.checksum
    assert q(engine, "select distinct price::text from ecommerce_events") == [("3.62",)]
    assert q(engine, "select checksum, size_bytes from ecommerce_events_ledger") == [(second.checksum, path.stat().st_size)]
    assert load_file(engine, NAMES, path).status == "skipped"
