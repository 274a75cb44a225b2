"""Shared by the fault and bad-input tests: a trap on the load's named phases, an audit of what the
loader left in the database, and the child process that loads files and gets SIGKILLed.

The trap uses the hook the phases expose (load_file's and ensure_schema's `checkpoint`), so kill
points are named by phase ("commit.attach", "stage-fast.copy", ...), not by SQL text.

    python tests/fault_tools.py '{"url": ..., "files": [...],
                                  "trap": {"file": 2, "step": "commit.attach", "when": "before"}}'
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from flows.sql import Names

NAMES = Names("public", "ecommerce_events")


@dataclass
class Trap:
    """Calls `action` once, `when` ("before" or "after") the named step of the load of file number
    `file` (1-based, in load order; 0 is ensure_schema)."""

    step: str
    action: Callable[[], None]
    file: int = 1
    when: str = "before"
    fired: bool = False

    def checkpoint(self, file: int) -> Callable[[str, str], None]:
        def hook(step: str, when: str) -> None:
            if not self.fired and (file, step, when) == (self.file, self.step, self.when):
                self.fired = True
                self.action()
        return hook


def lock_waiters(engine: sa.Engine) -> int:
    """Backends of the engine's database that wait for a lock."""
    with engine.connect() as conn:
        return conn.execute(sa.text("select count(*) from pg_stat_activity where datname = current_database()"
                                    " and wait_event_type = 'Lock'")).scalar_one()


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class CutIn:
    """A checkpoint for one load that makes another cut in: at `step`/`when` (once, whichever of the
    load's threads gets there first) it starts `second` in a thread and holds the first load until the
    second has finished or waits for a lock (the first's, presumably). `join()` returns the second's
    result; if the step never came, the second runs then, after the first."""

    def __init__(self, engine: sa.Engine, step: str, when: str, second: Callable[[], object]):
        self.engine, self.step, self.when = engine, step, when
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(second,), daemon=True)
        self.fired = threading.Event()
        self.lock = threading.Lock()

    def _run(self, second: Callable[[], object]) -> None:
        try:
            self.result = second()
        except BaseException as exc:  # raised again by join()
            self.error = exc

    def __call__(self, step: str, when: str) -> None:
        if (step, when) != (self.step, self.when):
            return
        with self.lock:
            if self.fired.is_set():
                return
            self.fired.set()
        self.thread.start()
        wait_for(lambda: not self.thread.is_alive() or lock_waiters(self.engine) > 0)

    def join(self) -> object:
        with self.lock:
            started = self.fired.is_set()
            self.fired.set()
        if not started:
            self.thread.start()
        self.thread.join(120)
        if self.thread.is_alive():
            raise TimeoutError("the second load did not finish in 120 s")
        if self.error:
            raise self.error
        return self.result


def sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# --- what the loader left behind ----------------------------------------------------------------
@dataclass
class Audit:
    ledger: dict[str, tuple]  # file -> (checksum, rows_read, rows_loaded, rows_quarantined)
    loaded: dict[str, int]  # file -> rows in its partition
    quarantine: dict[str, dict[int, str]]  # file -> {line: reason}
    duplicated: int  # (source_file, source_line) seen more than once, loaded or quarantined
    problems: list[str] = field(default_factory=list)  # broken invariants of committed state
    leftovers: list[str] = field(default_factory=list)  # staging debris: allowed after a crash, not after the rerun

    def counts(self, file: str) -> tuple[int, int, int]:
        """(read, loaded, quarantined) as the database holds them."""
        loaded, quarantined = self.loaded.get(file, 0), len(self.quarantine.get(file, {}))
        return loaded + quarantined, loaded, quarantined


