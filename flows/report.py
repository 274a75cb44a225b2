"""One run's results, and every way they are shown: the CLI's JSON and table, and the UI's artifacts.

Pure functions of the per-file results; the columns are listed once, here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from flows.load import FileResult
from flows.transform import printable

# (column title, how to read it from a FileResult): the summary artifact and the CLI table
SUMMARY_COLUMNS: tuple[tuple[str, Callable[[FileResult], Any]], ...] = (
    ("file", lambda r: r.file),
    ("status", lambda r: r.status),
    ("attempts", lambda r: r.attempts),
    ("rows read", lambda r: r.rows_read),
    ("rows loaded", lambda r: r.rows_loaded),
    ("rows quarantined", lambda r: r.rows_quarantined),
    ("rows skipped", lambda r: r.rows_skipped),
    ("seconds", lambda r: round(r.seconds, 2)),
    ("rows/s", lambda r: round(r.rows_per_second) if r.status == "loaded" else 0),
    ("error", lambda r: r.error or ""),
)
TOTALS = ("rows_read", "rows_loaded", "rows_quarantined", "rows_skipped")
RAW_TEXT_CHARS = 200  # of a quarantined line in the report


def failed_result(name: str, error: str) -> FileResult:
    """A file that failed before or outside its load (its name, fetching, a crashed run)."""
    return FileResult(file=printable(name), status="failed", error=error)


class RunReport(BaseModel):
    """A run's files, in the run's order: what the pipeline flow returns and every rendering reads."""

    files: list[FileResult] = Field(default_factory=list)
    source: str = ""
    table: str = ""

    @property
    def totals(self) -> dict[str, int]:
        return {key: sum(getattr(f, key) for f in self.files) for key in TOTALS}

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def as_json(self) -> dict:
        return {"files": [f.as_dict() for f in self.files], **self.totals}

    def summary_rows(self) -> list[dict[str, Any]]:
        return [{title: read(f) for title, read in SUMMARY_COLUMNS} for f in self.files]

    def total_row(self) -> dict[str, Any]:
        """The table's last row: each total under its own column (the columns are SUMMARY_COLUMNS)."""
        totals = {key.replace("_", " "): value for key, value in self.totals.items()}
        return {title: "total" if title == "file" else totals.get(title, "") for title, _ in SUMMARY_COLUMNS}

    def quarantine_markdown(self) -> str:
        lines = [f"# Quarantine report: source `{self.source}`, table `{self.table}`", ""]
        quarantined = sum(f.rows_quarantined for f in self.files)
        if not quarantined:
            lines.append("Nothing quarantined: every row read was loaded.")
        for f in self.files:
            lines += _file_section(f)
        return "\n".join(lines) + "\n"


def print_table(report: RunReport) -> None:
    """The run's summary for people, on stderr (the CLI)."""
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title="ecommerce-etl")
    for title, _ in SUMMARY_COLUMNS:
        table.add_column(title, justify="left" if title in ("file", "status", "error") else "right")
    for row in [*report.summary_rows(), report.total_row()]:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    # a log file or pipe has no width of its own: wide enough that numbers are never cut
    Console(stderr=True, width=None if sys.stderr.isatty() else 160).print(table)


def result_line(result: FileResult) -> str:
    """One file's outcome as a log line."""
    if result.status == "failed":
        return f"{result.file}: FAILED: {result.error}"
    if result.status == "skipped":
        return f"{result.file}: skipped, unchanged since it was loaded ({result.checksum})"
    return (
        f"{result.file}: {result.rows_loaded} rows loaded, {result.rows_quarantined} quarantined "
        f"in {result.seconds:.1f}s ({result.rows_per_second:,.0f} rows/s, {result.load_path} path)"
    )


def _file_section(result: FileResult) -> list[str]:
    name = _inline(result.file)
    if result.status == "failed":
        return ["", f"## {name}: failed", "", _inline(result.error or "")]
    if result.status == "skipped":
        return ["", f"## {name}: skipped", "", "Unchanged since its last load; its quarantine rows are from that load."]
    if not result.rows_quarantined:
        return ["", f"## {name}: nothing quarantined", "", f"{result.rows_loaded:,} rows loaded."]
    out = [
        "",
        f"## {name}: {result.rows_quarantined:,} of {result.rows_read:,} rows quarantined",
        "",
        "| reason | rows |",
        "|---|---:|",
    ]
    out += [f"| {_cell(reason)} | {count:,} |" for reason, count in sorted(result.quarantine_by_reason.items())]
    out += ["", "| line | reason | raw text |", "|---:|---|---|"]
    out += [f"| {e['line']} | {_cell(e['reason'])} | {_code(e['raw'])} |" for e in result.quarantine_examples]
    return out


def _inline(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


def _cell(text: str) -> str:
    return _inline(text).replace("|", "\\|")


def _code(raw: str) -> str:
    """Raw text as a code span: shortened, and safe inside a table cell."""
    text = raw if len(raw) <= RAW_TEXT_CHARS else raw[:RAW_TEXT_CHARS] + "…"
    text = _cell(text)  # GFM keeps an escaped pipe inside a code span in a table
    if not text.strip():
        return "(empty)"
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(run) for run in re.findall("`+", text)) + 1)  # longer than any run inside
    return f"{fence} {text} {fence}"
