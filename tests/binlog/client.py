"""A small blocking beanstalkd client for the crash tests: pipelined commands, whole replies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from beanrouter.server.binlog import format as fmt
from tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class Closed(Exception):
    """The server went away."""


class Client:
    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise Closed(str(exc)) from exc

    def _more(self) -> None:
        try:
            chunk = self.sock.recv(1 << 20)
        except OSError as exc:
            raise Closed(str(exc)) from exc
        if not chunk:
            raise Closed("EOF")
        self.buf += chunk

    def reply(self) -> tuple[bytes, bytes | None]:
        """One reply: its line (without CRLF) and its body, if it has one."""
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                words = line.split()
                if words and words[0] in (b"FOUND", b"RESERVED", b"OK"):
                    n = int(words[-1])
                    while len(self.buf) < end + 2 + n + 2:
                        self._more()
                    body = bytes(self.buf[end + 2 : end + 2 + n])
                    del self.buf[: end + 2 + n + 2]
                    return line, body
                del self.buf[: end + 2]
                return line, None
            self._more()

    def call(self, command: bytes) -> tuple[bytes, bytes | None]:
        self.send(command)
        return self.reply()

    def stat(self, name: str) -> int:
        _, body = self.call(b"stats\r\n")
        assert body is not None
        for line in body.decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        raise KeyError(name)


def put(body: bytes, pri: int = 0, delay: int = 0, ttr: int = 60) -> bytes:
    return b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body)


class ServerProcess:
    """``python -m beanrouter server -b DIR ...`` on a free port."""

    def __init__(self, directory: Path, *flags: str) -> None:
        self.port = free_port()
        self._clients: list[Client] = []
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.log = directory.parent / f"server-{self.port}.log"
        argv = [sys.executable, "-m", "beanrouter", "server", "-b", str(directory)]
        argv += ["-l", HOST, "-p", str(self.port), *flags]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.output()}")
            try:
                probe = Client(self.port, timeout=60)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not listening: {self.output()}") from None
                time.sleep(0.01)
                continue
            try:  # it listens before it replays: wait for an answer
                probe.call(b"list-tube-used\r\n")
                return
            except Closed:
                self.proc.wait(timeout=30)
                raise RuntimeError(
                    f"server exited {self.proc.returncode}: {self.output()}"
                ) from None
            finally:
                probe.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self) -> Client:
        """A new client (closed with the server by ``kill`` or ``stop`` if not before)."""
        client = Client(self.port)
        self._clients.append(client)
        return client

    def _close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._close_clients()

    def stop(self) -> int:
        """SIGTERM: an orderly stop; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        status = self.proc.wait(timeout=30)
        self._close_clients()
        return status


def to_format_1(directory: Path) -> list[str]:
    """Make ``directory`` what the first format wrote: each ``beanrouter-binlog.N`` becomes a
    ``binlog.N`` with the 36-byte format-1 header (the records did not change); the names."""
    names = []
    for path in sorted(directory.glob("beanrouter-binlog.*")):
        data = path.read_bytes()
        header = fmt.decode_header(data)
        old = fmt.encode_header(header.index, header.next_id, header.created_ns, version=1)
        (directory / f"binlog.{header.index}").write_bytes(old + data[header.size :])
        path.unlink()
        names.append(f"binlog.{header.index}")
    return names
