#!/usr/bin/env python3
"""Benchmark the bundled server (``python -m beanrouter server``) against the real beanstalkd.

Both servers are run alternately in the same run (beanstalkd, ours, beanstalkd, ours, ... for
``--rounds`` rounds), with a fresh server process for every measurement; the table reports the
median over the rounds, the spread, and the ratio ours / beanstalkd next to the targets.

Measurements (all clients are raw sockets, stdlib only):

* the matrix: for each body size (``--bodies``, default 5 B, 100 B, 10 KB) and window
  (``--windows``, default 1, 10, 1000):
  - pipelined put: one client puts ``-n`` jobs with up to ``window`` puts in flight, written in
    batches of ``min(window, --batch)`` -> put/s;
  - pipelined reserve+delete: the same client then drains those jobs, each ``reserve`` answered by
    a ``delete <id>`` as soon as its reply arrives, with up to ``window`` pairs in flight
    -> pairs/s. Window 1 is one command at a time (``-n`` / 25 jobs; window 10: / 5); 10 KB
    bodies use fewer jobs;
* round trips: ``--clients`` processes, each looping put -> reserve -> delete one command at a
  time for ``--seconds`` seconds -> total cycles/s;
* memory: VmRSS growth of the server per 100-byte job after ``--mem-jobs`` acknowledged puts of
  priority ``--mem-pri`` (default 65536, greenstalk's and pystalk's default: a client's jobs are
  rarely of priority 0, which a Python server can store more cheaply), into one tube; the "before"
  VmRSS is read once the server has answered a first put (a Python server listens before it has
  finished importing, and grows by megabytes until then: a harness that reads it as soon as the
  port accepts counts that growth as the jobs');
* connection bursts: ``--seq-conns`` sequential connect/command/close cycles (a per-request client
  such as PHP's) -> conns/s; ``--burst-conns`` connections opened at once, each sending ``stats``
  -> milliseconds until every reply is in;
* start-up: first reply (spawn until a connecting client's first reply) and idle RSS (VmRSS after
  that reply and half a second of idling); their targets are absolute, on ours alone.

Client and server CPU (in % of one core) are recorded too, to show which side saturates: the
client shares the machine with the server. Exits 0 whatever the ratios; 1 if a server failed.

    python3 benchmarks/server_vs_beanstalkd.py             # full run, ~3 minutes
    python3 benchmarks/server_vs_beanstalkd.py --quick     # smoke test, a few seconds
    python3 benchmarks/server_vs_beanstalkd.py --ours-cmd '/usr/bin/beanstalkd -l {host} -p {port}'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BODY = b"x" * 100
PUT = b"put 0 0 120 %d\r\n%s\r\n" % (len(BODY), BODY)
BYTE_BUDGET = 100_000_000
"""Bytes of job bodies per matrix cell at most (10 KB bodies: 10,000 jobs)."""


def put_command(size: int) -> bytes:
    return b"put 0 0 120 %d\r\n%s\r\n" % (size, b"x" * size)


RESERVE = b"reserve\r\n"
DEFAULT_REF_CMD = "/usr/bin/beanstalkd -l {host} -p {port}"
DEFAULT_OURS_CMD = "{python} -m beanrouter server -l {host} -p {port}"
SOCKET_TIMEOUT = 60.0
START_TIMEOUT = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
OTHER_LOAD_WARNING = 0.15
"""Cores' worth of CPU used by other processes during the run above which a warning is printed."""

_RESERVED_RE = re.compile(rb"RESERVED (\d+) (\d+)\r\n")
_DELETED = b"DELETED\r\n"


class BenchError(Exception):
    """A server misbehaved: it did not start, hung up, or sent an unexpected reply."""


