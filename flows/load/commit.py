"""Phase "commit": in the transaction that holds the file's lock, the file's partition is assembled
from its segment tables and swapped in for the old one, its quarantine rows replaced and the ledger
written; then COMMIT. Nothing of the load is visible before it."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from typing import Any

from flows import sql as q
from flows.errors import FileChanged
from flows.load.context import LoadContext
from flows.load.plan import FileStat, file_checksum
from flows.load.result import LoadPath, Quarantined


@dataclass
class Staged:
    """What the staging phases produced, ready to commit."""

    load_path: LoadPath
    leaves: list[tuple[str, int, int | None]]  # (segment table, first line, end line)
    read: int
    loaded: int
    quarantined: list[Quarantined]
    checksum: str


def commit(ctx: LoadContext, conn: Any, cur: Any, staged: Staged, old_partition: str | None) -> None:
    if staged.read != staged.loaded + len(staged.quarantined):  # never commit a load that lost rows
        raise RuntimeError(
            f"{ctx.source_file}: read {staged.read} rows but loaded {staged.loaded} "
            f"and quarantined {len(staged.quarantined)}"
        )
    _check_unchanged(ctx, staged.checksum)
    names, partition = ctx.names, ctx.objects.partition
    with ctx.step("commit.assemble"):
        for statement in q.assemble_partition(names, partition, staged.leaves):
            cur.execute(statement)
    if old_partition:
        cur.execute(q.attached_partition(names), (old_partition,))
        if cur.fetchone():
            with ctx.step("commit.drop-old"):
                cur.execute(q.drop_table(names, old_partition))
    with ctx.step("commit.attach"):
        cur.execute(q.attach_file_partition(names, partition, ctx.source_file))
    with ctx.step("commit.quarantine"):
        _write_quarantine(cur, ctx, staged.quarantined)
    with ctx.step("commit.ledger"):
        cur.execute(
            q.upsert_ledger(names),
            (
                ctx.source_file,
                staged.checksum,
                ctx.plan.size,
                partition,
                staged.read,
                staged.loaded,
                len(staged.quarantined),
                ctx.run_id,
                time.perf_counter() - ctx.started,
                ctx.load_id,
            ),
        )
    with ctx.step("commit.transaction"):
        conn.commit()


def _check_unchanged(ctx: LoadContext, loaded_checksum: str) -> None:
    """The file is as it was when planned: same size and times, and for a file written moments before
    the load (whose times cannot tell), the same bytes as those loaded."""
    now = FileStat.of(ctx.path)
    if now != ctx.plan.stat:
        what = "size" if now.size != ctx.plan.stat.size else "modification time"
        raise FileChanged(
            f"the file changed while loading (its {what} changed; {ctx.plan.stat.size} -> {now.size} "
            "bytes); nothing was committed, load it again once it is complete"
        )
    if ctx.plan.stat.recently_changed and file_checksum(ctx.path, ctx.plan, ctx.tuning.chunk_bytes) != loaded_checksum:
        raise FileChanged(
            "the file changed while loading (its bytes differ from those loaded); nothing was "
            "committed, load it again once it is complete"
        )


def _write_quarantine(cur: Any, ctx: LoadContext, rows: list[Quarantined]) -> None:
    cur.execute(q.delete_quarantine(ctx.names), (ctx.source_file,))
    if not rows:
        return
    buf = io.StringIO()
    # CRLF, so that the writer quotes a value holding a lone CR (a raw line, a file name) as well as LF:
    # COPY would read an unquoted CR as the end of the row
    writer = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        writer.writerow([ctx.source_file, row.line, row.raw, row.reason, ctx.run_id])
    buf.seek(0)
    cur.copy_expert(q.copy_quarantine(ctx.names), buf)
