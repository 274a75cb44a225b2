"""The reference implementation of flows/load/SPEC.md: for any bytes, the fate of every record.

Deliberately small and slow, written from the specification and sharing no code with flows/: one
fresh csv reader per record, one regular expression per column. The differential test compares the
real loader (both paths) with it.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import itertools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

COLUMNS = ("event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price",
           "user_id", "user_session")
REQUIRED = {"event_time", "event_type", "product_id", "category_id", "price", "user_id"}
EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")
MAX_HEADER_BYTES = 65_536
MAX_RECORD_BYTES = 131_072
MAX_FIELD_CHARS = 65_536
BIGINT = (-(2**63), 2**63 - 1)

TIMESTAMP = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) UTC")
INTEGER = re.compile(r"-?[0-9]+")
DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

WHAT = {
    "event_time": 'a timestamp like "2019-10-01 00:00:00 UTC"',
    "event_type": "one of view, cart, remove_from_cart, purchase",
    "product_id": "a whole number within bigint range",
    "category_id": "a whole number within bigint range",
    "user_id": "a whole number within bigint range",
    "price": "a finite decimal number",
    "user_session": "a uuid",
}


@dataclass
class Fate:
    rejected: bool = False
    loaded: dict[int, tuple] = field(default_factory=dict)  # line -> values in table order (no category_code)
    quarantined: dict[int, tuple[str, str]] = field(default_factory=dict)  # line -> (raw text, reason)


def expected_fate(data: bytes) -> Fate:
    header_end = data.find(b"\n")
    first = data if header_end < 0 else data[: header_end + 1]
    columns = _header(first)
    if columns is None:
        return Fate(rejected=True)
    fate = Fate()
    lines = _physical_lines(data[len(first):])
    i = 0
    while i < len(lines):
        start = i
        used, fields, problem = _one_record(lines, i)
        raw = _raw(lines[start:start + used])
        i = start + used
        if fields == [] and problem is None:
            continue  # a blank line
        problem = problem or _record_problem(fields, columns)
        if problem:
            fate.quarantined[start + 2] = (raw, problem)
        else:
            fate.loaded[start + 2] = _values(dict(zip(columns, fields)))
    return fate


def _header(first: bytes) -> tuple[str, ...] | None:
    """The file's column order, or None when the file is rejected."""
    line = first.removesuffix(b"\n").removesuffix(b"\r")
    if not line.strip() or b"\r" in line or len(first) > MAX_HEADER_BYTES:
        return None
    try:
        text = line.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
        rows = list(csv.reader([text], strict=True))
    except (UnicodeDecodeError, csv.Error):
        return None
    names = tuple(n.strip() for n in rows[0]) if len(rows) == 1 else ()
    return names if sorted(names) == sorted(COLUMNS) else None


def _physical_lines(body: bytes) -> list[bytes]:
    parts = body.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


def _one_record(lines: list[bytes], i: int) -> tuple[int, list[str] | None, str | None]:
    """(lines used, fields, problem) for the record starting at line i."""
    used = 0

    def feed() -> Iterator[str]:
        nonlocal used
        size = 0
        for line in lines[i:]:
            size += len(line)
            if size > MAX_RECORD_BYTES:
                raise OverflowError
            used += 1
            yield line.decode("utf-8", "surrogateescape")

    try:
        fields = next(csv.reader(feed(), strict=True), None)
    except OverflowError:
        return 1, None, f"record runs past {MAX_RECORD_BYTES} bytes (unclosed quote?)"
    except csv.Error as exc:
        return 1, None, f"unparseable CSV: {exc}"
    return used, fields, None


def _raw(lines: list[bytes]) -> str:
    text = b"".join(lines).removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", "surrogateescape")
    out = []
    for ch in text:
        if ch == "\x00" or "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{(ord(ch) & 0xFF):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _record_problem(fields: list[str], columns: tuple[str, ...]) -> str | None:
    if len(fields) != len(COLUMNS):
        return f"expected 9 fields, found {len(fields)}"
    for name, value in zip(columns, fields):
        if len(value) > MAX_FIELD_CHARS:
            return f"{name}: field of {len(value)} characters exceeds {MAX_FIELD_CHARS}"
        if "\x00" in value:
            return f"{name}: contains a NUL byte"
        if any("\udc80" <= ch <= "\udcff" for ch in value):
            return f"{name}: contains bytes that are not UTF-8"
        if value == "":
            if name in REQUIRED:
                return f"{name}: required value is empty"
            continue
        if not _valid(name, value):
            if name == "event_time" and not value.endswith(" UTC"):
                return f'event_time: "{value}" has no " UTC" zone suffix'
            return f'{name}: "{value}" is not {WHAT[name]}'
    return None


def _valid(name: str, value: str) -> bool:
    if name == "event_time":
        return _timestamp(value) is not None
    if name == "event_type":
        return value in EVENT_TYPES
    if name in ("product_id", "category_id", "user_id"):
        return bool(INTEGER.fullmatch(value)) and len(value) <= 20 and BIGINT[0] <= int(value) <= BIGINT[1]
    if name == "price":
        return bool(DECIMAL.fullmatch(value)) and len(value) <= 20
    if name == "user_session":
        return bool(UUID.fullmatch(value))
    return True  # category_code, brand: any text


def _timestamp(value: str) -> datetime | None:
    match = TIMESTAMP.fullmatch(value)
    if not match:
        return None
    try:
        return datetime(*map(int, match.groups()), tzinfo=UTC)
    except ValueError:
        return None


def _values(record: dict[str, str]) -> tuple:
    def optional(name: str) -> str | None:
        return record[name] or None

    session = optional("user_session")
    return (
        _timestamp(record["event_time"]),
        record["event_type"],
        int(record["product_id"]),
        int(record["category_id"]),
        optional("brand"),
        Decimal(record["price"]),
        int(record["user_id"]),
        str(uuid.UUID(session)) if session else None,
    )


def checksum(data: bytes, block_bytes: int) -> str:
    """The ledger's checksum (SPEC.md, "Identity"): SHA-256 over the SHA-256 of each block, where a block
    ends at the first line start at or after each multiple of B (the end of the file ends the last)."""
    line_starts = [m.end() for m in re.finditer(b"\n", data)] + [len(data)]
    ends: list[int] = []
    for multiple in range(block_bytes, len(data), block_bytes):
        end = line_starts[bisect.bisect_left(line_starts, multiple)]
        if not ends or ends[-1] != end:
            ends.append(end)
    if not ends or ends[-1] != len(data):
        ends.append(len(data))
    digests = b"".join(hashlib.sha256(data[a:b]).digest() for a, b in itertools.pairwise([0, *ends]))
    return f"sha256-blocks{block_bytes}:" + hashlib.sha256(digests).hexdigest()
