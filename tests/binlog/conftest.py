"""The binlog's end-to-end tests: in-process servers and real processes killed with SIGKILL."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "crash: kills real server processes many times; bounded (well under a minute each), so it "
        "runs in CI too; deselect with -m 'not crash' for a quick local run",
    )
