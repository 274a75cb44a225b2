"""Waiting for a Prefect server process we started (conftest's fixture and the T4 test)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def wait_healthy(api_url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until GET {api_url}/health answers 200; fails with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"prefect server not healthy after {timeout}s:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
