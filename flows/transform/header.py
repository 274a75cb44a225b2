"""The header line: which columns the file has, in which order, or why the file cannot be loaded."""

from __future__ import annotations

import csv
from dataclasses import dataclass

from flows.csv_spec import CSV_HEADER
from flows.errors import FileRejected

UTF8_BOM = b"\xef\xbb\xbf"
MAX_HEADER_BYTES = 65_536  # a real header is 91 bytes; this bounds what a broken file makes us read


@dataclass(frozen=True)
class Header:
    columns: tuple[str, ...]  # the file's column order, validated against CSV_HEADER
    raw: bytes  # the header line as read, BOM and line ending included

    @property
    def byte_length(self) -> int:
        return len(self.raw)

    @property
    def canonical(self) -> bool:
        """The dataset's own column order (the only one the fast path takes)."""
        return self.columns == CSV_HEADER


def parse_header(first_line: bytes) -> Header:
    """Check the first line (read with readline(MAX_HEADER_BYTES + 1)) and return the column order.

    Reordered columns are fine (COPY takes a column list); missing, unknown or duplicated ones, and
    lines that are not one UTF-8 CSV record, reject the file.
    """
    line = first_line.removesuffix(b"\n").removesuffix(b"\r")
    if not line.strip():
        raise FileRejected("the file is empty: expected a header line with " + ",".join(CSV_HEADER))
    if b"\r" in line:
        raise FileRejected(
            "the header line holds a carriage return that does not end it: the file has CR-only "
            "(old Mac) line endings or a broken header; save it with LF or CRLF line endings"
        )
    if len(first_line) > MAX_HEADER_BYTES:
        raise FileRejected(f"the header line is longer than {MAX_HEADER_BYTES} bytes: expected " + ",".join(CSV_HEADER))
    try:
        decoded = line.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRejected(f"the header line is not UTF-8 text ({exc.reason})") from None
    try:
        rows = list(csv.reader([decoded], strict=True))
    except csv.Error as exc:
        raise FileRejected(f"the first line is not a CSV header ({exc})") from None
    names = tuple(n.strip() for n in rows[0]) if len(rows) == 1 else ()
    _check_names(names)
    return Header(columns=names, raw=first_line)


def _check_names(names: tuple[str, ...]) -> None:
    expected = set(CSV_HEADER)
    missing = [n for n in CSV_HEADER if n not in names]
    unknown = [n for n in names if n not in expected]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if not (missing or unknown or duplicated):
        return
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unknown:
        problems.append("unexpected " + ", ".join(repr(n) for n in unknown))
    if duplicated:
        problems.append("duplicated " + ", ".join(duplicated))
    raise FileRejected(f"wrong header ({'; '.join(problems)}): expected the columns {','.join(CSV_HEADER)}")
