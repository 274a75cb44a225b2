"""Validate/transform stage: pure functions, no IO.

Postgres does the type conversion (timestamptz, bigint, numeric, uuid, the event-type enum)
during COPY, so the rules here cover what COPY cannot: the header, the record structure,
bytes that are not text, required fields and the explicit UTC zone.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from flows.schema import COLUMNS_BY_NAME, CSV_HEADER, EVENT_TIME_SUFFIX

UTF8_BOM = b"\xef\xbb\xbf"
MAX_FIELD_CHARS = 64 * 1024  # the longest real field is a 36-char uuid; anything near this is corrupt
MAX_RECORD_BYTES = 1024 * 1024  # bounds memory when a stray quote swallows the rest of a file


class FileRejected(Exception):
    """The whole file cannot be loaded (missing, wrong header, corrupt archive...)."""


@dataclass(frozen=True)
class Header:
    columns: tuple[str, ...]  # the file's column order, validated against CSV_HEADER
    byte_length: int  # bytes of the header line including BOM and line ending


def parse_header(first_line: bytes) -> Header:
    """Check the header line and return the file's column order.

    Reordered columns are fine (COPY takes a column list); missing, unknown or duplicated ones
    reject the file.
    """
    if not first_line.strip():
        raise FileRejected("the file is empty: expected a header line with " + ",".join(CSV_HEADER))
    text = first_line.removeprefix(UTF8_BOM)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRejected(f"the header line is not UTF-8 text ({exc.reason})") from None
    names = tuple(n.strip() for n in next(csv.reader([decoded.rstrip("\r\n")])))
    expected = set(CSV_HEADER)
    missing = [n for n in CSV_HEADER if n not in names]
    unknown = [n for n in names if n not in expected]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if missing or unknown or duplicated:
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing))
        if unknown:
            problems.append("unexpected " + ", ".join(repr(n) for n in unknown))
        if duplicated:
            problems.append("duplicated " + ", ".join(duplicated))
        raise FileRejected(
            f"wrong header ({'; '.join(problems)}): expected the columns {','.join(CSV_HEADER)}"
        )
    return Header(columns=names, byte_length=len(first_line))


_NOT_TEXT = re.compile("[\x00\udc80-\udcff]")


def printable(raw: str) -> str:
    """Raw text safe for a Postgres text column: undecodable bytes and NUL become \\xNN escapes."""
    if not _NOT_TEXT.search(raw):
        return raw
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def check_record(fields: list[str], header: Header) -> str | None:
    """Why this record cannot be loaded, or None when only type checks (done by Postgres) remain."""
    if len(fields) != len(header.columns):
        return f"expected {len(header.columns)} fields, found {len(fields)}"
    for name, value in zip(header.columns, fields):
        if len(value) > MAX_FIELD_CHARS:
            return f"{name}: field of {len(value)} characters exceeds {MAX_FIELD_CHARS}"
        bad = _NOT_TEXT.search(value)
        if bad:
            what = "a NUL byte" if bad.group() == "\x00" else "bytes that are not UTF-8"
            return f"{name}: contains {what}"
        if value == "" and COLUMNS_BY_NAME[name].required:
            return f"{name}: required value is empty"
    event_time = fields[header.columns.index("event_time")]
    if not event_time.endswith(EVENT_TIME_SUFFIX):
        return f'event_time: "{event_time}" has no " UTC" zone suffix'
    return None


def to_copy_line(fields: list[str], header: Header, source_line: int) -> str:
    """One CSV line in CSV_HEADER order plus source_line, for the careful path's COPY."""
    by_name = dict(zip(header.columns, fields))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([*(by_name[n] for n in CSV_HEADER), source_line])
    return out.getvalue()


_SKIP_NOTICE = re.compile(
    r'skipping row due to data type incompatibility at line (\d+) for column "([^"]+)": (null input|"(.*)")$',
    re.S,
)

_TYPE_WORDS = {
    "timestamptz": 'a timestamp like "2019-10-01 00:00:00 UTC"',
    "bigint": "a whole number within bigint range",
    "uuid": "a uuid",
    "{event_type}": "one of view, cart, remove_from_cart, purchase",
    "{price}": "a finite decimal number",
}


@dataclass(frozen=True)
class SkippedRow:
    copy_line: int  # line number within the COPY stream
    reason: str


def parse_skip_notice(notice: str) -> SkippedRow | None:
    """Turn Postgres's ON_ERROR ignore notice into a quarantine reason; None for other notices."""
    match = _SKIP_NOTICE.search(notice.strip().removeprefix("NOTICE:").strip())
    if not match:
        return None
    line, column, null_input, value = int(match[1]), match[2], match[3] == "null input", match[4]
    col = COLUMNS_BY_NAME.get(column)
    expected = _TYPE_WORDS.get(col.sql_type if col else "", "a valid value")
    if null_input:
        reason = f"{column}: required value is empty"
    else:
        reason = f'{column}: "{value}" is not {expected}'
    return SkippedRow(copy_line=line, reason=reason)


_QUOTED_VALUE = re.compile(r'^(\w+): ".*" (is not |has no )', re.S)
_FIELD_LENGTH = re.compile(r"^(\w+): field of \d+ characters exceeds (\d+)$")


def reason_class(reason: str) -> str:
    """A reason without the offending value, so equal problems group together in reports."""
    reason = _QUOTED_VALUE.sub(r"\1: value \2", reason)
    return _FIELD_LENGTH.sub(r"\1: field longer than \2 characters", reason)
