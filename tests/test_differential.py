"""Differential fuzzing: the real loader, on both paths, against the reference in tests/oracle.py.

Hypothesis writes CSV files from realistic rows plus hostile mutations; every file is loaded into the
real PostgreSQL twice (default path choice with small parallel segments, and the careful path
forced), and every record's fate (table row with its values, or quarantined line with its raw text
and whole reason, or the whole file refused) and the ledger's checksum must be the oracle's.
Edges: lines spanning multiples of the block size, lines of 4 to 16 MiB at the real block
size, and two files with generated names (some sharing a short hash) loading at once, one cutting in
at a step of the other. `make test` runs a fixed-seed, bounded number of examples; `make fuzz` runs
the `fuzz` profile (many more, random seed). Every failure Hypothesis ever shrank is kept in
REGRESSIONS and runs on every `make test`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from fault_tools import CutIn
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracle import COLUMNS, EVENT_TYPES, checksum, expected_fate

from flows.load import Tuning, forget_file, load_file
from flows.sql import Names
from helpers import engine_with_schema

settings.register_profile("ci", max_examples=int(os.environ.get("DIFF_EXAMPLES", "40")), derandomize=True,
                          deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(ci: int, fuzz_setting: str, fuzz: int) -> int:
    """How many examples an edge generator runs: few in `make test`, `fuzz_setting` (env) in `make fuzz`."""
    return int(os.environ.get(fuzz_setting, fuzz)) if PROFILE == "fuzz" else ci


NAMES = Names("public", "fuzz_events")
HEADER = ",".join(COLUMNS)
# Small blocks and segments, so that even these small files are cut into parallel segments.
SEGMENTED = Tuning(parallel=3, min_segment_bytes=1, block_bytes=300)
CAREFUL = Tuning(path="careful", block_bytes=300)

# --- realistic rows ------------------------------------------------------------------------------
digits = st.text("0123456789", min_size=1, max_size=19)
good_values = {
    "event_time": st.builds("{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d} UTC".format,
                            st.integers(2019, 2020), st.integers(1, 12), st.integers(1, 28),
                            st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)),
    "event_type": st.sampled_from(EVENT_TYPES),
    "product_id": st.integers(1, 9_999_999).map(str),
    "category_id": st.integers(10**18, 2 * 10**18).map(str),
    "category_code": st.sampled_from(["", "", "", "appliances.environment.vacuum", "furniture.living_room.cabinet"]),
    "brand": st.sampled_from(["", "", "runail", "grattol", "f.o.x", "bpw.style"]),
    "price": st.builds("{}.{:02d}".format, st.integers(-80, 400), st.integers(0, 99)),
    "user_id": st.integers(4_000_000, 700_000_000).map(str),
    "user_session": st.one_of(st.just(""), st.uuids().map(str)),
}
# Values whose layout is right but whose value PostgreSQL refuses: the fast path still takes them.
out_of_range = {
    "event_time": st.sampled_from(["2019-02-29 10:00:00 UTC", "2019-04-31 00:00:00 UTC", "2019-13-01 00:00:00 UTC",
                                   "0000-01-01 00:00:00 UTC", "2019-10-00 00:00:00 UTC", "2019-10-01 12:60:00 UTC"]),
    # long ones too: PostgreSQL's notice cuts a value to 100 bytes
    "event_type": st.sampled_from(["refund", "View", "vieww", "x" * 150, "\u00e9" * 60, "y" * 101]),
    "product_id": st.sampled_from(["9223372036854775808", "99999999999999999999", "-9223372036854775809"]),
    "user_id": st.sampled_from(["18446744073709551615", "-9223372036854775809"]),
}
# Values the specification refuses although PostgreSQL would take them, and plain garbage.
hostile = {
    "event_time": st.sampled_from(["today UTC", "tomorrow UTC", "yesterday UTC", "epoch UTC", "now UTC",
                                   "infinity UTC", "2019-10-01 24:00:00 UTC", "2019-10-01 23:59:60 UTC",
                                   "2019-10-01T00:00:00 UTC", "2019-10-01 00:00:00", "2019-10-01 00:00:00+03",
                                   "2019-10-01 UTC", "Oct 1 2019 UTC", " 2019-10-01 00:00:00 UTC",
                                   "2019-10-01 00:00:00.5 UTC", "2019-10-01 00:00:00 utc", "", "J2458758 UTC"]),
    "event_type": st.sampled_from(["", " view", "view ", "VIEW", "purchase\x00"]),
    "product_id": st.sampled_from(["0x10", "0X1F", "0b101", "0o17", "1_000", " 5", "5 ", "+5", "1e5", "5.0", "",
                                   "-", "--1", "1-2", "\u0661\u0662", "0" * 21 + "1", "00012", "-0"]),
    "category_id": st.sampled_from(["0b1", "-0x1", "12ab", "", "9223372036854775807", "-9223372036854775808"]),
    "category_code": st.sampled_from(["a UTC", "x" * 70_000, "caf\udce9", "with\x00nul"]),
    "brand": st.sampled_from([" UTC", "bare UTC", "\u00e9t\u00e9", "x" * 65_537, "y" * 40_000, "\ufeffbom",
                              "caf\udce9", "a\x00b", "  ", "0x10", "1_000"]),
    "price": st.sampled_from(["NaN", "nan", "Infinity", "-inf", "1e5", "2.5E-3", ".5", "5.", "-.5", "+1.00",
                              " 2.62", "1_000.5", "0x1A", "1" * 131_072, "12345678901234567890", "-0.00", "",
                              "2.620", "1.2.3"]),
    "user_id": st.sampled_from(["0b11", "1_0", "", "4e9"]),
    "user_session": st.sampled_from(["26DD6E6E-4DAC-4778-8D2C-92E149DAB885", "{26dd6e6e-4dac-4778-8d2c-92e149dab885}",
                                     "26dd6e6e4dac47788d2c92e149dab885", "zz", "26dd6e6e-4dac-4778-8d2c-92e149dab88",
                                     "0b010101-4dac-4778-8d2c-92e149dab885"]),
}


@st.composite
def row(draw, mutate: bool) -> list[str]:
    values = [draw(good_values[c]) for c in COLUMNS]
    if draw(st.integers(0, 7)) == 0:  # a long (valid) brand: lines spanning one to four 300-byte blocks
        values[COLUMNS.index("brand")] = "b" * draw(st.integers(100, 1300))
    if draw(st.integers(0, 9)) == 0:
        column = draw(st.sampled_from(sorted(out_of_range)))
        values[COLUMNS.index(column)] = draw(out_of_range[column])
    if mutate and draw(st.integers(0, 3)) == 0:
        column = draw(st.sampled_from(COLUMNS))
        values[COLUMNS.index(column)] = draw(hostile[column])
    return values


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@st.composite
def line(draw, mutate: bool) -> str:
    """One record as text (maybe quoted, ragged, with embedded line breaks), without its line ending."""
    values = draw(row(mutate))
    if mutate:
        mutation = draw(st.integers(0, 14))
        i = draw(st.integers(0, len(values) - 1))
        if mutation == 0:  # quote a field (quoted commas, quotes, newlines are legal inside)
            values[i] = _quote(values[i] + draw(st.sampled_from(["", ", x", '"q"', "\n", "\r\n", "\r", " UTC"])))
        elif mutation == 1:  # an empty quoted field
            values[i] = '""'
        elif mutation == 2:  # ragged
            values = values[:-1] if draw(st.booleans()) else values + ["extra"]
        elif mutation == 3:  # a stray quote
            values[i] = values[i][:1] + '"' + values[i][1:]
        elif mutation == 4:  # an unclosed quote
            values[i] = '"' + values[i]
        elif mutation == 5:  # all fields quoted
            values = [_quote(v) for v in values]
        elif mutation == 6:  # a bare CR inside a line
            values[i] = values[i] + "\r"
    return ",".join(values)


@st.composite
def csv_file(draw) -> tuple[bytes, bool]:
    """(file bytes, whether only fast-path-compatible problems were generated)."""
    mutate = draw(st.booleans())
    header_names = list(COLUMNS)
    header_kind = draw(st.integers(0, 20)) if mutate else 0
    if header_kind == 1:
        header_names = draw(st.permutations(COLUMNS))
    header = ",".join(header_names)
    if header_kind == 2:
        header = header.replace("price", "cost")
    elif header_kind == 3:
        header = " , ".join(header_names)
    elif header_kind == 4:
        header += ",brand"
    elif header_kind == 5:
        header = "x" * 65_540 + header
    elif header_kind == 6:
        header = ",".join(_quote(n) for n in header_names)
    records = draw(st.lists(line(mutate), min_size=0, max_size=12))
    if header_names != list(COLUMNS):  # reorder the fields to match the header
        order = [COLUMNS.index(n) for n in header_names]
        records = [",".join(r.split(",")[i] for i in order) if r.count(",") == 8 and '"' not in r else r
                   for r in records]
    endings = st.sampled_from(["\n", "\r\n"]) if mutate else st.just(draw(st.sampled_from(["\n", "\r\n"])))
    text = header + draw(endings)
    for r in records:
        if mutate and draw(st.integers(0, 12)) == 0:
            text += draw(endings)  # a blank line
        text += r + draw(endings)
    if draw(st.booleans()):
        text = text.removesuffix("\r\n").removesuffix("\n")  # no final line ending
    data = text.encode("utf-8", "surrogateescape")
    if mutate:
        kind = draw(st.integers(0, 12))
        if kind == 0:
            data = b"\xef\xbb\xbf" + data
        elif kind == 1:
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r")  # CR-only line endings
        elif kind == 2 and data:
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b'"', b"\r", b"\n", b","])) + data[at:]
        elif kind == 3:
            data = b""
    return data, not mutate


@pytest.fixture(scope="module")
def engine(postgres):
    with engine_with_schema(postgres.create_database("differential"), NAMES) as engine:
        yield engine


_names = (f"f{n:06d}.csv" for n in itertools.count())


def table_rows(engine, file: str) -> tuple[dict, dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select source_line, event_time, event_type::text, product_id, category_id, brand, price, user_id,"
            " user_session::text from fuzz_events where source_file = :f"), {"f": file}).all()
        quarantine = conn.execute(sa.text("select source_line, raw_line, reason from fuzz_events_quarantine"
                                          " where source_file = :f"), {"f": file}).all()
    return ({r[0]: tuple(r[1:]) for r in rows}, {r[0]: (r[1], r[2]) for r in quarantine})


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 400 else f"{text[:300]}...({len(text)} characters)...{text[-60:]}"


def assert_same(actual: dict, expected: dict, where: str) -> None:
    """Equal dicts, or an error naming the differing keys with short values (lines can be MiBs long)."""
    if actual == expected:
        return
    keys = sorted(k for k in actual.keys() | expected.keys() if actual.get(k) != expected.get(k))
    details = "; ".join(f"line {k}: loader {_short(actual.get(k))} != oracle {_short(expected.get(k))}"
                        for k in keys[:5])
    raise AssertionError(f"{where}: {len(keys)} lines differ: {details}")


def check_loaded(engine, name: str, data: bytes, tuning: Tuning, result, expected, fast_compatible: bool,
                 record=event) -> None:
    """One load of `data` as `name` against the oracle's fate, then forgotten."""
    where = f"{name!r} on the {tuning.path} path ({result.load_path})"
    record(f"{tuning.path}: {result.status} via {result.load_path}")
    if result.rows_quarantined:
        record(f"{tuning.path}: some rows quarantined")
    if expected.rejected:
        assert result.status == "failed", f"{where}: the oracle rejects the file, the loader says {result.status}"
        return
    assert result.status == "loaded", f"{where}: {result.error}"
    loaded, quarantined = table_rows(engine, name)
    assert_same(quarantined, expected.quarantined, where)
    assert_same(loaded, expected.loaded, where)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (
        len(loaded) + len(quarantined), len(loaded), len(quarantined)), where
    assert result.checksum == checksum(data, tuning.block_bytes), f"{where}: the checksum is not SPEC.md's"
    if fast_compatible and tuning is SEGMENTED:
        assert result.load_path == "fast", f"{where}: a file without structural problems left the fast path"
    forgotten = forget_file(engine, NAMES, name)
    assert (forgotten.rows_loaded, forgotten.rows_quarantined) == (len(loaded), len(quarantined))
    assert table_rows(engine, name) == ({}, {})


