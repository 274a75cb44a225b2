"""Headless Chromium (Debian's, driven by Playwright) looking at the Prefect UI and pgAdmin as a person would.

Screenshots land in test-results/screenshots/ (git-ignored). Playwright's own browser download
cannot work on machines without internet, so the system Chromium is used (`apt-get install chromium`,
which .ci/run does); without it the browser tests skip locally and fail on CI.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import CI, REPO

SCREENSHOTS = REPO / "test-results" / "screenshots"
CHROMIUM = os.environ.get("ETL_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google and is refused, many times a second.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


def require_chromium() -> None:
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return
    message = f"no Chromium at {CHROMIUM}: apt-get install chromium (as .ci/run does)"
    if CI:
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


def open_flow_run(page, ui_url: str, flow_run_id: str, state: str) -> None:
    """The flow run's page, once its state badge reads `state` (the UI polls the API)."""
    page.goto(f"{ui_url}/runs/flow-run/{flow_run_id}", wait_until="networkidle")
    page.get_by_text(state, exact=True).first.wait_for()


def open_tab(page, name: str) -> None:
    page.get_by_text(name, exact=True).first.click()
    page.wait_for_load_state("networkidle")
