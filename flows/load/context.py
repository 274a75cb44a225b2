"""The per-file load context: everything the phases of one file's load share, in one place."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from flows.load.plan import Plan, Tuning
from flows.sql import FileNames, Names

# Called with the number of bytes just processed; negative when the file starts over.
Progress = Callable[[int], None]
# Called as (step, "before" | "after") around every named step of a load: the phases' hook for tests.
Checkpoint = Callable[[str, str], None]


class ProgressTotal:
    """Forwards progress from the segment threads, and can start over (a negative advance)
    when the careful path reads the file again."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.lock = threading.Lock()
        self.sent = 0

    def __call__(self, advance: int) -> None:
        with self.lock:
            self.sent += advance
            if self.progress:
                self.progress(advance)

    def rewind(self) -> None:
        with self.lock:
            if self.progress and self.sent:
                self.progress(-self.sent)
            self.sent = 0


@dataclass
class LoadContext:
    engine: sa.Engine
    names: Names
    path: Path
    source_file: str
    run_id: str
    plan: Plan
    tuning: Tuning
    progress: ProgressTotal
    checkpoint: Checkpoint | None = None
    started: float = 0.0  # time.perf_counter() when load_file began: the ledger's load_seconds
    load_id: int | None = None  # drawn from the ledger once the file's lock is held and it must load

    @property
    def objects(self) -> FileNames:
        """The names of this load's tables (partition, segments), from its load id."""
        if self.load_id is None:
            raise RuntimeError("a load's tables are named only once its load id is drawn")
        return FileNames(self.names, self.load_id)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.checkpoint:
            self.checkpoint(name, "before")
        yield
        if self.checkpoint:
            self.checkpoint(name, "after")
