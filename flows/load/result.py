"""What a load reports: one FileResult per file (the flow's JSON, artifact and CLI table all read it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from flows.transform import reason_class

QUARANTINE_EXAMPLES_PER_REASON = 3


FileStatus = Literal["pending", "loaded", "skipped", "failed"]
LoadPath = Literal["fast", "careful"]  # the two ways a file reaches its table (SPEC.md)


class FileResult(BaseModel):
    """One file's outcome: what the flows, the fan-out, the report, the events and --json carry."""

    file: str
    status: FileStatus  # pending: not finished yet (in a run's report while it runs)
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    error: str | None = None
    load_path: LoadPath | None = None  # which load path ran (loaded files)
    checksum: str | None = None
    rows_skipped: int = 0  # rows of an unchanged file, as the ledger recorded them
    attempts: int = 1  # times its load started: more when a crashed or rescheduled load-file run ran again
    # reason class -> count, and the first few quarantined lines of each class (for the report)
    quarantine_by_reason: dict[str, int] = Field(default_factory=dict)
    quarantine_examples: list[dict[str, Any]] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass
class Quarantined:
    line: int
    raw: str
    reason: str


def summarise_quarantine(rows: list[Quarantined]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Count per reason class, and the first few lines of each class with their raw text."""
    counts: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: r.line):
        kind = reason_class(row.reason)
        counts[kind] = counts.get(kind, 0) + 1
        if counts[kind] <= QUARANTINE_EXAMPLES_PER_REASON:
            examples.append({"line": row.line, "reason": row.reason, "raw": row.raw})
    return counts, examples