def check_against_oracle(engine, folder: Path, data: bytes, fast_compatible: bool, record=event,
                         tunings: tuple[Tuning, ...] | None = None) -> None:
    expected = expected_fate(data)
    for tuning in tunings or (SEGMENTED, CAREFUL):
        name = next(_names)
        path = folder / name
        path.write_bytes(data)
        result = load_file(engine, NAMES, path, tuning=tuning)
        check_loaded(engine, name, data, tuning, result, expected, fast_compatible, record)


@given(case=csv_file())
def test_both_paths_agree_with_the_oracle(case, engine, tmp_path_factory):
    data, fast_compatible = case
    check_against_oracle(engine, tmp_path_factory.mktemp("diff", numbered=True), data, fast_compatible)


# Failures Hypothesis found and shrank: each stays here as a permanent regression test. These were found
# by running this test's strategies and oracle against an earlier version of the loader.
_H = b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
REGRESSIONS: dict[str, bytes] = {
    "relative-date-loaded": b"\xef\xbb\xbf" + _H + b'\n\n"today UTC",view,1,1000000000000000000,,,0.00,4000000,\n',
    "date-without-time-loaded": b"\xef\xbb\xbf" + _H + b'\n"2019-10-01 UTC","view","1","1000000000000000000","","","0.00",'
                                b'"4000000",""\n',
    "cr-only-header-csv-error": _H + b'\r\r"2019-10-01T00:00:00 UTC",view,1,1000000000000000000,,,0.00,4000000,\r',
    "cr-only-file-csv-error": _H + b'\r"2019-01-01 00:00:00 UTC",view,1,1000000000000000000,,,0.00,4000000,\r',
    "multiline-record-index-error": b"\xef\xbb\xbf" + _H + b'\n\n"",view,1,1000000000000000000,,,0.00,4000000,\n\n'
                                    b'2019-02-29 10:00:00 UTC,view,1,1000000000000000000,"\r\n",,0.00,4000000,\n',
    "quarantine-then-pooled-connection-type-error": b"\xef\xbb\xbf" + _H + b'\n"",view,1,1000000000000000000,,,0.00,'
                                                    b'4000000,\n\n"2019-02-29 10:00:00 UTC",view,1,1000000000000000000,,,0.00,4000000,\n',
    "reason-is-the-first-field-in-file-order": b"\xef\xbb\xbf" + _H + b'\n\n"2019-01-01 00:00:00 UTC, x",,1,'
                                               b'1000000000000000000,,,0.00,4000000,\n',
    # found by the long-brand rows against block ends counted from a long line's end (not from B's multiples)
    "checksum-after-a-line-spanning-two-blocks": (
        b"\xef\xbb\xbf" + _H + b'\n"",view,1,1000000000000000000,,' + b"b" * 100 + b",-6.04,4000000,\n"
        b"now UTC,view,1,1000000000000000000,," + b"b" * 569 + b",0.00,4000000,72e63ac7-a953-8322-1f70-d5dc2e675fc7\n"
        b'"",view,1,1000000000000000000,,,0.00,4000000,\n"",view,1,1000000000000000000,,,0.00,4000000,\n'),
    # found by the long event types against the fast path's reasons taken from COPY's notice (cut at 100 bytes)
    "fast-path-reason-cut-to-100-bytes": (
        _H + b"\n2019-01-01 00:00:00 UTC," + b"x" * 150 + b",1,1000000000000000000,," + b"b" * 100
        + b",0.00,4000000,\n"),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_shrunk_failures_stay_fixed(name, engine, tmp_path):
    check_against_oracle(engine, tmp_path, REGRESSIONS[name], fast_compatible=False, record=lambda _: None)


# --- edges: lines of 4 MiB and more at the real block size ---------------------------------
MiB = 1 << 20
REAL_B = Tuning().block_bytes
REAL = (Tuning(parallel=3, min_segment_bytes=1), Tuning(path="careful"))
_ROW = ("2019-10-01 00:00:{s:02d} UTC,view,5773203,1487580005134238553,,{brand},2.62,463240011,"
        "26dd6e6e-4dac-4778-8d2c-92e149dab885\n")


@st.composite
def long_line_recipe(draw) -> tuple[tuple[str, int], ...]:
    """How to build the file (its bytes would make unreadable counterexamples): runs of ordinary rows,
    a row that makes the next line start within a few bytes of a multiple of B, and long lines of 4 to
    16 MiB (a row with a long brand, or ordinary rows with CR-only line endings: one physical line)."""
    pieces = st.one_of(
        st.tuples(st.just("rows"), st.integers(1, 40)),
        st.tuples(st.just("align"), st.integers(-3, 3)),
        st.tuples(st.just("brand"), st.one_of(st.integers(REAL_B - 3, REAL_B + 3), st.integers(REAL_B, 2 * REAL_B),
                                               st.integers(2 * REAL_B - 3, 4 * REAL_B))),
        st.tuples(st.just("cr"), st.integers(REAL_B // 140, 2 * REAL_B // 140)),
    )
    return tuple(draw(st.lists(pieces, min_size=1, max_size=4)))


def long_line_file(recipe: tuple[tuple[str, int], ...]) -> bytes:
    data = bytearray((HEADER + "\n").encode())
    base = len(_ROW.format(s=0, brand=""))
    for n, (kind, value) in enumerate(recipe):
        if kind == "rows":
            data += "".join(_ROW.format(s=i % 60, brand="runail") for i in range(value)).encode()
        elif kind == "align":
            length = (len(data) // REAL_B + 1) * REAL_B + value - len(data)
            length += REAL_B if length < base + 1 else 0
            data += _ROW.format(s=n % 60, brand="a" * (length - base)).encode()
        elif kind == "brand":
            data += _ROW.format(s=n % 60, brand="b" * max(value - base, 0)).encode()
        else:
            data += "".join(_ROW.format(s=i % 60, brand="c") for i in range(value)).replace("\n", "\r").encode() + b"\n"
    return bytes(data)


@settings(max_examples=examples(3, "FUZZ_LONG_EXAMPLES", 25))
@given(recipe=long_line_recipe())
def test_lines_of_4_to_16_mib_at_the_real_block_size_agree_with_the_oracle(recipe, engine, tmp_path_factory):
    data = long_line_file(recipe)
    event(f"{len(data) // MiB} MiB")
    check_against_oracle(engine, tmp_path_factory.mktemp("long", numbered=True), data, False, tunings=REAL)


# --- edges: generated names, some sharing a short hash, two files loading at once ----------
def _colliding_pairs(prefix_chars: int = 8, names: int = 200_000) -> list[tuple[str, str]]:
    """Names whose md5 share the first `prefix_chars` hex digits (the key that once named internal
    tables); about two pairs per 100,000 names for 8 digits."""
    seen: dict[str, str] = {}
    pairs = []
    for n in range(names):
        name = f"2019-Nov-part{n}.csv"
        key = hashlib.md5(name.encode()).hexdigest()[:prefix_chars]
        if key in seen:
            pairs.append((seen[key], name))
        seen[key] = name
    return pairs


COLLIDING = [("2019-Oct-part20184.csv", "2019-Oct-part20266.csv"),  # the pair that lost rows
             ("2019-Nov-part62537.csv", "2019-Nov-part72651.csv"),
             ("2019-Nov-part11708.csv", "2019-Nov-part142548.csv")]
HOSTILE_NAMES = ["it's.csv", "back\\slash.csv", '"quoted".csv', "%s %% %(x)s.csv", "fuzz_events$s_1_0",
                 "fuzz_events$p_1", " leading space.csv", "\u00fcn\u00efc\u00f6d\u00e9 \u20ac.csv", "x" * 255,
                 "\u00e9" * 127, "a'';--.csv", "tab\there.csv", "new\nline.csv"]
file_name = st.one_of(
    st.sampled_from(HOSTILE_NAMES),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=40)
    .filter(lambda n: n not in (".", "..") and len(n.encode()) <= 255),
)
name_pair = st.one_of(st.sampled_from(COLLIDING), st.tuples(file_name, file_name).filter(lambda p: p[0] != p[1]))
STEPS = ["check-ledger", "drop-orphans", "stage-fast.create", "stage-fast.copy", "stage-fast.commit",
         "stage-careful.copy", "stage-careful.finish", "commit.assemble", "commit.attach", "commit.quarantine",
         "commit.ledger", "commit.transaction"]


@settings(max_examples=examples(12, "FUZZ_EDGE_EXAMPLES", 300))
@given(names=name_pair, cases=st.tuples(csv_file(), csv_file()), step=st.sampled_from(STEPS),
       when=st.sampled_from(["before", "after"]), careful=st.tuples(st.booleans(), st.booleans()))
def test_two_files_at_once_agree_with_the_oracle(names, cases, step, when, careful, engine, tmp_path_factory):
    """The second file starts when the first reaches `step`; each must still be exactly the oracle's."""
    check_pair(engine, tmp_path_factory.mktemp("pair", numbered=True), names, cases, step, when, careful)


def check_pair(engine, folder: Path, names, cases, step: str, when: str, careful: tuple[bool, bool],
               record=event) -> None:
    tunings = [CAREFUL if c else SEGMENTED for c in careful]
    paths = []
    for i, (name, (data, _)) in enumerate(zip(names, cases, strict=True)):
        (folder / str(i)).mkdir()
        paths.append(folder / str(i) / name)
        paths[-1].write_bytes(data)
        forget_file(engine, NAMES, name)  # a clean start, also when Hypothesis replays a name
    cut_in = CutIn(engine, step, when, lambda: load_file(engine, NAMES, paths[1], tuning=tunings[1]))
    results = [load_file(engine, NAMES, paths[0], tuning=tunings[0], checkpoint=cut_in)]
    record(f"the second cut in: {cut_in.fired.is_set()}")
    results.append(cut_in.join())
    for name, (data, fast_compatible), tuning, result in zip(names, cases, tunings, results, strict=True):
        check_loaded(engine, name, data, tuning, result, expected_fate(data), fast_compatible, record)


def test_the_colliding_names_share_their_short_hash():
    found = _colliding_pairs(names=80_000)
    assert ("2019-Nov-part62537.csv", "2019-Nov-part72651.csv") in found
    for first, second in COLLIDING:
        assert hashlib.md5(first.encode()).hexdigest()[:8] == hashlib.md5(second.encode()).hexdigest()[:8]


# Found by test_two_files_at_once_agree_with_the_oracle.
PAIR_REGRESSIONS = {
    # against tables named by md5(name)[:8]: the second file's clean-up dropped the first's committed segments
    # (UndefinedTable at the first's assemble)
    "colliding-names-second-drops-the-firsts-segments": dict(
        names=COLLIDING[0],
        cases=((_H + b"\n", True), (
            b"\xef\xbb\xbf" + _H + b'\r\n\r\n2019-01-01 00:00:00 UTC,view,"",1000000000000000000,,' + b"b" * 805
            + b',-1.00,4000000,\n"today UTC",view,460,1000000000000000000,,,147.00,660896864,\n2"019-10-01 24:00:00'
            b' UTC,view,33451,1000000000000000000,,grattol,131.00,4000000,\n\n2"019-01-01 00:00:00 UTC,'
            b'remove_from_cart,1,1000000000000000000,,bpw.style,0.00,4000000,\n\n"2019-01-01 00:00:00 UTC, x",,1,'
            b"1000000000000000000,," + b"b" * 100 + b",0.00,4000000,\n", False)),
        step="commit.assemble", when="before", careful=(False, False)),
    # found by `make fuzz`: the quarantine COPY read a file name holding a lone CR as the end of its row
    "a-carriage-return-as-the-file-name": dict(
        names=("\r", "it's.csv"),
        cases=((_H + b"\n2019-02-29 10:00:00 UTC,view,1,1000000000000000000,," + b"b" * 100 + b",0.00,4000000,\n",
                True), (_H + b"\n", True)),
        step="check-ledger", when="before", careful=(False, False)),
}


@pytest.mark.parametrize("name", list(PAIR_REGRESSIONS))
def test_shrunk_pair_failures_stay_fixed(name, engine, tmp_path):
    check_pair(engine, tmp_path, **PAIR_REGRESSIONS[name], record=lambda _: None)
