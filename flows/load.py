"""Load stage: one file into PostgreSQL, exactly once, with COPY.

Mechanism (chosen by measurement, see ../shared/FACTS.md and `make bench`): each file becomes its
own LIST partition of the events table. Inside ONE transaction the file is COPYed raw into a
typed staging table, category_code is dropped (metadata only), the file's old partition (if
any) is dropped, the staging table is attached as the new partition, its quarantine rows are
replaced and the ledger row is written. A crash or retry before COMMIT leaves nothing behind;
after COMMIT the ledger's checksum makes a rerun skip. A per-file advisory lock serialises two
runs that reach the same file: the second waits, sees the ledger, and skips.

That reached 0.85x of `psql \\copy` here, against 0.5x for re-serializing rows in Python and
0.03x for the tutorial's `to_sql`. Rows COPY cannot type (bad number, uuid, event type, NaN
price) are skipped by `ON_ERROR ignore` and quarantined from its notices. When a file has a
structural problem COPY cannot skip (ragged rows, bad bytes, quoted newlines, empty required
fields, a missing " UTC"), the same transaction falls back to the careful path: Python parses
every record, quarantines the bad ones and COPYs the rest with explicit line numbers.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import psycopg2
import sqlalchemy as sa

from flows import sql as q
from flows.schema import EVENT_TIME_SUFFIX
from flows.transform import (
    MAX_RECORD_BYTES,
    FileRejected,
    Header,
    check_record,
    parse_header,
    parse_skip_notice,
    printable,
    to_copy_line,
)

CHUNK_BYTES = 1 << 20
CHECKED_BATCH_RECORDS = 50_000

Progress = Callable[[int], None]  # called with the number of bytes just processed


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

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


@dataclass
class Quarantined:
    line: int
    raw: str
    reason: str


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def ensure_schema(engine: sa.Engine, names: q.Names) -> None:
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            cur.execute(*q.advisory_xact_lock(names.lock_key("ddl")))
            for statement in q.create_schema(names):
                cur.execute(statement)


class _CountingReader:
    """The file-like object COPY reads from: streams the file's bytes after the header and
    counts lines and " UTC," markers on the way, to prove afterwards that every record was one
    line with a UTC timestamp."""

    MARKER = (EVENT_TIME_SUFFIX + ",").encode()

    def __init__(self, f, progress: Progress | None):
        self.f = f
        self.progress = progress
        self.newlines = 0
        self.markers = 0
        self.last_byte = b"\n"
        self._tail = b""

    def read(self, size: int = CHUNK_BYTES) -> bytes:
        chunk = self.f.read(max(size, CHUNK_BYTES))
        if chunk:
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


def _drain_skips(conn, cur) -> list:
    """COPY's notices reach psycopg2 with the next statement."""
    cur.execute("SELECT 1")
    notices = list(conn.notices)
    conn.notices.clear()
    return [s for s in map(parse_skip_notice, notices) if s]


def _fast_copy(conn, cur, names, stage, header: Header, path: Path, progress) -> tuple[int, list[Quarantined]] | None:
    """COPY the file's bytes as they are. None when only the careful path can load this file."""
    cur.execute("SAVEPOINT fast_copy")
    with path.open("rb") as f:
        f.seek(header.byte_length)
        reader = _CountingReader(f, progress)
        try:
            cur.copy_expert(q.copy_raw(names, stage, header.columns), reader, size=CHUNK_BYTES)
        except (psycopg2.DataError, psycopg2.IntegrityError, psycopg2.errors.BadCopyFileFormat,
                psycopg2.errors.CharacterNotInRepertoire, psycopg2.errors.UntranslatableCharacter):
            cur.execute("ROLLBACK TO SAVEPOINT fast_copy")
            conn.notices.clear()
            return None
        loaded = cur.rowcount
    skips = _drain_skips(conn, cur)
    records = loaded + len(skips)
    if reader.lines != records or reader.markers != records:
        # A quoted newline shifts line numbers, and a missing " UTC" must be quarantined:
        # both need the careful path.
        cur.execute("ROLLBACK TO SAVEPOINT fast_copy")
        return None
    cur.execute("RELEASE SAVEPOINT fast_copy")
    first_data_line = 2
    wanted = {s.copy_line + first_data_line - 1: s.reason for s in skips}
    return loaded, _read_lines(path, wanted)


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


def _checked_copy(conn, cur, names, stage, header: Header, path: Path, progress) -> tuple[int, int, list[Quarantined]]:
    """Careful path: parse every record in Python; COPY the good ones with explicit line numbers."""
    cur.execute(q.truncate(names, stage))
    copy_sql = q.copy_checked(names, stage)
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


def load_file(
    engine: sa.Engine,
    names: q.Names,
    path: Path,
    *,
    source_file: str | None = None,
    run_id: str = "",
    progress: Progress | None = None,
) -> FileResult:
    """Load one CSV file exactly once. File-level problems return status "failed"; database
    errors raise, so the caller's retry policy applies (the transaction is already rolled back)."""
    started = time.perf_counter()
    source_file = source_file or path.name
    result = FileResult(file=source_file, status="failed")
    try:
        if not path.is_file():
            raise FileRejected(f"file not found: {path}")
        with path.open("rb") as f:
            header = parse_header(f.readline(MAX_RECORD_BYTES))
        result.checksum = file_checksum(path)
    except (FileRejected, OSError) as exc:
        result.error = str(exc)
        result.seconds = time.perf_counter() - started
        return result

    suffix = uuid.uuid4().hex[:12]
    stage, sequence = f"{names.table}_p{suffix}", f"{names.table}_s{suffix}"
    conn = engine.raw_connection()
    try:
        dbapi = conn.dbapi_connection
        dbapi.notices = collections.deque()
        with dbapi.cursor() as cur:
            cur.execute(q.session_setup())
            cur.execute(*q.advisory_xact_lock(names.lock_key("file", source_file)))
            cur.execute(q.ledger_checksum(names), (source_file,))
            row = cur.fetchone()
            if row and row[0] == result.checksum:
                dbapi.rollback()
                result.status = "skipped"
                result.seconds = time.perf_counter() - started
                return result
            for statement in q.create_stage(names, stage, sequence, source_file):
                cur.execute(statement)
            fast = _fast_copy(dbapi, cur, names, stage, header, path, progress)
            if fast is not None:
                loaded, quarantined = fast
                read, result.path = loaded + len(quarantined), "fast"
            else:
                read, loaded, quarantined = _checked_copy(dbapi, cur, names, stage, header, path, progress)
                result.path = "checked"
            if read != loaded + len(quarantined):  # never commit a load that lost rows
                raise RuntimeError(
                    f"{source_file}: read {read} rows but loaded {loaded} and quarantined {len(quarantined)}"
                )
            cur.execute(q.existing_partition(names), (source_file,))
            old = cur.fetchone()
            for statement in q.promote_stage(names, stage, sequence, old[0] if old else None, source_file):
                cur.execute(statement)
            _write_quarantine(cur, names, source_file, run_id, quarantined)
            cur.execute(
                q.upsert_ledger(names),
                (source_file, result.checksum, stage, read, loaded, len(quarantined), run_id),
            )
        dbapi.commit()
    except BaseException:
        conn.dbapi_connection.rollback() if conn.dbapi_connection else None
        raise
    finally:
        conn.close()
    result.status = "loaded"
    result.rows_read, result.rows_loaded, result.rows_quarantined = read, loaded, len(quarantined)
    result.seconds = time.perf_counter() - started
    return result
