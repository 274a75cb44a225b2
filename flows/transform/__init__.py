"""Validate/transform stage: pure functions, no IO.

Postgres does the type conversion (timestamptz, bigint, numeric, uuid, the event-type enum) during
COPY; the rules here decide what may reach it (flows/load/SPEC.md):

- header: the header line and the file's column order
- records: CSV records from physical lines, their line numbers and raw text
- fields: the field rules, quarantine reasons and their classes, the careful path's COPY line
- fastcheck: the byte-level proof that lets the fast path hand a file's raw bytes to COPY
"""

from flows.transform.fastcheck import MAX_FAST_LINE_BYTES, count_newlines, fast_lines
from flows.transform.fields import (
    MAX_FIELD_CHARS,
    MAX_NUMBER_CHARS,
    SkippedRow,
    check_field,
    check_record,
    copy_skip_reason,
    parse_skip_notice,
    reason_class,
    to_copy_line,
)
from flows.transform.header import MAX_HEADER_BYTES, UTF8_BOM, Header, parse_header
from flows.transform.records import (
    MAX_RECORD_BYTES,
    file_name_problem,
    iter_records,
    printable,
    raw_text,
    split_lines,
)

__all__ = [
    "MAX_FAST_LINE_BYTES",
    "MAX_FIELD_CHARS",
    "MAX_HEADER_BYTES",
    "MAX_NUMBER_CHARS",
    "MAX_RECORD_BYTES",
    "UTF8_BOM",
    "Header",
    "SkippedRow",
    "check_field",
    "check_record",
    "copy_skip_reason",
    "count_newlines",
    "fast_lines",
    "file_name_problem",
    "iter_records",
    "parse_header",
    "parse_skip_notice",
    "printable",
    "raw_text",
    "reason_class",
    "split_lines",
    "to_copy_line",
]
