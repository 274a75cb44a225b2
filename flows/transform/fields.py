"""The field rules (flows/load/SPEC.md, "Fields"): why a record cannot be loaded, in one wording for
both load paths, and the careful path's re-serialised COPY line."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flows.csv_spec import COLUMNS_BY_NAME, EVENT_TIME_SUFFIX, EVENT_TYPES
from flows.transform.header import Header

MAX_FIELD_CHARS = 64 * 1024  # the longest real field is a 36-char uuid; anything near this is corrupt
MAX_NUMBER_CHARS = 20  # "absurdly long numbers" are refused, not parsed
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1

_TIMESTAMP = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) UTC")
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NOT_TEXT = re.compile("[\x00\udc80-\udcff]")


def _timestamp(value: str) -> bool:
    match = _TIMESTAMP.fullmatch(value)
    if not match:
        return False
    year, month, day, hour, minute, second = map(int, match.groups())
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:  # 30 February, hour 24, second 60, year 0...
        return False
    return True


def _bigint(value: str) -> bool:
    return bool(_INTEGER.fullmatch(value)) and len(value) <= MAX_NUMBER_CHARS and BIGINT_MIN <= int(value) <= BIGINT_MAX


def _price(value: str) -> bool:
    return bool(_DECIMAL.fullmatch(value)) and len(value) <= MAX_NUMBER_CHARS


# sql type (flows.csv_spec) -> (what the value must be, in words; the check)
_RULES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "timestamptz": ('a timestamp like "2019-10-01 00:00:00 UTC"', _timestamp),
    "bigint": ("a whole number within bigint range", _bigint),
    "uuid": ("a uuid", lambda v: bool(_UUID.fullmatch(v))),
    "{event_type}": ("one of " + ", ".join(EVENT_TYPES), lambda v: v in EVENT_TYPES),
    "{price}": ("a finite decimal number", _price),
    "text": ("text", lambda v: True),
}


def check_field(name: str, value: str) -> str | None:
    """Why this field's value cannot be loaded, or None."""
    if len(value) > MAX_FIELD_CHARS:
        return f"{name}: field of {len(value)} characters exceeds {MAX_FIELD_CHARS}"
    bad = _NOT_TEXT.search(value)
    if bad:
        what = "a NUL byte" if bad.group() == "\x00" else "bytes that are not UTF-8"
        return f"{name}: contains {what}"
    column = COLUMNS_BY_NAME[name]
    if value == "":
        return f"{name}: required value is empty" if column.required else None
    words, valid = _RULES[column.sql_type]
    if valid(value):
        return None
    if name == "event_time" and not value.endswith(EVENT_TIME_SUFFIX):
        return f'event_time: "{value}" has no " UTC" zone suffix'
    return f'{name}: "{value}" is not {words}'


def check_record(fields: list[str], header: Header) -> str | None:
    """Why this record cannot be loaded, or None: the first problem in the file's column order."""
    if len(fields) != len(header.columns):
        return f"expected {len(header.columns)} fields, found {len(fields)}"
    for name, value in zip(header.columns, fields, strict=True):
        problem = check_field(name, value)
        if problem:
            return problem
    return None


def to_copy_line(fields: list[str], source_line: int) -> str:
    """One CSV line for the careful path's COPY, fields in the file's order, then source_line.

    Every value is quoted (so CR, LF, commas and quotes inside it survive) except empty ones, which
    stay bare: COPY reads a bare empty field as NULL, the one meaning of an empty field."""
    quoted = ['"' + v.replace('"', '""') + '"' if v else "" for v in fields]
    return ",".join(quoted) + f",{source_line}\n"


_SKIP_NOTICE = re.compile(
    r'skipping row due to data type incompatibility at line (\d+) for column "([^"]+)": (null input|"(.*)")$',
    re.DOTALL,
)


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
    words = _RULES[col.sql_type][0] if col else "a valid value"
    reason = f"{column}: required value is empty" if null_input else f'{column}: "{value}" is not {words}'
    return SkippedRow(copy_line=line, reason=reason)


def copy_skip_reason(raw: str, header: Header, notice_reason: str) -> str:
    """The careful path's reason for a line the fast path's COPY skipped. The notice cuts the value at
    100 bytes and adds "...", so the line is checked again; a fast-path line is plain (no quotes, nine
    fields), so its fields are its text split at commas."""
    return check_record(raw.split(","), header) or notice_reason


_QUOTED_VALUE = re.compile(r'^(\w+): ".*" (is not |has no )', re.DOTALL)
_FIELD_LENGTH = re.compile(r"^(\w+): field of \d+ characters exceeds (\d+)$")
_FIELD_COUNT = re.compile(r"^(expected \d+ fields), found \d+$")


def reason_class(reason: str) -> str:
    """A reason without the offending value, so equal problems group together in reports."""
    if reason.startswith("unparseable CSV"):
        return "unparseable CSV"
    reason = _QUOTED_VALUE.sub(r"\1: value \2", reason)
    reason = _FIELD_COUNT.sub(r"\1", reason)
    return _FIELD_LENGTH.sub(r"\1: field longer than \2 characters", reason)
