"""Phase "stage fast": each segment's raw bytes COPYed on its own connection and committed, not yet
attached; only when the byte-level check (flows.transform.fastcheck) passes every line."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

import psycopg2

from flows import sql as q
from flows.errors import FileChanged
from flows.load.context import LoadContext
from flows.load.db import drain_skips, transaction
from flows.load.plan import BlockHasher, Segment
from flows.transform import MAX_FAST_LINE_BYTES, FastLineCheck

# COPY errors that mean "this file needs the careful path", not "the database is unwell"
_STRUCTURE_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError, psycopg2.errors.BadCopyFileFormat)


@dataclass
class StagedSegment:
    segment: Segment
    table: str
    loaded: int
    skipped: dict[int, str]  # line -> reason, rows COPY refused
    digests: list[bytes]


@dataclass
class FastStage:
    """The segments the fast path committed; `complete` when every segment made it."""

    staged: list[StagedSegment] = field(default_factory=list)
    complete: bool = False

    @property
    def tables(self) -> list[str]:
        return [s.table for s in self.staged]


class _SegmentReader:
    """The file-like object COPY reads from: one segment's bytes in whole lines, each chunk proven
    COPY-safe, hashed and counted on the way. It ends the COPY early (returns b"") when a chunk fails
    the check or another segment gave up."""

    def __init__(self, f: BinaryIO, ctx: LoadContext, segment: Segment, give_up: threading.Event):
        self.f = f
        self.segment = segment
        self.left = segment.end - segment.start
        self.chunk_bytes = ctx.tuning.chunk_bytes
        self.progress = ctx.progress
        self.give_up = give_up
        self.check = FastLineCheck()
        self.hasher = BlockHasher(ctx.plan, 0 if segment.index == 0 else segment.start)
        if segment.index == 0:
            self.hasher.update(ctx.plan.header.raw)
        self.carry = b""
        self.lines = 0
        self.failure: FileChanged | None = None  # psycopg2 would turn it into a bare QueryCanceled

    def read(self, size: int = -1) -> bytes:
        if self.give_up.is_set():
            return b""
        try:
            data = self._whole_lines()
        except FileChanged as exc:
            self.failure = exc
            self.give_up.set()
            return b""
        if not data:
            return b""
        lines = self.check.lines(data)
        if lines is None:
            self.give_up.set()
            return b""
        self.hasher.update(data)
        self.lines += lines
        self.progress(len(data))
        return data

    def _whole_lines(self) -> bytes:
        data = self.carry
        while self.left:
            chunk = self.f.read(min(self.chunk_bytes, self.left))
            if not chunk:
                raise FileChanged(
                    f"the file ended {self.left} bytes early while it was being loaded: it is being "
                    "written; nothing was committed, load it again once it is complete"
                )
            self.left -= len(chunk)
            data += chunk
            cut = data.rfind(b"\n") + 1
            if cut:
                self.carry = data[cut:]
                return data[:cut]
            if len(data) > MAX_FAST_LINE_BYTES + 2:
                return data  # a line too long for the fast path: the check refuses it
        self.carry = b""
        return data  # the segment's end (the file's last line may lack its LF)


def stage_fast(ctx: LoadContext) -> FastStage:
    give_up = threading.Event()
    stage = FastStage()
    with ThreadPoolExecutor(max_workers=len(ctx.plan.segments)) as pool:
        futures = [pool.submit(_copy_segment, ctx, segment, give_up) for segment in ctx.plan.segments]
        outcomes = [f.result() for f in futures]  # every thread ends before any error is raised
    stage.staged = [o for o in outcomes if o is not None]
    stage.complete = len(stage.staged) == len(ctx.plan.segments)
    return stage


def _copy_segment(ctx: LoadContext, segment: Segment, give_up: threading.Event) -> StagedSegment | None:
    """One segment, committed on its own connection (not yet attached); None when only the careful
    path can load this file (nothing of this segment is then left behind)."""
    table, sequence = ctx.objects.segment(segment.index), ctx.objects.sequence(segment.index)
    names = ctx.names
    with transaction(ctx.engine) as (dbapi, cur), ctx.path.open("rb") as f:
        with ctx.step("stage-fast.create"):
            for statement in q.create_leaf(
                names, table, ctx.source_file, segment.first_line, segment.end_line, sequence
            ):
                cur.execute(statement)
        f.seek(segment.start)
        reader = _SegmentReader(f, ctx, segment, give_up)
        try:
            with ctx.step("stage-fast.copy"):
                cur.copy_expert(q.copy_raw(names, table, ctx.plan.header.columns), reader, size=ctx.tuning.chunk_bytes)
        except _STRUCTURE_ERRORS:
            give_up.set()
            dbapi.rollback()
            return None
        if reader.failure:
            raise reader.failure
        loaded = cur.rowcount
        skips = drain_skips(dbapi, cur)
        if give_up.is_set() or reader.left or loaded + len(skips) != reader.lines:
            dbapi.rollback()
            give_up.set()
            return None
        if segment.lines is not None and reader.lines != segment.lines:
            raise FileChanged(
                f"lines {segment.first_line}-{segment.end_line} changed while loading "
                "(their line count differs from a moment ago); nothing was committed"
            )
        with ctx.step("stage-fast.finish"):
            for statement in q.finish_leaf(names, table, sequence):
                cur.execute(statement)
        with ctx.step("stage-fast.commit"):
            dbapi.commit()
    skipped = {segment.first_line + s.copy_line - 1: s.reason for s in skips}
    return StagedSegment(segment, table, loaded, skipped, reader.hasher.digests)
