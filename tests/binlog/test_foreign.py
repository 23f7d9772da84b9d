"""Swapping servers on one binlog directory: the formats differ, and each side must say so.

A directory written by the real beanstalkd is refused by ``beanrouter server`` with a message
saying what to do; beanstalkd, given ours, prints ``unknown version``, starts without the jobs and
later deletes the files in its log clean-up (its behaviour, not ours: docs/server.md warns about
it, and this checks the warning is true).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conformance.harness import beanstalkd_binary
from tests.ports import free_port

from .client import REPO_ROOT, ServerProcess, put

pytestmark = pytest.mark.reference


def beanstalkd_with_jobs(directory: Path, jobs: int) -> None:
    port = free_port()
    argv = [beanstalkd_binary(), "-b", str(directory), "-l", "127.0.0.1", "-p", str(port)]
    with subprocess.Popen(argv, stderr=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "beanstalkd did not listen"
                    time.sleep(0.02)
            with sock:
                sock.sendall(b"".join(put(b"job") for _ in range(jobs)))
                got = b""
                while got.count(b"\r\n") < jobs:
                    got += sock.recv(65536)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_beanrouter_refuses_a_beanstalkd_directory_and_says_what_to_do(tmp_path: Path) -> None:
    beanstalkd_with_jobs(tmp_path, 3)
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


def test_beanstalkd_given_our_directory_starts_empty_as_docs_warn(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    c = srv.client()
    c.send(put(b"job"))
    assert c.reply()[0].startswith(b"INSERTED")
    c.close()
    srv.kill()
    assert list(tmp_path.glob("binlog.*"))
    port = free_port()
    argv = [beanstalkd_binary(), "-b", str(tmp_path), "-l", "127.0.0.1", "-p", str(port)]
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "beanstalkd did not listen"
                    time.sleep(0.02)
            with sock:
                sock.sendall(b"stats-tube default\r\n")
                time.sleep(0.2)
                tube = sock.recv(65536)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
    # what docs/server.md quotes: "unknown version: 1229083202" is our magic's "BRBI"
    assert "binlog.1: unknown version: 1229083202" in err
    assert "You may be missing data" in err
    assert b"\ncurrent-jobs-ready: 0\n" in tube  # our job is not there