# --------------------------------------------------------------------------------------------
# Metrics and targets


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    target: str = ""
    """``">= 1.0"``-style bound on the ratio ours / beanstalkd; empty for informational rows."""
    absolute: bool = False
    """The target bounds our value itself, not the ratio (idle RSS, first reply)."""

    def met(self, ratio: float) -> bool | None:
        if not self.target:
            return None
        op, value = self.target.split()
        shown = round(ratio, 2)  # judge the ratio as printed: 0.999 shows as 1.00 and passes
        return shown >= float(value) if op == ">=" else shown <= float(value)


def _size_label(size: int) -> str:
    return f"{size // 1024} KB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def matrix_metrics(bodies: Sequence[int], windows: Sequence[int]) -> tuple[Metric, ...]:
    out: list[Metric] = []
    for prefix, label, unit in (("put", "put", "put/s"), ("pairs", "reserve+delete", "pairs/s")):
        for body in bodies:
            for window in windows:
                out.append(
                    Metric(
                        f"{prefix}_{body}_{window}",
                        f"{label} {_size_label(body)} window {window}",
                        unit,
                        ">= 1.0",
                    )
                )
    return tuple(out)


OTHER_METRICS: tuple[Metric, ...] = (
    Metric("cycles_per_s", "round trips (put/reserve/delete)", "cycles/s", ">= 0.8"),
    Metric("bytes_per_job", "memory per 100-byte job", "B/job", "<= 1.3"),
    Metric("seq_conns_per_s", "sequential connect+command+close", "conns/s", ">= 1.0"),
    Metric("burst_ms", "burst of connections each sending stats", "ms", "<= 1.0"),
    Metric("first_reply_ms", "first reply after spawn", "ms", "<= 60", absolute=True),
    Metric("first_reply_cpu_ms", "server CPU until the first reply", "ms"),
    Metric("idle_rss_mb", "idle RSS", "MB", "<= 15", absolute=True),
)


CPU_METRICS: tuple[Metric, ...] = (
    Metric("put_server_cpu", "pipelined put: server CPU", "%"),
    Metric("put_client_cpu", "pipelined put: client CPU", "%"),
    Metric("put_client_user_cpu", "pipelined put: client user CPU", "%"),
    Metric("pairs_server_cpu", "reserve+delete: server CPU", "%"),
    Metric("pairs_client_cpu", "reserve+delete: client CPU", "%"),
    Metric("pairs_client_user_cpu", "reserve+delete: client user CPU", "%"),
    Metric("rt_server_cpu", "round trips: server CPU", "%"),
    Metric("rt_client_cpu", "round trips: clients' CPU (sum)", "%"),
    Metric("rt_client_user_cpu", "round trips: clients' user CPU", "%"),
)


