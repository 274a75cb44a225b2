"""Bad-input corpus on a real PostgreSQL: every case has one expected outcome (rows quarantined
with a reason, or the file failed with a message), read = loaded + quarantined holds for every
file, and a good file loaded in the same run after it still loads.

Files are generated here; archives go through flows.sources.archives.unpack, the path of the url and
kaggle sources.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from fault_tools import NAMES, audit

from flows import etl
from flows.errors import FileRejected
from flows.load import load_file
from flows.csv_spec import CSV_HEADER
from flows.sources.archives import unpack
from flows.transform import MAX_FIELD_CHARS
from helpers import engine_with_schema, rows

HEADER = ",".join(CSV_HEADER)
GOOD = dict(zip(CSV_HEADER, ["2019-10-01 00:00:00 UTC", "view", "5773203", "1487580005134238553", "", "runail",
                             "2.62", "463240011", "26dd6e6e-4dac-4778-8d2c-92e149dab885"]))


def row(second: int = 0, **fields: str) -> str:
    values = {**GOOD, "event_time": f"2019-10-01 00:00:{second:02d} UTC", **fields}
    return ",".join(values[c] for c in CSV_HEADER)


def lines(*middle: str, header: str = HEADER, end: str = "\n") -> bytes:
    """header, a good row, the case's lines, a good row."""
    return end.join([header, row(1), *middle, row(2)]).encode("utf-8", "surrogateescape") + end.encode()


@dataclass(frozen=True)
class Rows:
    """The file loads: this many rows, and these lines quarantined with these reasons."""
    loaded: int
    quarantined: dict[int, str] = field(default_factory=dict)
    check: tuple[str, list] | None = None  # (SQL over the case's rows, expected result)


@dataclass(frozen=True)
class Fails:
    message: str


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


T = 'a timestamp like "2019-10-01 00:00:00 UTC"'
BIGINT = "a whole number within bigint range"
HUGE = "x" * (MAX_FIELD_CHARS + 10)

