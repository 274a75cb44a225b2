"""Load stage: one file into PostgreSQL, exactly once, with COPY.

Mechanism (chosen by measurement: ../shared/FACTS.md and `make bench`): each file becomes its own
LIST partition of the events table, itself RANGE-partitioned by source_line into segments.
  1. The file is split at line boundaries into segments; each segment is COPYed raw, in
     parallel on its own connection, into a typed table that is committed but not yet visible
     (not attached). category_code is then dropped: metadata only, no rewrite.
  2. One transaction, holding the file's advisory lock from the start, checks the ledger
     (unchanged checksum = skip), assembles the file's partition from the segment tables,
     drops the file's old partition, attaches the new one, replaces the file's quarantine rows
     and writes the ledger. Every ATTACH is proven by CHECK constraints, so this takes
     milliseconds. Nothing is visible before this COMMIT; after it, a rerun skips.
A crash between 1 and 2 leaves only unattached segment tables, which the next load of that
file drops first. Two runs at once serialise on the lock: one loads, the other skips.

Raw COPY measured 0.85x of `psql \copy` per connection here, against 0.5x for re-serializing
rows in Python and 0.03x for the tutorial's `to_sql`; segments let a multi-core server go
past one core. Rows COPY cannot type (bad number, uuid, event type, NaN price) are skipped by
`ON_ERROR ignore` and quarantined from its notices. When a file has a structural problem COPY
cannot skip (ragged rows, bad bytes, quoted newlines, empty required fields, a missing
" UTC"), the load falls back to the careful path: Python parses every record, quarantines
the bad ones and COPYs the rest with explicit line numbers.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import io
import time
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import psycopg2
import sqlalchemy as sa

from flows import sql as q
from flows.schema import EVENT_TIME_SUFFIX
from flows.transform import (
    MAX_FIELD_CHARS,
    MAX_RECORD_BYTES,
    FileRejected,
    Header,
    check_record,
    parse_header,
    parse_skip_notice,
    printable,
    reason_class,
    to_copy_line,
)

CHUNK_BYTES = 1 << 20
CHECKED_BATCH_RECORDS = 50_000
MIN_SEGMENT_BYTES = 16 << 20  # below this a second connection costs more than it saves

# Called with the number of bytes just processed; negative when the file starts over.
Progress = Callable[[int], None]


@dataclass
class FileResult:
    file: str
    status: str  # loaded | skipped | failed
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    error: str | None = None
    path: str | None = None  # fast | checked: which load path ran
    checksum: str | None = None
    rows_skipped: int = 0  # rows of an unchanged file, as the ledger recorded them
    # reason class -> count, and the first few quarantined lines of each class (for the report)
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    quarantine_examples: list[dict] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {**vars(self), "rows_per_second": self.rows_per_second}


@dataclass
class Quarantined:
    line: int
    raw: str
    reason: str


QUARANTINE_EXAMPLES_PER_REASON = 3


def summarise_quarantine(rows: list[Quarantined]) -> tuple[dict[str, int], list[dict]]:
    """Count per reason class, and the first few lines of each class with their raw text."""
    counts: dict[str, int] = {}
    examples: list[dict] = []
    for row in sorted(rows, key=lambda r: r.line):
        kind = reason_class(row.reason)
        counts[kind] = counts.get(kind, 0) + 1
        if counts[kind] <= QUARANTINE_EXAMPLES_PER_REASON:
            examples.append({"line": row.line, "reason": row.reason, "raw": row.raw})
    return counts, examples


def ensure_schema(engine: sa.Engine, names: q.Names) -> None:
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            cur.execute(*q.advisory_xact_lock(names.lock_key("ddl")))
            for statement in q.create_schema(names):
                cur.execute(statement)


@dataclass(frozen=True)
class Segment:
    start: int  # byte offset of its first line
    end: int  # byte offset after its last line
    first_line: int
    end_line: int | None  # first line of the next segment; None for the last


def plan_segments(path: Path, header: Header, parts: int) -> list[Segment]:
    """Split the file into `parts` segments at line starts; only the bytes before the last cut
    are read (to number the lines)."""
    size = path.stat().st_size
    cuts = [header.byte_length]
    with path.open("rb") as f:
        for i in range(1, parts):
            f.seek(header.byte_length + (size - header.byte_length) * i // parts - 1)
            f.readline()  # to the start of the next line
            if cuts[-1] < f.tell() < size:
                cuts.append(f.tell())
        segments, line = [], 2
        f.seek(header.byte_length)
        for start, end in zip(cuts[:-1], cuts[1:]):
            newlines = 0
            while f.tell() < end:
                newlines += f.read(min(CHUNK_BYTES, end - f.tell())).count(b"\n")
            segments.append(Segment(start, end, line, line + newlines))
            line += newlines
    segments.append(Segment(cuts[-1], size, line, None))
    return segments


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)  # releases the GIL: runs beside the COPY threads
    return "sha256:" + digest.hexdigest()


class _SegmentReader:
    """The file-like object COPY reads from: one segment's bytes, counting lines and " UTC,"
    markers on the way, to prove afterwards that every record was one line with a UTC
    timestamp."""

    MARKER = (EVENT_TIME_SUFFIX + ",").encode()

    def __init__(self, f, segment: Segment, progress: Progress | None):
        self.f = f
        self.left = segment.end - segment.start
        self.progress = progress
        self.newlines = 0
        self.markers = 0
        self.last_byte = b"\n"
        self._tail = b""
        self.line_run = 0  # bytes of the current line read so far
        self.long_line = False  # a line longer than MAX_FIELD_CHARS: only the careful path can check its fields

    def _scan_line_lengths(self, chunk: bytes) -> None:
        """Sets long_line when a line passes MAX_FIELD_CHARS bytes, in about len/MAX_FIELD_CHARS
        rfind calls: within the bytes the current line may still take, the last newline starts
        the next line; no newline there means the line is too long."""
        pos, run = 0, self.line_run
        while not self.long_line:
            window_end = pos + MAX_FIELD_CHARS + 1 - run
            if window_end > len(chunk):
                newline = chunk.rfind(b"\n", pos)
                self.line_run = len(chunk) - newline - 1 if newline >= 0 else run + len(chunk) - pos
                return
            newline = chunk.rfind(b"\n", pos, window_end)
            if newline < 0:
                self.long_line = True
            pos, run = newline + 1, 0

    def read(self, size: int = CHUNK_BYTES) -> bytes:
        chunk = self.f.read(min(max(size, CHUNK_BYTES), self.left))
        if chunk:
            self.left -= len(chunk)
            self._scan_line_lengths(chunk)
            self.newlines += chunk.count(b"\n")
            # the tail is shorter than the marker, so no marker is counted twice
            self.markers += (self._tail + chunk).count(self.MARKER)
            self._tail = chunk[-(len(self.MARKER) - 1):]
            self.last_byte = chunk[-1:]
            if self.progress:
                self.progress(len(chunk))
        return chunk

    @property
    def lines(self) -> int:
        return self.newlines + (0 if self.last_byte == b"\n" else 1)


@contextlib.contextmanager
def _transaction(engine: sa.Engine):
    """One connection and transaction: (dbapi connection, cursor), notices kept, UTC session;
    rolled back on any error and always returned to the pool."""
    conn = engine.raw_connection()
    try:
        dbapi = conn.dbapi_connection
        dbapi.notices = collections.deque()  # unbounded: every skipped row sends one
        with dbapi.cursor() as cur:
            cur.execute(q.session_setup())
            yield dbapi, cur
    except BaseException:
        try:
            if conn.dbapi_connection is not None:
                conn.dbapi_connection.rollback()
        except psycopg2.Error:  # the connection died (server restart): raise the error that killed
            conn.invalidate()  # it, not "connection already closed", and keep it out of the pool
        raise
    finally:
        conn.close()


def _drain_skips(conn, cur) -> list:
    """COPY's notices reach psycopg2 with the next statement."""
    cur.execute("SELECT 1")
    notices = list(conn.notices)
    conn.notices.clear()
    return [s for s in map(parse_skip_notice, notices) if s]


