"""``make test`` without the real beanstalkd: the reference comparisons skip in one summary line and
everything else runs; under ``CI`` they fail instead (tests/conftest.py, tests/reference_server.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = ["tests/unit/test_server_options.py", "tests/server/test_connections.py", "tests/cli"]


def pytest_run(ci: bool, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BEANSTALKD_BIN="/nonexistent/beanstalkd")
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-ra", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def test_without_beanstalkd_reference_tests_skip_in_one_line() -> None:
    done = pytest_run(False, *SAMPLE, "--deselect", "tests/cli/test_reference_setup.py")
    assert done.returncode == 0, done.stdout[-3000:]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1, skipped
    assert (
        "reference comparisons skipped: no real beanstalkd at /nonexistent/beanstalkd"
        in (skipped[0])
    )
    count = re.search(r"(\d+) skipped", done.stdout)
    passed = re.search(r"(\d+) passed", done.stdout)
    assert count and int(count.group(1)) > 20  # the flag comparisons and beanstalkd's params
    assert passed and int(passed.group(1)) > 20  # options, our server's params, the CLI


def test_under_ci_a_missing_beanstalkd_fails() -> None:
    done = pytest_run(True, "tests/server/test_connections.py", "-k", "beanstalkd and backlog")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "real beanstalkd not found at /nonexistent/beanstalkd" in done.stdout


def test_setup_script_never_installs_over_a_chosen_binary() -> None:
    env = dict(os.environ, BEANSTALKD_BIN="/nonexistent/beanstalkd")
    done = subprocess.run(
        [sys.executable, "tests/reference_server.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "")
