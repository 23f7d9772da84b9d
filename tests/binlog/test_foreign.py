"""Swapping servers on one binlog directory, against the real beanstalkd: no side loses jobs.

beanstalkd takes every ``binlog.N`` in its directory for its own: a file it cannot read (our
format-1 files had that name) makes it print ``unknown version``, start without its jobs, and
delete the file at its next log clean-up. Our files are now ``beanrouter-binlog.N``, which
beanstalkd leaves alone, and a format-1 directory is converted at our next start. The other way
round, ``beanrouter server -b`` refuses beanstalkd's files with a message saying what to do,
and touches nothing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conformance.harness import beanstalkd_binary
from tests.ports import free_port

from .client import REPO_ROOT, Client, ServerProcess, put, to_format_1

pytestmark = pytest.mark.reference

BIG = b"x" * 1000
CHURN = b"".join(put(BIG) for _ in range(30))
"""Enough for beanstalkd with ``-s 10000`` to fill files, move on and clean up its log."""


def beanstalkd(directory: Path, script: bytes, replies: int) -> tuple[bytes, str]:
    """Run the real beanstalkd on ``directory`` (files of 10,000 bytes), send ``script``, read
    ``replies`` reply lines, stop it; its replies and its stderr."""
    port = free_port()
    argv = [beanstalkd_binary(), "-b", str(directory), "-s", "10000", "-l", "127.0.0.1"]
    with subprocess.Popen([*argv, "-p", str(port)], stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "beanstalkd did not listen"
                    time.sleep(0.02)
            got = b""
            with sock:
                sock.sendall(script)
                while got.count(b"\r\n") < replies:
                    chunk = sock.recv(65536)
                    assert chunk, got
                    got += chunk
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
    return got, err


def deletes(first: int, last: int) -> bytes:
    return b"".join(b"delete %d\r\n" % i for i in range(first, last + 1))


def our_jobs(directory: Path, n: int) -> dict[int, bytes]:
    """Start our server on ``directory``, put ``n`` jobs, delete every third, stop (kill -9)."""
    srv = ServerProcess(directory)
    c = srv.client()
    c.send(b"".join(put(b"ours %d" % i) for i in range(n)))
    jobs = {}
    for i in range(n):
        line, _ = c.reply()
        jobs[int(line.split()[1])] = b"ours %d" % i
    for job_id in list(jobs)[::3]:
        assert c.call(b"delete %d\r\n" % job_id) == (b"DELETED", None)
        del jobs[job_id]
    c.close()
    srv.kill()
    return jobs


def check_jobs(c: Client, jobs: dict[int, bytes]) -> None:
    """Every job of ``jobs`` is there, ready, and no other; ``c`` is closed after."""
    try:
        for job_id, body in jobs.items():
            got = c.call(b"peek %d\r\n" % job_id)
            assert got == (b"FOUND %d %d" % (job_id, len(body)), body)
        assert c.stat("current-jobs-ready") == len(jobs)
    finally:
        c.close()


def test_beanrouter_refuses_a_beanstalkd_directory_and_says_what_to_do(tmp_path: Path) -> None:
    beanstalkd(tmp_path, b"".join(put(b"job") for _ in range(3)), 3)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("binlog.*")}
    assert before
    done = subprocess.run(
        [sys.executable, "-m", "beanrouter", "server", "-b", str(tmp_path), "-p", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    assert "a beanstalkd binlog (its format 7), not a beanrouter one" in done.stderr
    assert "run beanstalkd on this directory" in done.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.glob("binlog.*")} == before  # untouched
    assert not list(tmp_path.glob("beanrouter-binlog.*"))


def test_beanstalkd_run_on_our_directory_leaves_our_jobs_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    jobs = our_jobs(data, 30)
    ours = {p.name: p.read_bytes() for p in data.glob("beanrouter-binlog.*")}
    assert ours
    # beanstalkd fills files, moves on and cleans up: it never looks at ours
    got, err = beanstalkd(data, CHURN + deletes(1, 30) + put(b"theirs"), 61)
    assert got.endswith(b"INSERTED 31\r\n"), got[-100:]
    assert "unknown version" not in err and "missing data" not in err
    assert {p.name: p.read_bytes() for p in data.glob("beanrouter-binlog.*")} == ours
    theirs = sorted(p.name for p in data.glob("binlog.*"))
    assert theirs
    # back to beanrouter: refused, saying what to do, nothing touched
    done = subprocess.run(
        [sys.executable, "-m", "beanrouter", "server", "-b", str(data), "-p", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    assert "a beanstalkd binlog (its format 7) next to beanrouter's own files" in done.stderr
    assert "move beanstalkd's binlog.N files elsewhere" in done.stderr
    assert {p.name: p.read_bytes() for p in data.glob("beanrouter-binlog.*")} == ours
    # done as it says: both servers have their jobs
    elsewhere = tmp_path / "beanstalkd"
    elsewhere.mkdir()
    for name in theirs:
        shutil.move(data / name, elsewhere / name)
    srv = ServerProcess(data)
    try:
        check_jobs(srv.client(), jobs)
    finally:
        assert srv.stop() == 0
    got, err = beanstalkd(elsewhere, b"peek 31\r\n", 1)
    assert got == b"FOUND 31 6\r\ntheirs\r\n", err


def test_a_format_1_directory_is_converted_then_safe_from_beanstalkd(tmp_path: Path) -> None:
    """Format-1 files are named ``binlog.N``: beanstalkd deletes them (the data loss this
    format change stops). Our next start converts them, and after that beanstalkd cannot."""
    victim, data = tmp_path / "victim", tmp_path / "data"
    victim.mkdir()
    data.mkdir()
    our_jobs(victim, 20)
    old = to_format_1(victim)
    jobs = our_jobs(data, 20)
    to_format_1(data)
    # what the first format risked: beanstalkd on it deletes our files
    _, err = beanstalkd(victim, CHURN + deletes(1, 30), 60)
    assert "binlog.1: unknown version: 1229083202" in err  # "BRBI", format 1's magic
    assert "You may be missing data" in err
    assert not any((victim / name).exists() for name in old), sorted(victim.iterdir())
    # the fix: our next start reads the format-1 files and converts them ...
    srv = ServerProcess(data)
    try:
        check_jobs(srv.client(), jobs)
    finally:
        assert srv.stop() == 0
    assert "format-1 binlog files" in srv.output() and "the old files are gone" in srv.output()
    assert not list(data.glob("binlog.*"))
    ours = {p.name: p.read_bytes() for p in data.glob("beanrouter-binlog.*")}
    # ... which beanstalkd then leaves alone
    _, err = beanstalkd(data, CHURN + deletes(1, 30), 60)
    assert "unknown version" not in err
    assert {p.name: p.read_bytes() for p in data.glob("beanrouter-binlog.*")} == ours
    for path in data.glob("binlog.*"):
        path.unlink()
    srv = ServerProcess(data)
    try:
        check_jobs(srv.client(), jobs)
    finally:
        assert srv.stop() == 0
