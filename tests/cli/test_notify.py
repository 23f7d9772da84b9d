"""systemd ``Type=notify``: ``beanrouter server`` and ``beanrouter cluster`` send ``READY=1`` (with
``MAINPID``) to ``$NOTIFY_SOCKET`` once they serve (the peer harness waits for it)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port

from .procs import REPO_ROOT, env


@pytest.mark.parametrize("command", [["server"], ["cluster", "--shards", "2"]])
def test_ready_is_sent_once_serving(tmp_path: Path, command: list[str]) -> None:
    path = str(tmp_path / "notify")
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        e = dict(env(None), NOTIFY_SOCKET=path)
        argv = [sys.executable, "-m", "beanrouter", *command, "-l", "127.0.0.1", "-p", str(port)]
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=e, stdin=subprocess.DEVNULL)
        try:
            message = sock.recv(4096).decode()
            fields = dict(line.split("=", 1) for line in message.split("\n") if line)
            assert fields["READY"] == "1" and fields["MAINPID"] == str(proc.pid)
            # Serving already: a command is answered at once.
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"list-tube-used\r\n")
                assert c.recv(100) == b"USING default\r\n"
        finally:
            proc.terminate()
            assert proc.wait(30) == 0