# COPY errors that mean "this file needs the careful path", not "the database is unwell"
_STRUCTURE_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError, psycopg2.errors.BadCopyFileFormat)


def _copy_segment(engine: sa.Engine, names, leaf: str, sequence: str, source_file: str, header: Header,
                  path: Path, segment: Segment, progress) -> tuple[int, dict[int, str]] | None:
    """Fast path for one segment, committed on its own connection (not yet attached).

    Returns rows loaded and {line: reason} of the rows COPY skipped, or None when only the
    careful path can load this file (nothing of this segment is then left behind)."""
    with _transaction(engine) as (dbapi, cur):
        for statement in q.create_leaf(names, leaf, source_file, segment.first_line, segment.end_line, sequence):
            cur.execute(statement)
        with path.open("rb") as f:
            f.seek(segment.start)
            reader = _SegmentReader(f, segment, progress)
            try:
                cur.copy_expert(q.copy_raw(names, leaf, header.columns), reader, size=CHUNK_BYTES)
            except _STRUCTURE_ERRORS:
                dbapi.rollback()
                return None
            loaded = cur.rowcount
        skips = _drain_skips(dbapi, cur)
        records = loaded + len(skips)
        if reader.lines != records or reader.markers != records or reader.long_line:
            # a quoted newline shifts line numbers, and a missing " UTC" or a huge field must
            # be quarantined (COPY would load a huge text field)
            dbapi.rollback()
            return None
        for statement in q.finish_leaf(names, leaf, sequence):
            cur.execute(statement)
        dbapi.commit()
    return loaded, {segment.first_line + s.copy_line - 1: s.reason for s in skips}


