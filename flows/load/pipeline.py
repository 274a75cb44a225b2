"""load_file: one file into PostgreSQL, exactly once, in named phases.

    open          the file's name, header, identity (stat) and plan (blocks, segments)
    check-ledger  in one transaction holding the file's advisory lock: unchanged file = skipped
    stage fast    segments COPYed raw in parallel, each committed on its own connection, not attached
    stage careful when the fast path cannot take the file: records parsed in Python, in the transaction
    commit        the file's partition swapped in, its quarantine rows and ledger entry written, COMMIT

File-level problems (flows.errors.FileRejected, FileChanged) return status "failed" at once; database
errors raise, so the caller's retry policy applies (nothing is visible before the final COMMIT).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg2
import sqlalchemy as sa

from flows import sql as q
from flows.errors import FileChanged, FileRejected
from flows.load.careful import stage_careful
from flows.load.commit import Staged, commit
from flows.load.context import Checkpoint, LoadContext, Progress, ProgressTotal
from flows.load.db import drop_quietly, transaction
from flows.load.fast import FastStage, stage_fast
from flows.load.plan import FileStat, Tuning, file_checksum, plan_file
from flows.load.result import FileResult, Quarantined, summarise_quarantine
from flows.sql import Names
from flows.transform import MAX_HEADER_BYTES, Header, copy_skip_reason, file_name_problem, parse_header, raw_text


def load_file(
    engine: sa.Engine,
    names: Names,
    path: Path,
    *,
    source_file: str | None = None,
    run_id: str = "",
    progress: Progress | None = None,
    parallel: int = 2,
    tuning: Tuning | None = None,
    checkpoint: Checkpoint | None = None,
) -> FileResult:
    """Load one CSV file exactly once (flows/load/SPEC.md). `parallel` segments are COPYed at once;
    `tuning` (tests) overrides it and the sizes; `checkpoint` is called around every named step."""
    started = time.perf_counter()
    source_file = source_file or path.name
    result = FileResult(file=source_file, status="failed")
    try:
        ctx = _open(engine, names, path, source_file, run_id, progress, tuning or Tuning(parallel=parallel), checkpoint)
        ctx.started = started
        _load(ctx, result)
    except FileRejected as exc:
        result.status, result.error = "failed", str(exc)
    result.seconds = time.perf_counter() - started
    return result


def _open(
    engine: sa.Engine,
    names: Names,
    path: Path,
    source_file: str,
    run_id: str,
    progress: Progress | None,
    tuning: Tuning,
    checkpoint: Checkpoint | None,
) -> LoadContext:
    """Phase "open": everything about the file that does not need the database."""
    problem = file_name_problem(source_file)
    if problem:
        raise FileRejected(problem)
    if not path.is_file():
        raise FileRejected(f"file not found: {path}")
    try:
        stat = FileStat.of(path)
        with path.open("rb") as f:
            header = parse_header(f.readline(MAX_HEADER_BYTES + 1))
        plan = plan_file(path, header, stat, tuning.parallel, tuning.min_segment_bytes, tuning.block_bytes)
    except OSError as exc:
        raise FileRejected(f"cannot read {path}: {exc.strerror or exc}") from None
    return LoadContext(engine, names, path, source_file, run_id, plan, tuning, ProgressTotal(progress), checkpoint)


def _load(ctx: LoadContext, result: FileResult) -> None:
    try:
        with transaction(ctx.engine) as (conn, cur):
            entry = _check_ledger(ctx, cur)
            if entry and entry[1] == ctx.plan.size:  # only a file of the size last loaded can be unchanged
                result.checksum = file_checksum(ctx.path, ctx.plan, ctx.tuning.chunk_bytes)
                if entry[0] == result.checksum:
                    conn.rollback()
                    result.status, result.rows_skipped = "skipped", entry[2]
                    return
            cur.execute(q.next_load_id(ctx.names))
            ctx.load_id = cur.fetchone()[0]
            _drop_orphans(ctx, cur)
            staged = _stage(ctx, conn, cur)
            if result.checksum and result.checksum != staged.checksum:
                raise FileChanged(
                    "the file changed while loading (its bytes differ from a moment before); "
                    "nothing was committed, load it again once it is complete"
                )
            commit(ctx, conn, cur, staged, entry[3] if entry else None)
    except BaseException:
        if ctx.load_id is not None:
            drop_quietly(
                ctx.engine,
                ctx.names,
                [ctx.objects.segment(s.index) for s in ctx.plan.segments] + [ctx.objects.segment("c")],
            )
        raise
    result.status, result.load_path, result.checksum = "loaded", staged.load_path, staged.checksum
    result.rows_read, result.rows_loaded, result.rows_quarantined = staged.read, staged.loaded, len(staged.quarantined)
    result.quarantine_by_reason, result.quarantine_examples = summarise_quarantine(staged.quarantined)


def _check_ledger(ctx: LoadContext, cur: Any) -> tuple | None:
    """Phase "check ledger": the file's lock for the whole transaction, and what the ledger holds."""
    with ctx.step("check-ledger"):
        cur.execute(*q.advisory_xact_lock(ctx.names.lock_key("file", ctx.source_file)))
        cur.execute(q.ledger_entry(ctx.names), (ctx.source_file,))
        return cur.fetchone()


