"""The spawn wrapper: flag parsing like beanstalkd's, and a hand-over that a suite cannot notice."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .spawn_wrapper import DEFAULT_ADDR, DEFAULT_PORT, NoListen, listen_address, listening

WRAPPER = Path(__file__).with_name("spawn_wrapper.py")
BEANSTALKD = os.environ.get("BEANSTALKD_BIN", "/usr/bin/beanstalkd")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], (DEFAULT_ADDR, DEFAULT_PORT)),
        (["-l", "127.0.0.1", "-p", "4444"], ("127.0.0.1", "4444")),
        (["-b", "/tmp/wal", "-l", "127.0.0.1", "-p", "5"], ("127.0.0.1", "5")),
        (["-p4444", "-lunix:/tmp/s"], ("unix:/tmp/s", "4444")),
        (["-Vl", "::1", "-F"], ("::1", DEFAULT_PORT)),
        (["-z", "10", "stray", "-p", "1"], (DEFAULT_ADDR, DEFAULT_PORT)),
        (["-p"], (DEFAULT_ADDR, DEFAULT_PORT)),
    ],
)
def test_listen_address(flags: list[str], expected: tuple[str, str]) -> None:
    assert listen_address(flags) == expected


@pytest.mark.parametrize("flags", [["-v"], ["-l", "127.0.0.1", "-h"], ["-Vv"]])
def test_listen_address_exit_flags(flags: list[str]) -> None:
    with pytest.raises(NoListen):
        listen_address(flags)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def beanstalkd() -> str:
    if not os.access(BEANSTALKD, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{BEANSTALKD} not found")
        pytest.skip(f"{BEANSTALKD} not found: apt-get install beanstalkd")
    return BEANSTALKD


def spawn(server: list[str], flags: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-I", "-S", str(WRAPPER), *server, "--", *flags]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def tcp_server(beanstalkd: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    # A server that takes 1 s to start: the socket must be accepting long before it does.
    slow = ["/bin/sh", "-c", 'sleep 1; exec "$0" "$@"', beanstalkd]
    proc = spawn(slow, ["-l", "127.0.0.1", "-p", str(port)])
    yield proc, port
    proc.kill()
    proc.wait()


def command(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    data = b""
    while not data.endswith(b"\r\n") or (data.startswith(b"OK ") and data.count(b"\r\n") < 2):
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection"
        data += chunk
    return data


def test_handover_is_invisible(tcp_server: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = tcp_server
    deadline = time.monotonic() + 0.5
    while not listening("127.0.0.1", port):
        assert time.monotonic() < deadline, "the wrapper did not listen within 0.5 s"
        time.sleep(0.005)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stats = command(sock, b"stats").decode()
        assert f"pid: {proc.pid}\n" in stats  # exec kept the pid
        assert "total-connections: 1\n" in stats  # the wrapper never connected
        os.kill(proc.pid, signal.SIGUSR1)  # signals reach the server
        time.sleep(0.1)
        assert "draining: true\n" in command(sock, b"stats").decode()
    proc.terminate()
    assert proc.wait(timeout=10) == -signal.SIGTERM


def test_unix_socket(beanstalkd: str, tmp_path: Path) -> None:
    path = tmp_path / "b.sock"
    proc = spawn([beanstalkd], ["-l", f"unix:{path}"])
    try:
        deadline = time.monotonic() + 5
        while not listening(f"unix:{path}"):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            assert command(sock, b"use x") == b"USING x\r\n"
    finally:
        proc.kill()
        proc.wait()


def test_bind_failure_leaves_the_error_to_the_server(beanstalkd: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn([beanstalkd], ["-l", "127.0.0.1", "-p", str(port)])
        assert proc.wait(timeout=10) != 0  # beanstalkd's own "bind(): Address already in use"


def test_usage_error() -> None:
    done = subprocess.run([sys.executable, str(WRAPPER), "beanstalkd"], capture_output=True)
    assert done.returncode == 2
    assert b"usage:" in done.stderr