def _read_lines(path: Path, reasons: dict[int, str]) -> list[Quarantined]:
    if not reasons:
        return []
    found = []
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if number in reasons:
                found.append(Quarantined(number, printable(line.decode("utf-8", "surrogateescape").rstrip("\r\n")), reasons[number]))
                if len(found) == len(reasons):
                    break
    return found


class _RecordTooLarge(Exception):
    pass


class _LineFeed:
    """Feeds decoded lines to csv.reader and remembers the raw bytes of the current record."""

    def __init__(self, lines: Iterator[bytes], first_line: int):
        self.lines = lines
        self.pending: collections.deque[bytes] = collections.deque()  # lines to parse again
        self.next_line = first_line
        self.buffer: list[bytes] = []
        self.size = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = self.pending.popleft() if self.pending else next(self.lines)
        self.next_line += 1
        self.buffer.append(raw)
        self.size += len(raw)
        if self.size > MAX_RECORD_BYTES:
            raise _RecordTooLarge
        return raw.decode("utf-8", "surrogateescape")

    def take(self, lines: int | None = None) -> tuple[int, str]:
        """The current record's first line number and raw text; with `lines`, only its first
        `lines` lines are taken and the rest are parsed again."""
        start = self.next_line - len(self.buffer)
        taken, rest = self.buffer[:lines], self.buffer[len(self.buffer) if lines is None else lines:]
        self.pending.extendleft(reversed(rest))
        self.next_line -= len(rest)
        self.buffer, self.size = [], 0
        return start, b"".join(taken).decode("utf-8", "surrogateescape").rstrip("\r\n")


def iter_records(f, first_line: int) -> Iterator[tuple[int, str, list[str] | None, str | None]]:
    """(line, raw text, fields, parse error) for every record, in bounded memory.

    A stray quote makes csv swallow the lines after it; when that ends in a parse error or passes
    MAX_RECORD_BYTES, only the line holding the quote is rejected and the lines after it are
    parsed again, so one bad line never takes good ones with it.
    """
    feed = _LineFeed(iter(f), first_line)
    while True:
        try:
            for fields in csv.reader(feed, strict=True):
                line, raw = feed.take()
                if fields:  # a blank line holds no record
                    yield line, raw, fields, None
            return
        except _RecordTooLarge:
            line, raw = feed.take(lines=1)
            yield line, raw, None, f"record runs past {MAX_RECORD_BYTES} bytes (unclosed quote?)"
        except csv.Error as exc:
            line, raw = feed.take(lines=1)
            yield line, raw, None, f"unparseable CSV: {exc}"


