"""Other clients' test suites, run against the real beanstalkd, beanrouter's server and cluster.

Each pinned suite (``fetch_peers.SUITES``, fetched into ``.peers/`` by ``make peers``) runs in a
subprocess pytest with ``BEANSTALKD_PATH`` set; the JUnit report must show exactly the suite's
expected number of passes and nothing else. The real beanstalkd is the oracle and runs as the
suites' own CI runs it, as ``BEANSTALKD_PATH`` itself, and so do beanrouter's server (its
``beanrouter-server`` console script) and ``beanrouter-cluster``, three bundled shards behind the
proxy with its default flags (implementation ``cluster``). A Python server answers its first
command later than the suites' start-up sleeps allow on a loaded 2-core machine (greenstalk
connects 0.1 s after the spawn and times its first commands from there with 50 ms of slack; the
cluster also waits for three more Python processes). So for our implementations the plugin
``shim/peer_ready.py`` makes the suites' ``Popen`` of ``$BEANSTALKD_PATH`` wait for the server's
systemd-style ``READY=1`` (``$NOTIFY_SOCKET``; no connection, so no counter changes); the suites
are otherwise run as written. So a failure on beanrouter's side only is beanrouter's. The time to
the first reply is measured by benchmarks/first_reply.py (docs/benchmarks.md), not here.

Skips and expected failures, and nothing else:
- a suite pinned to a git commit is skipped where neither a local clone has it nor its public
  repository can be cloned (CI machines reach only PyPI); ``BEANROUTER_REQUIRE_PEERS=1`` turns
  that into a failure. A PyPI suite that is missing fails.
- the real beanstalkd missing is a skip for a developer and a failure under ``CI``.
- suites that start the server with ``-b`` xfail on beanrouter's server only while
  ``beanrouter server -b`` exits saying "not yet" (checked on every run).
- greenstalk's suite listens on the fixed 127.0.0.1:4444 and /tmp/greenstalk-test.sock: two runs
  of it must not overlap.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.ports import free_port

from .fetch_peers import SUITES, PeerSuite, is_fetched, suite_root, unavailable_reason

SUITE_TIMEOUT = 600.0  # seconds, for a whole suite; greenstalk's takes about 11 s
TEST_TIMEOUT = 10  # seconds, for one test of a suite (pytest-timeout; the slowest takes 3 s)
PROBE_TIMEOUT = 3.0  # seconds a server refusing -b has to exit in
IMPLEMENTATIONS = ("beanstalkd", "beanrouter", "cluster")
SCRIPTS = {"beanrouter": "beanrouter-server", "cluster": "beanrouter-cluster"}
KNOWN_FAILURES: dict[tuple[str, str], dict[str, str]] = {}
START_TIMED: dict[str, frozenset[str]] = {
    "greenstalk-2.1.1": frozenset(
        f"tests.test_greenstalk::{name}"
        for name in ("test_delays", "test_ttr", "test_reserve_raises_on_timeout", "test_pause_tube")
    ),
}
"""Tests whose timed block (``assert_seconds``: the duration plus at most 50 ms) starts with the
suite's first command, 0.1 s after it spawned the server: a Python server's first reply comes
later than that on a busy machine (docs/compatibility.md has the numbers), so for our
implementations these may fail on their timing alone. They are reported, never hidden: any other
failure, or one of these failing for another reason, fails the test (docs/compatibility.md)."""
"""Tests that fail through an implementation for a reason given here: exactly these must fail
(each once) and every other test pass, so a fix shows up as a failure until it is removed."""
WAIT_READY = frozenset({"beanrouter", "cluster"})  # spawns wait for READY=1 (see above)
SHIM_DIR = Path(__file__).resolve().parent / "shim"


def server_command(impl: str) -> list[str]:
    """The command that starts ``impl`` without listen flags."""
    if impl == "beanstalkd":
        return [os.environ.get("BEANSTALKD_BIN", "/usr/bin/beanstalkd")]
    script = Path(sys.executable).with_name(SCRIPTS[impl])
    if not script.exists():
        raise AssertionError(f"{script} missing: install the project (make venv)")
    return [str(script)]


@dataclass(frozen=True)
class Outcome:
    """Counts from a JUnit XML report."""

    passed: int
    failed: int
    errors: int
    skipped: int
    problems: tuple[str, ...]  # ids of the tests that failed or errored


def read_junit(path: Path) -> Outcome:
    """Sum the ``testsuite`` counts in the report at ``path``."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = failed = errors = skipped = 0
    for s in suites:
        total += int(s.get("tests", "0"))
        failed += int(s.get("failures", "0"))
        errors += int(s.get("errors", "0"))
        skipped += int(s.get("skipped", "0"))
    problems = tuple(
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    )
    return Outcome(total - failed - errors - skipped, failed, errors, skipped, problems)


def binlog_refusal(server: list[str]) -> str | None:
    """The server's message if it refuses ``-b DIR`` as "not yet" supported, else ``None``."""
    with tempfile.TemporaryDirectory() as binlog:
        cmd = [*server, "-b", binlog, "-l", "127.0.0.1", "-p", str(free_port())]
        with subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as proc:
            try:
                proc.wait(timeout=PROBE_TIMEOUT)
            except subprocess.TimeoutExpired:  # it runs: -b is supported
                proc.terminate()
                proc.wait()
                return None
            assert proc.stdout is not None
            output = proc.stdout.read().decode(errors="replace").strip()
    return output if proc.returncode != 0 and "not yet" in output.lower() else None


