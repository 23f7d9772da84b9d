"""The console in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Playwright is pointed at the system browser (``$CHROMIUM_BIN``, else ``chromium`` on the PATH,
else /usr/bin/chromium); nothing is downloaded. Without a browser or Playwright the tests skip
with the reason, except under ``CI=true`` where they must run (``.ci/run`` installs both).
``BEANROUTER_CONSOLE_SHOTS=DIR`` saves screenshots there (docs/console-*.png come from it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.procs import Proc

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


def chromium() -> str | None:
    for candidate in (
        os.environ.get("CHROMIUM_BIN"),
        shutil.which("chromium"),
        "/usr/bin/chromium",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI the browser tests must run (see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser per test module, closed after it: Playwright's synchronous API runs an event
    loop in this thread while it is open, and later tests start their own (``asyncio.run``)."""
    if sync_playwright is None:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    path = chromium()
    if path is None:
        _unavailable("no Chromium: apt-get install chromium (or set CHROMIUM_BIN)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.close()


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_http(proc: Proc, port: int, timeout: float = 30.0) -> str:
    """The base URL of ``proc``'s HTTP port, once ``/healthz`` answers."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"exited with {proc.proc.returncode}: {proc.output()}")
        try:
            http_json(base + "/healthz", 1.0)
            return base
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"no HTTP on {port}: {proc.output()}")


def screenshot(page: Page, name: str) -> None:
    target = os.environ.get("BEANROUTER_CONSOLE_SHOTS")
    if target:
        page.screenshot(path=str(Path(target) / f"console-{name}.png"), full_page=True)