# name -> (file name, content or None for "absent", expected outcome)
CASES: dict[str, tuple[str, bytes | None, Rows | Fails]] = {
    # ragged rows
    "too-many-fields": ("c.csv", lines(row(5) + ",extra"), Rows(2, {3: "expected 9 fields, found 10"})),
    "too-few-fields": ("c.csv", lines("only,three,fields"), Rows(2, {3: "expected 9 fields, found 3"})),
    # timestamps
    "bad-timestamp": ("c.csv", lines(row(event_time="2019-13-45 25:61:00 UTC")),
                      Rows(2, {3: f'event_time: "2019-13-45 25:61:00 UTC" is not {T}'})),
    "missing-timestamp": ("c.csv", lines(row(event_time="")), Rows(2, {3: "event_time: required value is empty"})),
    "timestamp-without-utc": ("c.csv", lines(row(event_time="2019-10-01 00:00:05")),
                              Rows(2, {3: 'event_time: "2019-10-01 00:00:05" has no " UTC" zone suffix'})),
    "timestamp-other-zone": ("c.csv", lines(row(event_time="2019-10-01 00:00:05+03")),
                             Rows(2, {3: 'event_time: "2019-10-01 00:00:05+03" has no " UTC" zone suffix'})),
    # numbers, uuid, enum
    "non-numeric-bigint": ("c.csv", lines(row(product_id="12ab")), Rows(2, {3: f'product_id: "12ab" is not {BIGINT}'})),
    "overflowing-bigint": ("c.csv", lines(row(user_id="99999999999999999999")),
                           Rows(2, {3: f'user_id: "99999999999999999999" is not {BIGINT}'})),
    "empty-required-bigint": ("c.csv", lines(row(category_id="")), Rows(2, {3: "category_id: required value is empty"})),
    "bad-uuid": ("c.csv", lines(row(user_session="not-a-uuid")), Rows(2, {3: 'user_session: "not-a-uuid" is not a uuid'})),
    "unknown-event-type": ("c.csv", lines(row(event_type="refund")),
                           Rows(2, {3: 'event_type: "refund" is not one of view, cart, remove_from_cart, purchase'})),
    # prices
    "empty-price": ("c.csv", lines(row(price="")), Rows(2, {3: "price: required value is empty"})),
    "negative-price": ("c.csv", lines(row(price="-2.62")),  # real data: kept
                       Rows(3, check=("select min(price)::text from {t}", [("-2.62",)]))),
    "nan-price": ("c.csv", lines(row(price="NaN")), Rows(2, {3: 'price: "NaN" is not a finite decimal number'})),
    "infinite-price": ("c.csv", lines(row(price="Infinity")), Rows(2, {3: 'price: "Infinity" is not a finite decimal number'})),
    "decimal-comma-price": ("c.csv", lines(row(price='"2,62"')), Rows(2, {3: 'price: "2,62" is not a finite decimal number'})),
    "empty-optional-fields": ("c.csv", lines(row(brand="", user_session="")),
                              Rows(3, check=("select count(*) from {t} where brand is null and user_session is null", [(1,)]))),
    # bytes and CSV structure
    "utf8-bom": ("c.csv", b"\xef\xbb\xbf" + lines(row(5)), Rows(3)),
    "crlf-line-endings": ("c.csv", lines(row(5), end="\r\n"), Rows(3)),
    "quoted-comma": ("c.csv", lines(row(brand='"grattol, pro"')),
                     Rows(3, check=("select brand from {t} where brand like '%,%'", [("grattol, pro",)]))),
    "quoted-newline": ("c.csv", lines(row(category_code='"multi\nline"')),  # the record spans lines 3-4
                       Rows(3, check=("select array_agg(source_line order by source_line) from {t}", [([2, 3, 5],)]))),
    "invalid-utf8": ("c.csv", lines(row(brand="caf\udce9")), Rows(2, {3: "brand: contains bytes that are not UTF-8"})),
    "nul-byte": ("c.csv", lines(row(brand="a\x00b")), Rows(2, {3: "brand: contains a NUL byte"})),
    "huge-field": ("c.csv", lines(row(brand=HUGE)),
                   Rows(2, {3: f"brand: field of {len(HUGE)} characters exceeds {MAX_FIELD_CHARS}"})),
    "unclosed-quote": ("c.csv", lines(row(brand='"runail')),  # only its own line is lost
                       Rows(2, {3: "unparseable CSV: unexpected end of data"})),
    "blank-lines": ("c.csv", lines("", row(5), ""), Rows(3, check=("select max(source_line) from {t}", [(6,)]))),
    "no-final-newline": ("c.csv", lines(row(5))[:-1], Rows(3)),
    # whole-file problems
    "empty-file": ("c.csv", b"", Fails("the file is empty")),
    "header-only": ("c.csv", (HEADER + "\n").encode(), Rows(0)),
    "wrong-header": ("c.csv", lines(header="time,type,product,category,code,brand,price,user,session"),
                     Fails("wrong header (missing event_time")),
    "reordered-header": ("c.csv", (",".join(reversed(CSV_HEADER)) + "\n" + ",".join(reversed(row(7).split(","))) + "\n").encode(),
                         Rows(1, check=("select extract(second from event_time)::int, product_id from {t}", [(7, 5773203)]))),
    "duplicated-header-column": ("c.csv", lines(header=HEADER + ",brand"), Fails("duplicated brand")),
    "header-not-utf8": ("c.csv", lines(header=HEADER.replace("brand", "br\udcffand")), Fails("the header line is not UTF-8")),
    "padded-header-names": ("c.csv", lines(header=HEADER.replace(",", " , ")), Rows(2)),
    "missing-file": ("c.csv", None, Fails("file not found")),
    # archives (url and kaggle sources)
    "truncated-gzip": ("c.csv.gz", _gzip(lines(row(5)))[:-20], Fails("corrupt or truncated gzip")),
    "corrupt-zip": ("c.zip", b"PK\x03\x04" + b"\x00" * 64, Fails("corrupt zip archive")),
    "zip-without-csv": ("c.zip", _zip({"readme.txt": b"hello"}), Fails("the zip archive holds no .csv file")),
    "zip-with-duplicate-names": ("c.zip", _zip({"a/2019-Oct.csv": lines(), "b/2019-Oct.csv": lines(row(5))}),
                                 Fails("2 members named 2019-Oct.csv")),
    "not-an-archive": ("c.txt", b"hello", Fails("expected a .csv, .csv.gz or .zip file")),
}


@pytest.fixture(scope="module")
def engine(postgres):
    with engine_with_schema(postgres.create_database("bad_inputs"), NAMES) as engine:
        yield engine


def run(engine, folder: Path, inputs: list[Path]) -> list:
    """One run as the flow does it: unpack what is an archive, then load file by file."""
    results = []
    for path in inputs:
        try:
            files = unpack(path, folder) if path.exists() else [path]
        except FileRejected as exc:
            results.append(("failed", path.name, str(exc)))
            continue
        results += [load_file(engine, NAMES, f) for f in files]
    return results


