"""Session-wide test set-up: the reference server, and the markers every layer uses.

The real beanstalkd (``$BEANSTALKD_BIN`` or /usr/bin/beanstalkd) is the reference the conformance,
differential, peer and flag tests compare with; ``make test`` installs it when it can
(tests/reference_server.py). When it is still missing, those tests are skipped with one reason
from one place, so pytest's summary reports them in one line, and everything else runs. Under
``CI`` nothing is skipped: a missing reference fails the tests that need it.

A test needs the reference when it is marked ``reference``, is parametrized with the value
``"beanstalkd"`` (an implementation or backend), uses a fixture that starts or replays it
(``conformance``: transcripts are checked against beanstalkd's; ``bk``: a beanstalkd cluster), or
lives in a module whose tests replay beanstalkd's answers in their bodies (``REFERENCE_MODULES``).
"""

from __future__ import annotations

import os

import pytest

REFERENCE = "beanstalkd"
REFERENCE_FIXTURES = frozenset({"conformance", "bk"})
REFERENCE_MODULES = frozenset({"tests/conformance/test_restart.py"})


def reference_binary() -> str:
    return os.environ.get("BEANSTALKD_BIN", "/usr/bin/beanstalkd")


def reference_missing() -> bool:
    return not os.access(reference_binary(), os.X_OK)


def needs_reference(item: pytest.Item) -> bool:
    if item.get_closest_marker("reference") is not None:
        return True
    if item.nodeid.partition("::")[0] in REFERENCE_MODULES:
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and REFERENCE in callspec.params.values():
        return True
    return bool(REFERENCE_FIXTURES.intersection(getattr(item, "fixturenames", ())))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reference: compares with the real beanstalkd (skipped when it is missing)"
    )


_SKIPPED: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if os.environ.get("CI") or not needs_reference(item) or not reference_missing():
        return
    _SKIPPED.append(item.nodeid)
    pytest.skip(
        f"reference comparisons skipped: no real beanstalkd at {reference_binary()} "
        "(make test installs Debian's package when it runs as root or with passwordless sudo; "
        "or set BEANSTALKD_BIN; CI requires it)"
    )