def _drop_orphans(ctx: LoadContext, cur: Any) -> None:
    """Segment tables a crashed load of this file committed but never attached. (Loads of this same
    file wait for its lock, so none of them is running now.)"""
    with ctx.step("drop-orphans"):
        cur.execute(q.unattached_segments(ctx.names), (ctx.names.segment_prefix,))
        for (table,) in cur.fetchall():
            _drop_if_orphan_of_this_file(ctx, cur, table)


def _drop_if_orphan_of_this_file(ctx: LoadContext, cur: Any, table: str) -> None:
    """Locked without waiting (a table that something holds, a running load or a pg_dump, is left for
    later), then checked under the lock: unattached, and its own CHECK constraint names this file.
    Another file's table is let go at once: its lock is released with the savepoint."""
    cur.execute(q.savepoint("orphan"))
    try:
        cur.execute(q.lock_table_nowait(ctx.names, table))
        cur.execute(q.orphan_of_file(ctx.names), q.own_file_check(ctx.names, table, ctx.source_file))
        if cur.fetchone() is None:
            cur.execute(q.rollback_to_savepoint("orphan"))
            return
        cur.execute(q.drop_table(ctx.names, table))
        cur.execute(q.release_savepoint("orphan"))
    except (psycopg2.errors.LockNotAvailable, psycopg2.errors.UndefinedTable):
        cur.execute(q.rollback_to_savepoint("orphan"))  # in use, or gone meanwhile


def _stage(ctx: LoadContext, conn: Any, cur: Any) -> Staged:
    """The fast path when the file allows it, else (or when it gives up) the careful path."""
    if ctx.tuning.path != "careful" and ctx.plan.header.canonical:
        fast = stage_fast(ctx)
        if fast.complete:
            return _from_fast(ctx, fast)
        for table in fast.tables:  # committed segments: the careful path reloads the whole file
            cur.execute(q.drop_table(ctx.names, table))
        ctx.progress.rewind()
    careful = stage_careful(ctx, conn, cur)
    return Staged(
        "careful",
        [(careful.table, 2, None)],
        careful.read,
        careful.loaded,
        careful.quarantined,
        ctx.plan.checksum(careful.digests),
    )


def _from_fast(ctx: LoadContext, fast: FastStage) -> Staged:
    skipped = {line: reason for s in fast.staged for line, reason in s.skipped.items()}
    quarantined = _read_lines(ctx.path, ctx.plan.header, skipped)
    loaded = sum(s.loaded for s in fast.staged)
    leaves = [(s.table, s.segment.first_line, s.segment.end_line) for s in fast.staged]
    digests = [d for s in fast.staged for d in s.digests]
    return Staged("fast", leaves, loaded + len(quarantined), loaded, quarantined, ctx.plan.checksum(digests))


def _read_lines(path: Path, header: Header, reasons: dict[int, str]) -> list[Quarantined]:
    """The raw text of the lines COPY refused (each is one line: the fast path takes no quotes), with
    the careful path's reasons."""
    if not reasons:
        return []
    found = []
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if number in reasons:
                raw = raw_text([line])
                found.append(Quarantined(number, raw, copy_skip_reason(raw, header, reasons[number])))
                if len(found) == len(reasons):
                    break
    return found