def _record(record_property, name: str, outcome: str) -> None:
    record_property("bad_input", json.dumps({"case": name, "outcome": outcome}))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_has_its_expected_outcome_and_the_run_goes_on(name, engine, tmp_path, record_property):
    file_name, content, expected = CASES[name]
    stem = name  # each case owns its file names in the shared database
    path = tmp_path / file_name.replace("c.", f"{stem}.", 1)
    if content is not None:
        path.write_bytes(content)
    good = tmp_path / f"{stem}-good.csv"
    good.write_bytes(lines(row(5)))
    before = audit(engine.url.render_as_string(hide_password=False))

    first, *rest = run(engine, tmp_path, [path, good])
    after = audit(engine.url.render_as_string(hide_password=False))
    assert after.problems == after.leftovers == [] and after.duplicated == 0
    # the other file of the run still loads
    assert [(r.file, r.status, r.rows_loaded) for r in rest] == [(good.name, "loaded", 3)]

    if isinstance(expected, Fails):
        status, error = (first[0], first[2]) if isinstance(first, tuple) else (first.status, first.error)
        _record(record_property, name, f"file failed: {error}")
        assert status == "failed"
        assert expected.message in error
        assert set(after.ledger) - set(before.ledger) == {good.name}  # nothing of it was loaded
        record_property("lost", 0)
        return

    file = first.file
    reasons = after.quarantine.get(file, {})
    _record(record_property, name, "; ".join(f"line {k} quarantined: {v[:120]}" for k, v in sorted(reasons.items()))
            or f"{first.rows_loaded} rows loaded")
    assert first.status == "loaded", first.error
    assert first.rows_read == first.rows_loaded + first.rows_quarantined  # read = loaded + quarantined
    assert after.counts(file) == (first.rows_read, first.rows_loaded, first.rows_quarantined)
    record_property("lost", first.rows_read - after.counts(file)[0])
    record_property("duplicated", after.duplicated)
    assert (first.rows_loaded, reasons) == (expected.loaded, expected.quarantined)
    if expected.check:
        query, want = expected.check
        with engine.connect() as conn:
            rows_of_file = "(select * from ecommerce_events where source_file = :f) r"
            got = conn.execute(sa.text(query.format(t=rows_of_file)), {"f": file}).all()
        assert [tuple(r) for r in got] == want


def test_duplicate_file_names_in_one_run_fail_the_second(prefect_api, data_db, tmp_path, monkeypatch, record_property):
    monkeypatch.setenv("DATABASE_URL", data_db)
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "2019-Oct.csv").write_bytes(lines(row(5)))
    (folder / "2019-Nov.csv").write_bytes(lines())
    with pytest.raises(etl.LoadFailed) as failed:
        etl.ecommerce_etl(source="local", path=str(folder), files=["2019-Oct.csv", "2019-Oct.csv", "2019-Nov.csv"])
    files = [f.as_dict() for f in failed.value.report.files]
    _record(record_property, "duplicate-file-name", f"file failed: {files[1]['error']}")
    assert [(f["file"], f["status"]) for f in files] == [
        ("2019-Oct.csv", "loaded"), ("2019-Oct.csv", "failed"), ("2019-Nov.csv", "loaded")]
    assert "duplicate file name 2019-Oct.csv" in files[1]["error"]
    state = audit(data_db)
    assert {f: state.counts(f) for f in state.ledger} == {"2019-Oct.csv": (3, 3, 0), "2019-Nov.csv": (2, 2, 0)}
    assert state.duplicated == 0


def test_the_corpus_through_the_concurrent_flow_has_the_same_outcomes(prefect_api, data_db, tmp_path, monkeypatch,
                                                                      record_property):
    """Every CSV case in one folder, loaded by the pipeline three files at once (one subflow
    each): the same outcome per file as one at a time above, and nothing lost or doubled."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    expected: dict[str, Rows | Fails] = {}
    for name, (file_name, content, outcome) in CASES.items():
        if file_name.endswith(".csv") and content is not None:  # archives and absent files need a url source
            target = folder / file_name.replace("c.", f"{name}.", 1)
            target.write_bytes(content)
            expected[target.name] = outcome
    monkeypatch.setenv("DATABASE_URL", data_db)
    monkeypatch.setenv("ETL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ETL_MAX_PARALLEL_FILES", "3")
    state = etl.ecommerce_etl(source="local", path=str(folder), return_state=True)
    failure = state.result(raise_on_failure=False)
    assert isinstance(failure, etl.LoadFailed), state
    by_file = {f.file: f for f in failure.report.files}
    assert set(by_file) == set(expected)
    after = audit(data_db)
    assert after.problems == after.leftovers == [] and after.duplicated == 0
    for file, outcome in expected.items():
        result = by_file[file]
        if isinstance(outcome, Fails):
            assert (result.status, file in after.ledger) == ("failed", False), file
            assert outcome.message in (result.error or ""), file
            continue
        assert result.status == "loaded", (file, result.error)
        assert result.rows_read == result.rows_loaded + result.rows_quarantined, file
        assert after.counts(file) == (result.rows_read, result.rows_loaded, result.rows_quarantined), file
        assert (result.rows_loaded, after.quarantine.get(file, {})) == (outcome.loaded, outcome.quarantined), file
        if outcome.check:
            query, want = outcome.check
            rows_of_file = "(select * from ecommerce_events where source_file = :f) r"
            assert [tuple(r) for r in rows(data_db, query.format(t=rows_of_file), f=file)] == want, file
    record_property("concurrent_corpus_files", len(expected))



