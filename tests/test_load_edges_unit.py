"""T1 (no services): the load's pure parts at their edges.

- the ledger checksum, exactly as flows/load/SPEC.md defines it, after lines that span one or
  more multiples of the block size B (against the reference in tests/oracle.py), both read in order
  and hashed per segment as the fast path does;
- the careful path reads a file with a 64 MiB line in about the time of a 64 MiB file of
  ordinary lines (it was quadratic in the line's length).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import COLUMNS
from oracle import checksum as reference_checksum

from flows.load.plan import BlockHasher, FileStat, Plan, file_checksum, plan_file
from flows.transform import MAX_HEADER_BYTES, iter_records, parse_header, split_lines

MiB = 1 << 20
HEADER = (",".join(COLUMNS) + "\n").encode()


def line(length: int) -> bytes:
    return b"x" * (length - 1) + b"\n"


@st.composite
def long_line_lengths(draw, block: int) -> tuple[tuple[int, int], ...]:
    """(line length, how many) after the header (the file's bytes would make unreadable counterexamples):
    runs of short lines (up to 3B of them), a filler after which the next line starts within a few bytes
    of a multiple of B, lines from B to 2B, and lines spanning two to four multiples of B. A negative
    last length is a last line of that many bytes without its LF."""
    size, runs = len(HEADER), []
    pieces = st.sampled_from(["short", "align", "long", "longer"])
    for piece in draw(st.lists(pieces, min_size=1, max_size=6)):
        count = 1
        if piece == "short":
            length = draw(st.integers(1, 200))
            count = draw(st.integers(1, 3 * block // length))
        elif piece == "align":
            length = (size // block + 1) * block + draw(st.integers(-3, 3)) - size
            length += block if length < 1 else 0
        elif piece == "long":
            length = draw(st.integers(block - 3, 2 * block + 3))
        else:
            length = draw(st.integers(2 * block + 1, 4 * block + 3))
        runs.append((length, count))
        size += length * count
    if draw(st.booleans()):
        runs.append((-draw(st.integers(1, 3)), 1))
    return tuple(runs)


def file_of(runs: tuple[tuple[int, int], ...]) -> bytes:
    return HEADER + b"".join((line(n) if n > 0 else b"y" * -n) * count for n, count in runs)


def planned(path: Path, block: int, parallel: int) -> Plan:
    with path.open("rb") as f:
        header = parse_header(f.readline(MAX_HEADER_BYTES + 1))
    return plan_file(path, header, FileStat.of(path), parallel, min_segment_bytes=1, block_bytes=block)


def segment_checksum(data: bytes, plan: Plan) -> str:
    """The checksum as the fast path builds it: each segment hashes its own bytes (the first, the header too)."""
    digests: list[bytes] = []
    for segment in plan.segments:
        start = 0 if segment.index == 0 else segment.start
        hasher = BlockHasher(plan, start)
        hasher.update(data[start : segment.end])
        digests += hasher.digests
    return plan.checksum(digests)


def check_checksums(data: bytes, block: int, folder: Path) -> None:
    path = folder / "long-lines.csv"
    path.write_bytes(data)
    expected = reference_checksum(data, block)
    for parallel in (1, 3):
        plan = planned(path, block, parallel)
        assert file_checksum(path, plan) == expected, f"read in order, {parallel} segment(s)"
        assert segment_checksum(data, plan) == expected, f"hashed per segment, {parallel} segment(s)"


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=long_line_lengths(block=256))
def test_checksum_blocks_follow_the_spec_after_lines_spanning_multiples_of_b(lengths, tmp_path):
    check_checksums(file_of(lengths), 256, tmp_path)


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=long_line_lengths(block=4 * MiB))
def test_checksum_follows_the_spec_with_lines_of_4_to_16_mib_at_the_real_block_size(lengths, tmp_path):
    check_checksums(file_of(lengths), 4 * MiB, tmp_path)


def test_checksum_after_a_line_just_over_b_that_spans_two_multiples(tmp_path):
    """The shape that was wrong: a line starting just before 4 MiB and ending just after 8 MiB
    shifted every later block end (they were counted from that line's end, not from 12 MiB)."""
    block = 4 * MiB
    check_checksums(file_of(((block - 10 - len(HEADER), 1), (block + 20, 1), (100, 50_000))), block, tmp_path)


# --- the careful path is linear in the file size, whatever its line lengths ---------------
def chunks(data: bytes, size: int = 256 << 10) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def careful_read_seconds(data: bytes) -> float:
    """What the careful path does with a file's bytes before the database: lines, then records."""
    started = time.perf_counter()
    for _ in iter_records(split_lines(chunks(data)), first_line=2):
        pass
    return time.perf_counter() - started


def test_a_64_mib_line_reads_in_about_the_time_of_a_64_mib_file_of_ordinary_lines():
    row = (b"2019-10-01 00:00:00 UTC,view,5773203,1487580005134238553,,runail,2.62,463240011,"
           b"26dd6e6e-4dac-4778-8d2c-92e149dab885\n")
    ordinary = row * (64 * MiB // len(row))
    one_line = ordinary.replace(b"\n", b"\r")  # CR-only line endings: the whole body is one line
    ordinary_seconds = careful_read_seconds(ordinary)
    one_line_seconds = careful_read_seconds(one_line)
    # measured: ~0.3x; when joining the carry to every chunk made it quadratic, ~6x (18.5 s vs 3.1 s)
    assert one_line_seconds < 1.5 * ordinary_seconds, (one_line_seconds, ordinary_seconds)


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 256 << 10])
def test_split_lines_gives_the_same_lines_wherever_the_chunks_are_cut(cut):
    data = b"a\nbb\r\n\n" + b"c" * 1000 + b"\nd" + b"e" * 5000 + b"\nlast"
    assert list(split_lines(chunks(data, cut))) == data.splitlines(keepends=True)