def _checked_copy(conn, cur, names, leaf, source_file, header: Header, path: Path,
                  progress) -> tuple[int, int, list[Quarantined]]:
    """Careful path, in the caller's transaction: parse every record in Python and COPY the good
    ones, with explicit line numbers, into one segment table covering the whole file."""
    for statement in q.create_leaf(names, leaf, source_file, 2, None, sequence=None):
        cur.execute(statement)
    copy_sql = q.copy_checked(names, leaf)
    quarantined: list[Quarantined] = []
    loaded = read = 0

    def flush(batch: list[str], lines: list[tuple[int, str]]) -> int:
        if not batch:
            return 0
        cur.copy_expert(copy_sql, io.StringIO("".join(batch)), size=CHUNK_BYTES)
        count = cur.rowcount
        for skip in _drain_skips(conn, cur):
            line, raw = lines[skip.copy_line - 1]
            quarantined.append(Quarantined(line, printable(raw), skip.reason))
        return count

    with path.open("rb") as f:
        f.seek(header.byte_length)
        batch: list[str] = []
        lines: list[tuple[int, str]] = []
        done_bytes = header.byte_length
        for line, raw, fields, problem in iter_records(f, first_line=2):
            read += 1
            problem = problem or check_record(fields, header)
            if problem:
                quarantined.append(Quarantined(line, printable(raw), problem))
                continue
            batch.append(to_copy_line(fields, header, line))
            lines.append((line, raw))
            if len(batch) >= CHECKED_BATCH_RECORDS:
                loaded += flush(batch, lines)
                batch, lines = [], []
                if progress:
                    progress(f.tell() - done_bytes)
                    done_bytes = f.tell()
        loaded += flush(batch, lines)
        if progress:
            progress(f.tell() - done_bytes)
    for statement in q.finish_leaf(names, leaf, sequence=None):
        cur.execute(statement)
    return read, loaded, quarantined


def _write_quarantine(cur, names, source_file: str, run_id: str, rows: list[Quarantined]) -> None:
    cur.execute(q.delete_quarantine(names), (source_file,))
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([source_file, row.line, row.raw, row.reason, run_id])
    buf.seek(0)
    cur.copy_expert(q.copy_quarantine(names), buf)


