"""Phase "stage fast": each segment's raw bytes COPYed on its own connection and committed, not yet
attached; only when the byte-level check (flows.transform.fastcheck) passes every line. A producer
thread per segment reads, checks and hashes its bytes while COPY sends them (flows.load.feed)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg2

from flows import sql as q
from flows.errors import FileChanged
from flows.load.context import LoadContext
from flows.load.db import drain_skips, transaction
from flows.load.feed import SegmentFeed
from flows.load.plan import Segment

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
        with SegmentFeed(f, ctx.plan, segment, ctx.tuning.chunk_bytes, give_up, ctx.progress) as feed:
            try:
                with ctx.step("stage-fast.copy"):
                    cur.copy_expert(
                        q.copy_raw(names, table, ctx.plan.header.columns), feed, size=ctx.tuning.chunk_bytes
                    )
            except _STRUCTURE_ERRORS:
                give_up.set()
                dbapi.rollback()
                return None
        if feed.error:
            raise feed.error
        loaded = cur.rowcount
        skips = drain_skips(dbapi, cur)
        if not feed.complete or loaded + len(skips) != feed.lines:
            dbapi.rollback()
            give_up.set()
            return None
        if segment.lines is not None and feed.lines != segment.lines:
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
    return StagedSegment(segment, table, loaded, skipped, feed.hasher.digests)
