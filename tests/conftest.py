"""Session-wide test set-up: the markers every layer uses."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reference: compares with the real beanstalkd (needs /usr/bin/beanstalkd)"
    )