def run_suite(
    suite: PeerSuite, beanstalkd_path: Path, tmp: Path, wait_ready: bool = False
) -> tuple[Outcome, str]:
    """Run ``suite`` with ``beanstalkd_path`` as its server; return its outcome and output.
    ``wait_ready``: load ``shim/peer_ready.py``, so the suite's spawns wait for ``READY=1``."""
    root = suite_root(suite)
    ini = tmp / "pytest.ini"  # keeps beanrouter's own pytest configuration out
    ini.write_text("[pytest]\n")
    report = tmp / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["BEANSTALKD_PATH"] = str(beanstalkd_path)
    paths = [str(root / "site"), str(root)] + ([str(SHIM_DIR)] if wait_ready else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "--tb=short", "-rfE", "-p", "no:cacheprovider"]
    cmd += ["-c", str(ini), f"--timeout={TEST_TIMEOUT}", "--timeout-method=signal"]
    cmd += ["--rootdir", str(root), f"--junitxml={report}", *suite.test_paths]
    if wait_ready:
        cmd += ["-p", "peer_ready"]
    if suite.runner is not None:
        cmd.append(str(Path(__file__).resolve().parent / suite.runner))
    try:
        done = subprocess.run(
            cmd,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SUITE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"{suite.name} did not finish in {SUITE_TIMEOUT:.0f} s\n{tail(out or '')}")
    output = done.stdout + done.stderr
    if not report.exists():
        pytest.fail(
            f"{suite.name}: pytest exited {done.returncode} without a report\n{tail(output)}"
        )
    return read_junit(report), output


def tail(text: str, lines: int = 60) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module", autouse=True)
def _compiled_package() -> None:
    """Byte-compile beanrouter once, as an installation does: under ``PYTHONDONTWRITEBYTECODE``
    (set for the suites, and on some machines everywhere) an editable checkout has no ``.pyc``,
    and every spawned server or cluster process would compile the whole package again."""
    import compileall

    import beanrouter

    compileall.compile_dir(Path(beanrouter.__file__).parent, quiet=1)


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_peer_suite(impl: str, suite: PeerSuite, tmp_path: Path) -> None:
    """Every test of the pinned suite passes against ``impl``, and no test is skipped."""
    if not is_fetched(suite):
        why = unavailable_reason(suite) or "not fetched yet"
        message = f"{suite.name} is not in {suite_root(suite).parent} ({why}); run `make peers`"
        if suite.required or os.environ.get("BEANROUTER_REQUIRE_PEERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    server = server_command(impl)
    if impl == "beanstalkd" and not os.access(server[0], os.X_OK):
        message = f"{server[0]} not found: apt-get install beanstalkd, or set BEANSTALKD_BIN"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if impl != "beanstalkd" and suite.uses_binlog:
        refusal = binlog_refusal(server)
        if refusal is not None:
            pytest.xfail(f"{suite.name} starts the server with -b: {refusal.splitlines()[-1]}")

    wait_ready = impl in WAIT_READY
    outcome, output = run_suite(suite, Path(server[0]), tmp_path, wait_ready)

    known = KNOWN_FAILURES.get((impl, suite.name), {})
    expected = Outcome(suite.expected_passed - len(known), len(known), 0, 0, tuple(sorted(known)))
    outcome = replace(outcome, problems=tuple(sorted(outcome.problems)))
    if outcome != expected:
        # greenstalk's timing tests allow 50 ms over their 0.1 s spawn wait, which a busy 2-core
        # CI machine can eat: one rerun, reported; a real failure fails both runs.
        first = outcome
        outcome, output = run_suite(suite, Path(server[0]), tmp_path, wait_ready)
        outcome = replace(outcome, problems=tuple(sorted(outcome.problems)))
        if outcome == expected:
            warnings.warn(
                f"{suite.name} against {impl} passed on a rerun; first run: {first}", stacklevel=1
            )
    timed = START_TIMED.get(suite.name, frozenset()) if impl != "beanstalkd" else frozenset()
    late = tuple(name for name in outcome.problems if name in timed and name not in known)
    if outcome != expected and late and _only_late(outcome, expected, late, output):
        warnings.warn(
            f"{suite.name} against {impl}: timed tests late by the server's start-up: {late}",
            stacklevel=1,
        )
        return
    if outcome != expected:
        counts = (
            f"{outcome.passed} passed, {outcome.failed} failed, {outcome.errors} errors, "
            f"{outcome.skipped} skipped; expected {suite.expected_passed} passed and nothing else"
        )
        if known:
            counts += ", but for the known failures: " + ", ".join(
                f"{name} ({why})" for name, why in sorted(known.items())
            )
        failing = "".join(f"\n  {name}" for name in outcome.problems)
        pytest.fail(
            f"{suite.name} against {impl}: {counts}{failing}\n--- its output ---\n{tail(output)}",
            pytrace=False,
        )


def _only_late(outcome: Outcome, expected: Outcome, late: tuple[str, ...], output: str) -> bool:
    """True when ``outcome`` is ``expected`` but for ``late`` tests that failed on their timing
    assertion (``duration <= timedelta(...)``) and nothing else."""
    others = tuple(name for name in outcome.problems if name not in late)
    if others != expected.problems or outcome.errors or outcome.skipped:
        return False
    if outcome.passed + len(late) != expected.passed:
        return False
    timing_failures = output.count("assert duration <= timedelta(")
    return timing_failures >= len(late)
