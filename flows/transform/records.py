"""CSV records from physical lines: line numbers, raw text, and recovery after a stray quote."""

from __future__ import annotations

import collections
import csv
import re
from collections.abc import Iterable, Iterator

MAX_RECORD_BYTES = 131_072  # bounds memory when a stray quote swallows the rest of a file; csv's own field
# limit (131,072 characters) can then never be reached, so its error never cuts a record short

_NOT_TEXT = re.compile("[\x00\udc80-\udcff]")


def printable(raw: str) -> str:
    """Raw text safe for a Postgres text column: undecodable bytes and NUL become \\xNN escapes."""
    if not _NOT_TEXT.search(raw):
        return raw
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def file_name_problem(name: str) -> str | None:
    """Why a file's name cannot key the ledger (a name read from a disk whose bytes are not UTF-8), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"the file name {printable(name)!r} is not valid UTF-8: rename the file "
            "(the load ledger and the Prefect UI key files by name)"
        )
    return None


def raw_text(lines: list[bytes]) -> str:
    """A record's raw text: its lines without the final line ending (one LF, then one CR)."""
    return printable(b"".join(lines).removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", "surrogateescape"))


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines (each with its LF; the last may lack it) of bytes read in chunks cut anywhere. A line
    longer than a chunk is gathered in a list and joined once: linear in its length."""
    pending: list[bytes] = []
    for chunk in chunks:
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            pending.append(chunk)
            continue
        if pending:
            lines[0] = b"".join([*pending, lines[0]])
        last = lines.pop()
        pending = [last] if last else []
        for line in lines:
            yield line + b"\n"
    if pending:
        yield b"".join(pending)


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

    def __iter__(self) -> _LineFeed:
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
        keep = len(self.buffer) if lines is None else lines
        taken, rest = self.buffer[:keep], self.buffer[keep:]
        self.pending.extendleft(reversed(rest))
        self.next_line -= len(rest)
        self.buffer, self.size = [], 0
        return start, raw_text(taken)


def iter_records(lines: Iterable[bytes], first_line: int) -> Iterator[tuple[int, str, list[str] | None, str | None]]:
    """(line, raw text, fields, parse error) for every record of `lines` (bytes, with their line
    endings), in bounded memory.

    A stray quote makes csv swallow the lines after it; when that ends in a parse error or passes
    MAX_RECORD_BYTES, only the line holding the quote is rejected and the lines after it are
    parsed again, so one bad line never takes good ones with it.
    """
    feed = _LineFeed(iter(lines), first_line)
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
