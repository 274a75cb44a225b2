"""Waiting for a Prefect server process the T4 test started as the chart runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flows.localserver import LOG_TAIL_CHARS
from flows.localserver import wait_healthy as _wait


def wait_healthy(api_url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until GET {api_url}/health answers 200; fails with the server's log if it dies or times out."""
    problem = _wait(api_url, lambda: proc.poll() is None, timeout)
    if problem:
        raise RuntimeError(f"prefect server {problem}:\n{log.read_text()[-LOG_TAIL_CHARS:]}")