@dataclass(frozen=True)
class Config:
    rounds: int
    n: int
    batch: int
    clients: int
    seconds: float
    mem_jobs: int
    seq_conns: int
    burst_conns: int
    bodies: tuple[int, ...] = (5, 100, 10240)
    windows: tuple[int, ...] = (1, 10, 1000)
    mem_pri: int = 65536

    def jobs(self, body: int, window: int) -> int:
        """Jobs in the matrix cell (body, window)."""
        n = min(self.n, max(1000, BYTE_BUDGET // body))
        if window < 10:
            n //= 25  # one command at a time: latency-bound, a few seconds is plenty
        elif window < 100:
            n //= 5
        return max(100, n)


FULL = Config(
    rounds=3,
    n=50_000,
    batch=1000,
    clients=4,
    seconds=5.0,
    mem_jobs=200_000,
    seq_conns=3000,
    burst_conns=800,
)
QUICK = Config(
    rounds=1,
    n=2_000,
    batch=1000,
    clients=4,
    seconds=0.5,
    mem_jobs=5_000,
    seq_conns=200,
    burst_conns=100,
)


@dataclass
class Side:
    name: str
    cmd: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    """Benchmarks that failed once for this side: they are not retried in later rounds."""

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.samples.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------------
# Server processes


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("no VmRSS in /proc/PID/status")

    def log_tail(self, limit: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:].strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _command(template: str, port: int) -> list[str]:
    return [
        part.format(host=HOST, port=port, python=sys.executable) for part in shlex.split(template)
    ]


@contextlib.contextmanager
def running_server(template: str) -> Iterator[Server]:
    """Start a fresh server from ``template``, wait until it accepts connections, stop it after."""
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            _command(template, port),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(proc, port, log)
        try:
            _wait_listening(server)
            yield server
        finally:
            _stop(proc)


def _wait_listening(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            raise BenchError(
                f"server exited with status {server.proc.returncode} before listening:\n"
                f"{server.log_tail()}"
            )
        try:
            socket.create_connection((HOST, server.port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"server not listening after {START_TIMEOUT:.0f}s") from None
            time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(262144)
    if not data:
        raise BenchError("server closed the connection")
    return data


# --------------------------------------------------------------------------------------------
# (a) pipelined put and reserve+delete


def pipelined_puts(sock: socket.socket, n: int, window: int, batch: int, put: bytes = PUT) -> None:
    """Put ``n`` jobs (``put`` each) with up to ``window`` in flight; returns once all are
    INSERTED."""
    batch = max(1, min(batch, window))
    chunk = put * batch
    sent = acked = 0
    tail = b""
    while acked < n:
        while sent < n and sent - acked + batch <= window:
            count = min(batch, n - sent)
            sock.sendall(chunk if count == batch else put * count)
            sent += count
        data = tail + _recv(sock)
        end = data.rfind(b"\r\n") + 2
        if end < 2:
            tail = data
            continue
        lines = data.count(b"\r\n", 0, end)
        if data.count(b"INSERTED ", 0, end) != lines:
            bad = next(ln for ln in data[:end].split(b"\r\n") if not ln.startswith(b"INSERTED "))
            raise BenchError(f"unexpected reply to put: {bad[:200]!r}")
        acked += lines
        tail = data[end:]
    if tail:
        raise BenchError(f"unexpected extra data after puts: {tail[:200]!r}")


def pipelined_reserve_delete(sock: socket.socket, n: int, window: int) -> None:
    """Reserve and delete ``n`` jobs with up to ``window`` pairs in flight (a pair is in flight
    from its ``reserve`` until its ``DELETED``); each ``delete`` goes out, together with the
    ``reserve`` commands that refill the window, as soon as its ``RESERVED`` has been read."""
    reserves = deleted = 0
    deletes: list[bytes] = []
    buf = bytearray()
    while deleted < n:
        want = min(window - (reserves - deleted), n - reserves)
        if want > 0:
            deletes.append(RESERVE * want)
            reserves += want
        if deletes:
            sock.sendall(b"".join(deletes))
            deletes.clear()
        buf += _recv(sock)
        pos, size = 0, len(buf)
        while pos < size:
            if buf.startswith(_DELETED, pos):
                pos += len(_DELETED)
                deleted += 1
                continue
            match = _RESERVED_RE.match(buf, pos)
            if match is not None:
                end = match.end() + int(match[2]) + 2
                if end > size:
                    break
                deletes.append(b"delete %s\r\n" % match[1])
                pos = end
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            raise BenchError(f"unexpected reply in reserve/delete: {bytes(buf[pos:eol])[:200]!r}")
        del buf[:pos]


@dataclass(frozen=True)
class Clock:
    """Wall time, this process's user and system CPU time, and the server's CPU time."""

    wall: float
    user: float
    system: float
    server: float

    @classmethod
    def now(cls, server: Server) -> Clock:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(time.perf_counter(), usage.ru_utime, usage.ru_stime, server.cpu_seconds())


def _phase(prefix: str, jobs: int, start: Clock, end: Clock) -> dict[str, float]:
    wall = end.wall - start.wall
    user = end.user - start.user
    return {
        f"{prefix}_per_s": jobs / wall,
        f"{prefix}_server_cpu": 100 * (end.server - start.server) / wall,
        f"{prefix}_client_cpu": 100 * (user + end.system - start.system) / wall,
        f"{prefix}_client_user_cpu": 100 * user / wall,
    }


def bench_pipelined(template: str, cfg: Config) -> dict[str, float]:
    """The matrix: a fresh server per body size, every window in turn (each drains to empty)."""
    out: dict[str, float] = {}
    for body in cfg.bodies:
        put = put_command(body)
        with running_server(template) as server, _connect(server.port) as sock:
            for window in cfg.windows:
                n = cfg.jobs(body, window)
                start = Clock.now(server)
                pipelined_puts(sock, n, window, cfg.batch, put)
                middle = Clock.now(server)
                pipelined_reserve_delete(sock, n, window)
                end = Clock.now(server)
                cell = f"{body}_{window}"
                put_phase = _phase("put", n, start, middle)
                pairs_phase = _phase("pairs", n, middle, end)
                out[f"put_{cell}"] = put_phase["put_per_s"]
                out[f"pairs_{cell}"] = pairs_phase["pairs_per_s"]
                if body == 100 and window == max(cfg.windows):
                    out |= {k: v for k, v in put_phase.items() if k.endswith("cpu")}
                    out |= {k: v for k, v in pairs_phase.items() if k.endswith("cpu")}
    return out


# --------------------------------------------------------------------------------------------
# (b) round trips


def _recv_exactly_reply(sock: socket.socket, first: bytes) -> bytes:
    data = first
    while not data.endswith(b"\r\n"):
        data += _recv(sock)
    return data


RoundTripResult = tuple[int, float, float, float] | str
"""(cycles, elapsed seconds, user CPU seconds, system CPU seconds), or an error message."""


def _round_trip_worker(
    port: int, seconds: float, barrier: Barrier, results: Queue[RoundTripResult]
) -> None:
    """One client process; reports its result (or its error) on ``results``."""
    try:
        results.put(_round_trips(port, seconds, barrier))
    except Exception as exc:
        barrier.abort()
        results.put(f"{type(exc).__name__}: {exc}")


def _round_trips(port: int, seconds: float, barrier: Barrier) -> tuple[int, float, float, float]:
    """put -> reserve -> delete, one command at a time, until ``seconds`` pass."""
    with _connect(port) as sock:
        barrier.wait()
        cycles = 0
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            sock.sendall(PUT)
            reply = _recv_exactly_reply(sock, _recv(sock))
            if not reply.startswith(b"INSERTED "):
                raise BenchError(f"unexpected reply to put: {reply[:200]!r}")
            sock.sendall(RESERVE)
            reply = _recv(sock)
            header_end = reply.find(b"\r\n")
            while header_end < 0:
                reply += _recv(sock)
                header_end = reply.find(b"\r\n")
            match = _RESERVED_RE.match(reply)
            if match is None:
                raise BenchError(f"unexpected reply to reserve: {reply[:200]!r}")
            total = match.end() + int(match[2]) + 2
            while len(reply) < total:
                reply += _recv(sock)
            sock.sendall(b"delete %s\r\n" % match[1])
            reply = _recv_exactly_reply(sock, _recv(sock))
            if reply != _DELETED:
                raise BenchError(f"unexpected reply to delete: {reply[:200]!r}")
            cycles += 1
        elapsed = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return (
            cycles,
            elapsed,
            usage.ru_utime - usage0.ru_utime,
            usage.ru_stime - usage0.ru_stime,
        )


def bench_round_trips(template: str, cfg: Config) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    with running_server(template) as server:
        barrier = ctx.Barrier(cfg.clients + 1)
        results: Queue[RoundTripResult] = ctx.Queue()
        procs = [
            ctx.Process(
                target=_round_trip_worker, args=(server.port, cfg.seconds, barrier, results)
            )
            for _ in range(cfg.clients)
        ]
        for proc in procs:
            proc.start()
        try:
            barrier.wait(timeout=START_TIMEOUT + 30)
            srv0, t0 = server.cpu_seconds(), time.perf_counter()
            got = [results.get(timeout=cfg.seconds + SOCKET_TIMEOUT) for _ in procs]
            srv1, t1 = server.cpu_seconds(), time.perf_counter()
        except Exception as exc:
            errors = []
            with contextlib.suppress(Exception):
                while True:
                    errors.append(str(results.get(timeout=1)))
            raise BenchError(f"round-trip clients failed: {exc!r} {errors}") from exc
        finally:
            for proc in procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
    errors = [item for item in got if isinstance(item, str)]
    if errors:
        raise BenchError(f"round-trip client failed: {errors[0]}")
    outcomes = [item for item in got if not isinstance(item, str)]
    return {
        "cycles_per_s": sum(cycles / elapsed for cycles, elapsed, _, _ in outcomes),
        "rt_client_cpu": 100 * sum((user + sys) / elapsed for _, elapsed, user, sys in outcomes),
        "rt_client_user_cpu": 100 * sum(user / elapsed for _, elapsed, user, _ in outcomes),
        "rt_server_cpu": 100 * (srv1 - srv0) / (t1 - t0),
    }


# --------------------------------------------------------------------------------------------
# (c) memory


def _stat(sock: socket.socket, name: bytes) -> int:
    sock.sendall(b"stats\r\n")
    data = _recv(sock)
    header_end = data.find(b"\r\n")
    while header_end < 0:
        data += _recv(sock)
        header_end = data.find(b"\r\n")
    if not data.startswith(b"OK "):
        raise BenchError(f"unexpected reply to stats: {data[:200]!r}")
    total = header_end + 2 + int(data[3:header_end]) + 2
    while len(data) < total:
        data += _recv(sock)
    match = re.search(rb"\n%s: (\d+)" % re.escape(name), data)
    if match is None:
        raise BenchError(f"stats has no {name.decode()}")
    return int(match[1])


def bench_memory(template: str, cfg: Config) -> dict[str, float]:
    put = b"put %d 0 120 %d\r\n%s\r\n" % (cfg.mem_pri, len(BODY), BODY)
    with running_server(template) as server, _connect(server.port) as sock:
        pipelined_puts(sock, 1, 1, 1, put)  # the server has started, the tube exists
        before = server.rss_bytes()
        pipelined_puts(sock, cfg.mem_jobs, 1000, cfg.batch, put)
        ready = _stat(sock, b"current-jobs-ready")
        if ready != cfg.mem_jobs + 1:
            raise BenchError(f"expected {cfg.mem_jobs + 1} ready jobs, stats says {ready}")
        after = server.rss_bytes()
    return {"bytes_per_job": (after - before) / cfg.mem_jobs}


# --------------------------------------------------------------------------------------------
# (d) connection bursts and start-up


def _one_reply(sock: socket.socket) -> bytes:
    data = _recv(sock)
    if data.startswith(b"OK "):
        header_end = data.find(b"\r\n")
        while header_end < 0:
            data += _recv(sock)
            header_end = data.find(b"\r\n")
        total = header_end + 2 + int(data[3:header_end]) + 2
        while len(data) < total:
            data += _recv(sock)
        return data
    return _recv_exactly_reply(sock, data)


def bench_bursts(template: str, cfg: Config) -> dict[str, float]:
    with running_server(template) as server:
        start = time.perf_counter()
        for _ in range(cfg.seq_conns):
            with socket.create_connection((HOST, server.port), timeout=SOCKET_TIMEOUT) as sock:
                sock.sendall(b"list-tube-used\r\n")
                if _one_reply(sock) != b"USING default\r\n":
                    raise BenchError("unexpected reply to list-tube-used")
        sequential = time.perf_counter() - start
        time.sleep(0.2)
        start = time.perf_counter()
        socks = []
        try:
            for _ in range(cfg.burst_conns):
                sock = socket.socket()
                sock.settimeout(SOCKET_TIMEOUT)
                sock.setblocking(False)
                sock.connect_ex((HOST, server.port))
                socks.append(sock)
            for sock in socks:
                sock.setblocking(True)
                sock.settimeout(SOCKET_TIMEOUT)
                sock.sendall(b"stats\r\n")
            for sock in socks:
                if not _one_reply(sock).startswith(b"OK "):
                    raise BenchError("unexpected reply to stats")
            burst = time.perf_counter() - start
        finally:
            for sock in socks:
                sock.close()
    return {"seq_conns_per_s": cfg.seq_conns / sequential, "burst_ms": burst * 1000}


def first_stats_reply(server: Server, start: float) -> tuple[float, float]:
    """Connect to a server spawned at ``start`` (``perf_counter``) as soon as it listens and ask
    ``stats``: (seconds from the spawn to the reply, the server's CPU seconds by then)."""
    while True:
        try:
            sock = socket.create_connection((HOST, server.port), timeout=SOCKET_TIMEOUT)
            break
        except OSError:
            if time.perf_counter() > start + START_TIMEOUT or server.proc.poll() is not None:
                raise BenchError(f"server did not start: {server.log_tail()}") from None
            time.sleep(0.001)
    with sock:
        sock.sendall(b"stats\r\n")
        if not _one_reply(sock).startswith(b"OK "):
            raise BenchError("unexpected reply to stats")
        return time.perf_counter() - start, server.cpu_seconds()


def bench_start(template: str, cfg: Config) -> dict[str, float]:
    """Spawn to the first reply to ``stats`` (a client retrying its connect every millisecond),
    the server's CPU time (user + system) by then, and idle RSS. The CPU time is the steadier
    figure on a shared machine: it does not count the time the server waited for a core."""
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            _command(template, port),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(proc, port, log)
        try:
            first, cpu = first_stats_reply(server, start)
            time.sleep(0.5)
            rss = server.rss_bytes()
        finally:
            _stop(proc)
    return {
        "first_reply_ms": first * 1000,
        "first_reply_cpu_ms": cpu * 1000,
        "idle_rss_mb": rss / 1e6,
    }


BENCHES: tuple[tuple[str, Callable[[str, Config], dict[str, float]]], ...] = (
    ("start-up", bench_start),
    ("matrix", bench_pipelined),
    ("round trips", bench_round_trips),
    ("memory", bench_memory),
    ("bursts", bench_bursts),
)


# --------------------------------------------------------------------------------------------
# Reporting


def _machine_busy_seconds() -> float:
    """CPU time all processes on the machine have used since boot (incl. steal), summed over
    cores, from the first line of /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _own_cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children (servers, round-trip clients)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )


def machine_info(ref_cmd: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ref_version = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out = subprocess.run(
            [shlex.split(ref_cmd)[0], "-v"], capture_output=True, text=True, timeout=5
        )
        ref_version = (out.stdout or out.stderr).strip() or ref_version
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "beanstalkd": ref_version,
        "load_avg_at_start": os.getloadavg()[0],
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value:.0f}%"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def _cell(side: Side, metric: Metric) -> str:
    """The median, followed by the (min-max) spread when there are several samples."""
    values = side.samples.get(metric.key, [])
    text = _fmt(side.median(metric.key), metric.unit)
    if len(values) > 1:
        text += f" ({_fmt(min(values), metric.unit)}-{_fmt(max(values), metric.unit)})"
    return text


def _ratio_cell(ref: Side, ours: Side, metric: Metric) -> str:
    """The median ratio, and its (min-max) over rounds (round i of ours against round i of
    beanstalkd: the same-run ratios)."""
    ref_values, ours_values = ref.samples.get(metric.key, []), ours.samples.get(metric.key, [])
    ref_med, ours_med = ref.median(metric.key), ours.median(metric.key)
    if not ref_med or ours_med is None:
        return ""
    text = f"{ours_med / ref_med:.2f}"
    pairs = [o / r for o, r in zip(ours_values, ref_values, strict=False) if r]
    if len(pairs) > 1:
        text += f" ({min(pairs):.2f}-{max(pairs):.2f})"
    return text


def print_table(ref: Side, ours: Side, metrics: Sequence[Metric]) -> dict[str, float]:
    ratios: dict[str, float] = {}
    head = ("metric", "unit", "beanstalkd", "ours", "ratio", "target", "")
    rows: list[tuple[str, ...]] = [head]
    for group in (metrics, CPU_METRICS):
        if group is CPU_METRICS:
            rows.append(("", "", "", "", "", "", ""))
        for metric in group:
            ref_med, ours_med = ref.median(metric.key), ours.median(metric.key)
            ratio_text, verdict = "", ""
            if metric.absolute and ours_med is not None:
                met = metric.met(ours_med)
                verdict = "ok" if met else "MISS"
                if ref_med:
                    ratio_text = _ratio_cell(ref, ours, metric)
            elif metric.target and ref_med and ours_med is not None:
                ratio = ours_med / ref_med
                ratios[metric.key] = ratio
                ratio_text = _ratio_cell(ref, ours, metric)
                met = metric.met(ratio)
                verdict = "" if met is None else ("ok" if met else "MISS")
            rows.append(
                (
                    metric.label,
                    metric.unit,
                    _cell(ref, metric),
                    _cell(ours, metric),
                    ratio_text,
                    metric.target,
                    verdict,
                )
            )
    widths = [max(len(row[i].strip()) for row in rows) for i in range(len(head))]
    for index, row in enumerate(rows):
        cells = [
            cell.strip().ljust(width) if col < 2 else cell.strip().rjust(width)
            for col, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths).rstrip())
    print(
        "\nmedian over rounds (min-max); ratio = ours / beanstalkd, median (min-max of the"
        " per-round ratios); targets marked absolute bound ours alone; CPU in % of one core"
    )
    return ratios


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(
        description="Benchmark the bundled beanrouter server against the real beanstalkd.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--rounds", type=int, help=f"rounds per server (default {FULL.rounds})")
    parser.add_argument("-n", type=int, help=f"jobs per matrix cell (default {FULL.n})")
    parser.add_argument("--batch", type=int, help=f"puts per write at most (default {FULL.batch})")
    parser.add_argument(
        "--bodies", type=_int_list, help="body sizes, comma-separated (default 5,100,10240)"
    )
    parser.add_argument("--windows", type=_int_list, help="windows (default 1,10,1000)")
    parser.add_argument(
        "--seq-conns", type=int, help=f"sequential connections (default {FULL.seq_conns})"
    )
    parser.add_argument(
        "--burst-conns", type=int, help=f"connections in a burst (default {FULL.burst_conns})"
    )
    parser.add_argument("--only", help="comma-separated benchmarks to run: " + _bench_names())
    parser.add_argument("--clients", type=int, help=f"round-trip clients (default {FULL.clients})")
    parser.add_argument(
        "--seconds", type=float, help=f"round-trip duration (default {FULL.seconds})"
    )
    parser.add_argument("--mem-jobs", type=int, help=f"jobs for memory (default {FULL.mem_jobs})")
    parser.add_argument(
        "--mem-pri", type=int, help=f"priority of the memory jobs (default {FULL.mem_pri})"
    )
    parser.add_argument(
        "--ref-cmd",
        default=DEFAULT_REF_CMD,
        help="reference server command; {host}, {port}, {python} are filled in "
        f"(default {DEFAULT_REF_CMD!r})",
    )
    parser.add_argument(
        "--ours-cmd",
        default=DEFAULT_OURS_CMD,
        help=f"our server command, same placeholders (default {DEFAULT_OURS_CMD!r})",
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results as JSON")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in Config.__dataclass_fields__ and value is not None
    }
    cfg = Config(**{**asdict(base), **overrides})
    for key, value in asdict(cfg).items():
        if key != "mem_pri" and (min(value, default=0) if isinstance(value, tuple) else value) <= 0:
            parser.error(f"--{key.replace('_', '-')} must be positive")
    return args, cfg


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _bench_names() -> str:
    return ", ".join(name for name, _ in BENCHES)


def main(argv: Sequence[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    machine = machine_info(args.ref_cmd)
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"Python {machine['python']} ({machine['implementation']}), kernel {machine['kernel']}, "
        f"load {machine['load_avg_at_start']:.2f}"
    )
    print(f"reference: {machine['beanstalkd']}: {args.ref_cmd}")
    print(f"ours: {args.ours_cmd}")
    print(
        f"config: {cfg.rounds} rounds; matrix bodies {list(cfg.bodies)} x windows "
        f"{list(cfg.windows)}, up to {cfg.n:,} jobs a cell, batch <= {cfg.batch}; round trips "
        f"{cfg.clients} clients x {cfg.seconds:g}s ({len(BODY)}-byte body); memory "
        f"{cfg.mem_jobs:,} jobs of priority {cfg.mem_pri}; bursts {cfg.seq_conns} sequential, "
        f"{cfg.burst_conns} at once\n"
    )
    only = set(args.only.split(",")) if args.only else None
    metrics = matrix_metrics(cfg.bodies, cfg.windows) + OTHER_METRICS
    ref = Side("beanstalkd", args.ref_cmd)
    ours = Side("ours", args.ours_cmd)
    started, busy0, own0 = time.perf_counter(), _machine_busy_seconds(), _own_cpu_seconds()
    for round_no in range(1, cfg.rounds + 1):
        for bench_name, bench in BENCHES:
            if only is not None and bench_name not in only:
                continue
            for side in (ref, ours):
                if bench_name in side.failed:
                    continue
                try:
                    values = bench(side.cmd, cfg)
                except (BenchError, OSError) as exc:
                    side.failed.add(bench_name)
                    side.errors.append(f"round {round_no}, {bench_name}: {exc}")
                    print(f"ERROR [{side.name}] {side.errors[-1]}", file=sys.stderr)
                    continue
                side.add(values)
                shown = ", ".join(
                    f"{key}={_fmt(value, '%' if key.endswith('cpu') else '')}"
                    for key, value in values.items()
                )
                print(
                    f"round {round_no}/{cfg.rounds} {side.name:>10} {bench_name}: {shown}",
                    flush=True,
                )
    elapsed = time.perf_counter() - started
    own = _own_cpu_seconds() - own0
    others = max(0.0, (_machine_busy_seconds() - busy0 - own) / elapsed)
    print(
        f"\ntotal {elapsed:.0f}s; this benchmark used {own / elapsed:.2f} cores on average, "
        f"other processes {others:.2f} cores"
    )
    if others > OTHER_LOAD_WARNING:
        print(
            "WARNING: other processes were using the CPU during the run; the numbers (and the "
            "ratios, if the load varied) are unreliable - rerun on an idle machine"
        )
    print()
    ratios = print_table(ref, ours, metrics)
    for side in (ref, ours):
        for error in side.errors:
            print(f"{side.name} failed: {error}")
    if args.json is not None:
        payload = {
            "machine": machine,
            "config": asdict(cfg),
            "elapsed_s": elapsed,
            "other_load_cores": others,
            "sides": {
                side.name: {
                    "cmd": side.cmd,
                    "samples": side.samples,
                    "median": {key: side.median(key) for key in side.samples},
                    "errors": side.errors,
                }
                for side in (ref, ours)
            },
            "ratios": ratios,
            "targets": {m.key: m.target for m in metrics},
            "met": {m.key: m.met(ratios[m.key]) for m in metrics if m.key in ratios},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if ref.errors or ours.errors else 0


if __name__ == "__main__":
    sys.exit(main())