class _ProgressTotal:
    """Forwards progress from the segment threads, and can start over (a negative advance)
    when the careful path reads the file again."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.lock = threading.Lock()
        self.sent = 0

    def __call__(self, advance: int) -> None:
        with self.lock:
            self.sent += advance
            if self.progress:
                self.progress(advance)

    def rewind(self) -> None:
        with self.lock:
            if self.progress and self.sent:
                self.progress(-self.sent)
            self.sent = 0


def load_file(
    engine: sa.Engine,
    names: q.Names,
    path: Path,
    *,
    source_file: str | None = None,
    run_id: str = "",
    progress: Progress | None = None,
    parallel: int = 2,
) -> FileResult:
    """Load one CSV file exactly once. File-level problems return status "failed"; database
    errors raise, so the caller's retry policy applies (nothing is visible until the final COMMIT).

    `parallel` segments are COPYed at once (files under MIN_SEGMENT_BYTES a segment use fewer).
    """
    started = time.perf_counter()
    source_file = source_file or path.name
    result = FileResult(file=source_file, status="failed")
    try:
        if not path.is_file():
            raise FileRejected(f"file not found: {path}")
        with path.open("rb") as f:
            header = parse_header(f.readline(MAX_RECORD_BYTES))
        size = path.stat().st_size
        segments = plan_segments(path, header, max(1, min(parallel, size // MIN_SEGMENT_BYTES)))
    except (FileRejected, OSError) as exc:
        result.error = str(exc)
        result.seconds = time.perf_counter() - started
        return result

    # Names: <table>_f<file key><run key> for the file's partition, ..._l...<n> for its segments;
    # the file key lets the next load of this file find what a crashed one left.
    leaf_prefix = f"{names.table}_l{hashlib.md5(source_file.encode()).hexdigest()[:8]}"
    run_key = uuid.uuid4().hex[:6]
    file_partition = f"{names.table}_f{leaf_prefix[-8:]}{run_key}"
    leaves: list[tuple[str, int, int | None]] = []
    try:
        with _transaction(engine) as (dbapi, cur):
            cur.execute(*q.advisory_xact_lock(names.lock_key("file", source_file)))
            cur.execute(q.ledger_entry(names), (source_file,))
            loaded_before = cur.fetchone()
            # Only a file of the size last loaded can be unchanged: hash it before deciding.
            # Any other file is loaded anyway, so its hash is computed beside the COPY.
            if loaded_before and loaded_before[1] == size:
                result.checksum = file_checksum(path)
                if loaded_before[0] == result.checksum:
                    dbapi.rollback()
                    result.status, result.rows_skipped = "skipped", loaded_before[2]
                    result.seconds = time.perf_counter() - started
                    return result
            cur.execute(q.unattached_tables(names), (leaf_prefix,))
            for (orphan,) in cur.fetchall():  # left by a load of this file that crashed
                cur.execute(q.drop_table(names, orphan))

            report = _ProgressTotal(progress)
            planned = [(f"{leaf_prefix}{run_key}{i}", f"{names.table}_q{run_key}{i}", s) for i, s in enumerate(segments)]
            with ThreadPoolExecutor(max_workers=len(planned) + 1) as pool:
                checksum = pool.submit(file_checksum, path) if result.checksum is None else None
                futures = [pool.submit(_copy_segment, engine, names, leaf, seq, source_file, header, path, seg, report)
                           for leaf, seq, seg in planned]
                outcomes = [f.result() for f in futures]
                result.checksum = checksum.result() if checksum else result.checksum
            leaves = [(leaf, seg.first_line, seg.end_line) for (leaf, _, seg), o in zip(planned, outcomes) if o]
            if all(outcomes):
                loaded = sum(o[0] for o in outcomes)
                quarantined = _read_lines(path, {k: v for o in outcomes for k, v in o[1].items()})
                read, result.path = loaded + len(quarantined), "fast"
            else:
                for leaf, _, _ in leaves:  # committed segments: the careful path reloads the whole file
                    cur.execute(q.drop_table(names, leaf))
                leaves = [(f"{leaf_prefix}{run_key}c", 2, None)]
                report.rewind()
                read, loaded, quarantined = _checked_copy(dbapi, cur, names, leaves[0][0], source_file,
                                                          header, path, report)
                result.path = "checked"
            if read != loaded + len(quarantined):  # never commit a load that lost rows
                raise RuntimeError(
                    f"{source_file}: read {read} rows but loaded {loaded} and quarantined {len(quarantined)}"
                )
            cur.execute(q.existing_partition(names), (source_file,))
            old = cur.fetchone()
            for statement in q.swap_partition(names, file_partition, leaves, old[0] if old else None, source_file):
                cur.execute(statement)
            _write_quarantine(cur, names, source_file, run_id, quarantined)
            cur.execute(
                q.upsert_ledger(names),
                (source_file, result.checksum, size, file_partition, read, loaded, len(quarantined), run_id),
            )
            dbapi.commit()
    except BaseException:
        _drop_quietly(engine, names, [leaf for leaf, _, _ in leaves])
        raise
    result.status = "loaded"
    result.rows_read, result.rows_loaded, result.rows_quarantined = read, loaded, len(quarantined)
    result.quarantine_by_reason, result.quarantine_examples = summarise_quarantine(quarantined)
    result.seconds = time.perf_counter() - started
    return result


def _drop_quietly(engine: sa.Engine, names, tables: list[str]) -> None:
    """Best effort after a failure; the next load of the file drops whatever is still there."""
    if not tables:
        return
    try:
        with engine.begin() as conn:
            cur = conn.connection.dbapi_connection.cursor()
            for table in tables:
                cur.execute(q.drop_table(names, table))
    except Exception:  # noqa: BLE001 - the original error matters more
        pass
