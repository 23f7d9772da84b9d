"""Shard processes for the router tests: real beanstalkd or the bundled server, on loopback.

``Shard`` starts one server on a free port (optionally with a binlog directory), can be killed
with SIGKILL and restarted on the same port. ``start_all`` starts several at once (the bundled
server takes a moment to import), so a three-shard cluster costs one start-up, not three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from beanrouter.protocol import Ok, StatValue, Using, parse_mapping
from beanrouter.router.connection import Connection
from tests.ports import free_port

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
BEANSTALKD = "beanstalkd"
BUNDLED = "bundled"
BACKENDS = (BEANSTALKD, BUNDLED)


class Shard:
    """One server process.

    Args:
        backend: ``"beanstalkd"`` (``$BEANSTALKD_BIN`` or /usr/bin/beanstalkd) or ``"bundled"``
            (``python -m beanrouter server``).
        binlog: directory for ``-b``, or None.
    """

    def __init__(self, backend: str, binlog: str | None = None) -> None:
        self.backend = backend
        self.binlog = binlog
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"router-{backend}-", suffix=".log")  # noqa: SIM115 (closed in stop())

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def argv(self) -> list[str]:
        flags = ["-l", HOST, "-p", str(self.port)]
        if self.binlog is not None:
            flags += ["-b", self.binlog]
        if self.backend == BEANSTALKD:
            return [os.environ.get("BEANSTALKD_BIN", "/usr/bin/beanstalkd"), *flags]
        return [sys.executable, "-m", "beanrouter", "server", *flags]

    def spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            self.argv(), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{' '.join(self.argv())} exited with {self.proc.returncode}: {self.output()}"
                )
            try:
                conn = Connection.open("probe", HOST, self.port, 1.0, 2.0)
            except OSError:
                time.sleep(0.01)
                continue
            try:
                if isinstance(conn.request(b"list-tube-used\r\n")[0], Using):
                    return
            except OSError:
                time.sleep(0.01)
            finally:
                conn.close()
        raise RuntimeError(f"{' '.join(self.argv())} did not start: {self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_bytes().decode(errors="replace")[-2000:]

    def kill(self) -> None:
        """SIGKILL the process and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        """Start again on the same port (and binlog)."""
        self.kill()
        for attempt in range(50):
            self.spawn()
            try:
                self.wait_ready()
                return
            except RuntimeError:
                if attempt == 49:
                    raise
                self.kill()
                time.sleep(0.1)

    def stop(self) -> None:
        self.kill()
        self.log.close()


def start_all(backend: str, count: int, binlogs: Sequence[str | None] = ()) -> list[Shard]:
    shards = [Shard(backend, binlogs[i] if i < len(binlogs) else None) for i in range(count)]
    for shard in shards:
        shard.spawn()
    try:
        for shard in shards:
            for attempt in range(3):
                try:
                    shard.wait_ready()
                    break
                except RuntimeError:
                    # Someone outside this process took the port between pick and bind.
                    if attempt == 2 or "Address already in use" not in shard.output():
                        raise
                    shard.kill()
                    shard.port = free_port()
                    shard.log.truncate(0)
                    shard.spawn()
    except BaseException:
        for shard in shards:
            shard.stop()
        raise
    return shards


def stats(address: str) -> dict[str, StatValue]:
    """One shard's ``stats``, read on a fresh connection through the codec."""
    host, port = address.rsplit(":", 1)
    conn = Connection.open("probe", host, int(port), 5.0, 5.0)
    try:
        (reply,) = conn.request(b"stats\r\n")
    finally:
        conn.close()
    assert isinstance(reply, Ok), reply
    return parse_mapping(reply.body)
