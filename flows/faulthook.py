"""Fault injection for the chaos harness (`make chaos-local`) and the crash tests: off unless enabled.

Enabled only when the environment variable ETL_CHAOS_FAULT_HOOK_DIR names a folder; nothing in the
project sets it (the chaos harness's own chart values and the tests do). Then, while a file is being
COPYed, a thread watches that folder for a trigger file and acts on the first one it finds:

    oom         allocate memory until the kernel kills this process at its memory limit (a real
                OOM kill, mid-COPY, of the container that loads the file)
    kill        SIGKILL this process (the flow-run engine)
    kill-every  as `kill`, and the trigger stays: every attempt at the file dies
    hold        the load waits before its COPY for as long as the trigger exists (a run that stays
                Running, as on a slow source; tests crash the run waiting for it at a moment they choose)

`oom` and `kill` fire once: the first process to claim the trigger renames it to `<name>.fired`.
A trigger whose content is a file name acts only on the load of that file (empty: any file).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

ENV = "ETL_CHAOS_FAULT_HOOK_DIR"
TRIGGERS = ("oom", "kill", "kill-every")
HOLD = "hold"
COPY_STEPS = ("stage-fast.copy", "stage-careful.copy")
POLL_SECONDS = 0.2
_CHUNK = 32 << 20


def checkpoint(source_file: str) -> Callable[[str, str], None] | None:
    """The hook for one file's load, or None (no hook at all) when the fault hook is not enabled."""
    folder = os.environ.get(ENV)
    return _Watcher(Path(folder), source_file).checkpoint if folder else None


class _Watcher:
    def __init__(self, folder: Path, source_file: str):
        self.folder = folder
        self.source_file = source_file
        self.copying = 0
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def checkpoint(self, step: str, when: str) -> None:
        if step not in COPY_STEPS:
            return
        if when == "before":
            while self._aims_at_me(self.folder / HOLD):
                time.sleep(POLL_SECONDS)
        with self.lock:  # parallel segments each pass through their own COPY step
            self.copying += 1 if when == "before" else -1
            if self.copying > 0 and self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="chaos-fault-hook", daemon=True)
                self.thread.start()

    def _watch(self) -> None:
        while True:
            with self.lock:
                if self.copying <= 0:
                    self.thread = None
                    return
            for name in TRIGGERS:
                if self._claim(self.folder / name):
                    _act(name)
            time.sleep(POLL_SECONDS)

    def _aims_at_me(self, trigger: Path) -> bool:
        try:
            target = trigger.read_text().strip()
        except OSError:
            return False
        return not target or target == self.source_file

    def _claim(self, trigger: Path) -> bool:
        if not self._aims_at_me(trigger):
            return False
        if trigger.name == "kill-every":
            return True
        with contextlib.suppress(OSError):
            trigger.rename(trigger.with_name(trigger.name + ".fired"))
            return True
        return False  # another process claimed it first


def _act(name: str) -> None:
    print(f"chaos fault hook: {name}", flush=True)
    if name == "oom":
        hoard = []
        while True:  # touched pages count against the container's memory limit
            hoard.append(b"\x01" * _CHUNK)
    os.kill(os.getpid(), signal.SIGKILL)