def audit(url: str, names: Names = NAMES) -> Audit:
    """Every invariant of the ledger, partitions, quarantine and staging objects, as problems."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            def rows(query, **params):
                return conn.execute(sa.text(query), params).all()

            prefix = names.table
            present = [t for t in ("", "_quarantine", "_ledger")
                       if rows("select to_regclass(:n)", n=f'"{names.schema}"."{prefix}{t}"')[0][0]]
            problems = []
            if len(present) not in (0, 3):
                problems.append(f"half-created schema: only {present}")
            # anything else named <table>_... or <table>$... that is not part of the events table's partition tree
            leftovers = [f"{'sequence' if kind == 'S' else 'table'} {name}" for name, kind in rows(
                "select c.relname, c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = :s and (starts_with(c.relname, :p) or starts_with(c.relname, :internal))"
                " and c.relkind in ('r', 'p', 'S')"
                " and c.relname <> all(:own) and c.oid not in"  # nor the ledger's identity sequence
                " (select objid from pg_depend where deptype = 'i' and refobjid = to_regclass(:ledger))"
                " and (to_regclass(:events) is null or c.oid not in"
                " (select relid from pg_partition_tree(to_regclass(:events))))",
                s=names.schema, p=prefix + "_", internal=prefix + "$", own=[prefix + "_quarantine", prefix + "_ledger"],
                events=f'"{names.schema}"."{prefix}"', ledger=f'"{names.schema}"."{prefix}_ledger"')]
            if len(present) != 3:
                return Audit({}, {}, {}, 0, problems, leftovers)
            t = f'"{names.schema}"."{prefix}'  # completed with a suffix and a closing quote below
            ledger = {r[0]: tuple(r[1:]) for r in rows(
                f'select source_file, checksum, rows_read, rows_loaded, rows_quarantined, partition_name from {t}_ledger"')}
            partitions = dict(rows(
                "select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                f" where i.inhparent = '{t}\"'::regclass"))
            loaded = dict(rows(f'select source_file, count(*) from {t}" group by 1'))
            quarantine: dict[str, dict[int, str]] = {}
            for file, line, reason in rows(f'select source_file, source_line, reason from {t}_quarantine"'):
                quarantine.setdefault(file, {})[line] = reason
            duplicated = rows(
                f'select count(*) - count(distinct (source_file, source_line)) from'
                f' (select source_file, source_line from {t}" union all select source_file, source_line from {t}_quarantine") x')[0][0]
    finally:
        engine.dispose()
    result = Audit({f: v[:4] for f, v in ledger.items()}, loaded, quarantine, duplicated, problems, leftovers)
    for file, (_checksum, read, n_loaded, n_quarantined, partition) in ledger.items():
        if partition not in partitions:
            problems.append(f"ledger entry {file} names {partition}, which is not an attached partition")
        if (read, n_loaded, n_quarantined) != result.counts(file):
            problems.append(f"ledger {file} says read/loaded/quarantined {(read, n_loaded, n_quarantined)}, "
                            f"the tables hold {result.counts(file)}")
    attached = {v[4] for v in ledger.values()}
    problems += [f"partition {p} has no ledger entry" for p in partitions if p not in attached]
    problems += [f"quarantine rows of {f}, which has no ledger entry" for f in quarantine if f not in ledger]
    return result


# --- the loading process that gets killed -------------------------------------------------------
def child_main(spec: dict) -> None:
    """ensure_schema + load_file per file, like the flow; SIGKILL at the trap, a byte offset of a
    file, or after a file. Prints one JSON line per finished file."""
    from flows.load import ensure_schema, load_file

    trap = Trap(action=sigkill, **spec["trap"]) if spec.get("trap") else None
    engine = sa.create_engine(spec["url"])
    ensure_schema(engine, NAMES, checkpoint=trap.checkpoint(0) if trap else None)
    for number, path in enumerate(map(Path, spec["files"]), start=1):
        progress = None
        if spec.get("byte") and spec["byte"][0] == number:
            done = 0

            def progress(advance, limit=spec["byte"][1]):
                nonlocal done
                done += advance
                if done >= limit:
                    sigkill()

        result = load_file(engine, NAMES, path, progress=progress, checkpoint=trap.checkpoint(number) if trap else None)
        print(json.dumps({"file": result.file, "status": result.status}), flush=True)
        if spec.get("after_file") == number:
            sigkill()


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]))
