"""Process helpers for the supervisor tests: children of a pid and liveness, read from /proc."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FORWARDING = "tests.proxy.fakes:make_forwarding_backend"


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after its closing one.
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return sorted(found)


def wait_for(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def env(backend: str | None = FORWARDING) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), e.get("PYTHONPATH", "")) if p)
    if backend is not None:
        e["BEANROUTER_BACKEND"] = backend
    return e


class Proc:
    """A ``python -m beanrouter ARGS`` process, its stdout and stderr in a file (children
    inherit it, so a pipe could block or never end)."""

    def __init__(
        self,
        args: list[str],
        backend: str | None = FORWARDING,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beanrouter", *args],
            cwd=REPO_ROOT,
            env={**env(backend), **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        self.pid = self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def connect(self, port: int, timeout: float = 30.0) -> socket.socket:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}: {self.output()}")
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=30)
            except OSError:
                time.sleep(0.01)
        raise AssertionError(f"nothing listened on {port}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; returns the exit status (SIGKILL if it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        """Make sure it and its children are gone (test clean-up)."""
        kids = children(self.pid)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for kid in kids:
            with contextlib.suppress(OSError):
                os.kill(kid, 9)
        self.log.close()


def talk(sock: socket.socket, data: bytes, until: bytes = b"\r\n") -> bytes:
    sock.sendall(data)
    out = b""
    while not out.endswith(until):
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return out
