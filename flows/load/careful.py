"""Phase "stage careful": every record parsed and checked in Python (flows.transform), the good ones
COPYed with explicit line numbers into one segment table, in the caller's transaction."""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from flows import sql as q
from flows.errors import FileChanged
from flows.load.context import LoadContext
from flows.load.db import drain_skips
from flows.load.plan import BlockHasher
from flows.load.result import Quarantined
from flows.transform import check_record, iter_records, split_lines, to_copy_line

BATCH_RECORDS = 50_000


@dataclass
class CarefulStage:
    table: str
    read: int = 0
    loaded: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)


class _Batch:
    """Records waiting for one COPY, with the COPY-stream line each starts on (a record with a quoted
    line break takes several), to map COPY's line numbers back to the file's."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.records: list[tuple[int, str]] = []  # (file line, raw text)
        self.stream_starts: list[int] = []
        self.stream_lines = 0

    def add(self, line: int, raw: str, copy_line: str) -> None:
        self.text.append(copy_line)
        self.records.append((line, raw))
        self.stream_starts.append(self.stream_lines + 1)
        self.stream_lines += copy_line.count("\n")

    def record_at(self, stream_line: int) -> tuple[int, str]:
        return self.records[bisect.bisect_right(self.stream_starts, stream_line) - 1]


def stage_careful(ctx: LoadContext, conn: Any, cur: Any) -> CarefulStage:
    stage = CarefulStage(ctx.objects.segment("c"))
    header = ctx.plan.header
    with ctx.step("stage-careful.create"):
        for statement in q.create_leaf(ctx.names, stage.table, ctx.source_file, 2, None, sequence=None):
            cur.execute(statement)
    copy_sql = q.copy_careful(ctx.names, stage.table, header.columns)
    hasher = BlockHasher(ctx.plan, 0)
    hasher.update(header.raw)
    batch = _Batch()
    with ctx.step("stage-careful.copy"), ctx.path.open("rb") as f:
        f.seek(header.byte_length)
        for line, raw, fields, problem in iter_records(_lines(f, ctx, hasher), first_line=2):
            stage.read += 1
            problem = problem or check_record(fields or [], header)
            if problem:
                stage.quarantined.append(Quarantined(line, raw, problem))
                continue
            batch.add(line, raw, to_copy_line(fields or [], line))
            if len(batch.text) >= BATCH_RECORDS:
                _flush(cur, conn, copy_sql, batch, stage)
                batch = _Batch()
        _flush(cur, conn, copy_sql, batch, stage)
    if hasher.position != ctx.plan.size:
        raise FileChanged(
            f"the file ended at byte {hasher.position} of {ctx.plan.size} while it was being loaded; "
            "nothing was committed, load it again once it is complete"
        )
    stage.digests = hasher.digests
    with ctx.step("stage-careful.finish"):
        for statement in q.finish_leaf(ctx.names, stage.table, sequence=None):
            cur.execute(statement)
    return stage


def _lines(f: BinaryIO, ctx: LoadContext, hasher: BlockHasher) -> Iterator[bytes]:
    """The file's lines (with their line endings) up to its planned size, hashed as they are read."""
    return split_lines(_chunks(f, ctx, hasher))


def _chunks(f: BinaryIO, ctx: LoadContext, hasher: BlockHasher) -> Iterator[bytes]:
    left = ctx.plan.size - ctx.plan.header.byte_length
    while left:
        chunk = f.read(min(ctx.tuning.chunk_bytes, left))
        if not chunk:
            break
        left -= len(chunk)
        hasher.update(chunk)
        ctx.progress(len(chunk))
        yield chunk


def _flush(cur: Any, conn: Any, copy_sql: Any, batch: _Batch, stage: CarefulStage) -> None:
    if not batch.text:
        return
    cur.copy_expert(copy_sql, io.StringIO("".join(batch.text)), size=1 << 20)
    stage.loaded += cur.rowcount
    for skip in drain_skips(conn, cur):  # not expected: the checks above are the stricter ones
        line, raw = batch.record_at(skip.copy_line)
        stage.quarantined.append(Quarantined(line, raw, skip.reason))
