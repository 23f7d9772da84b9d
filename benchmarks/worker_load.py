#!/usr/bin/env python3
"""Real worker loads through each target: unpipelined producers and workers as processes.

The load: 2 producer processes loop ``use <tube>`` + ``put`` over 6 tubes, one command at a time
(send it, read its reply); workers loop ``reserve-with-timeout 1`` -> ``delete``, one command at
a time. Two worker shapes:

* single-tube: 6 worker processes, one per tube;
* multi-tube: 3 worker processes, each watching all 6 tubes.

Each shape runs flat out (the producers put as fast as they can) and paced (the producers held
to ``--rate`` jobs/s in all, 400 by default, so nothing should be saturated). Every run gets fresh
servers, warms up for ``--warmup`` seconds, then counts over ``--seconds``: deleted jobs/s, puts/s,
put -> reserve latency p50/p99 (the producer writes ``time.monotonic()`` just before sending the
put into the 100-byte body; the worker reads it when ``RESERVED`` arrives; CLOCK_MONOTONIC is
shared by the processes on Linux), the ready jobs left in the 6 tubes at the window's end (the
backlog), ``TIMED_OUT`` replies, the CPU of the process in the middle (HAProxy or the proxy) and
how busy the whole machine was (``/proc/stat``, every process on it).

Targets, all on 127.0.0.1, measured in one run (``--only`` picks some):

* ``beanstalkd``: Debian's beanstalkd, direct;
* ``haproxy``: HAProxy (TCP mode, ``nbthread 1``) in front of one beanstalkd: the floor of any
  proxy here (a relay in C that parses nothing);
* ``proxy-1`` / ``proxy-3``: ``beanrouter proxy`` (default configuration: failover 1) over 1 / 3
  beanstalkd shards;
* ``cluster-3``: ``beanrouter cluster --shards 3`` (3 bundled pure-Python shards and the proxy);
* the library, single-tube load only (flat out and paced), every process a library client:
  ``greenstalk`` (greenstalk on one beanstalkd), ``router-1`` / ``router-3`` (``Router`` over 1 /
  3 beanstalkd shards, ``reserve(timeout=1)`` -> ``job.delete()``), ``async-1`` / ``async-3``
  (``AsyncRouter``, one asyncio worker per process).

The 6 tube names are chosen with beanrouter's own ring so that over 3 shards named ``shard-0`` ..
``shard-2`` (the names ``beanrouter cluster`` gives its shards, and the names used here for the
proxy's and the library's shards) each shard owns 2 of them; the script prints the placement and
checks it after every 3-shard run: on real beanstalkd shards, that each tube's jobs went to its
owner only; for ``beanrouter cluster``, what its ``/route`` says.

    python3 benchmarks/worker_load.py                   # every target: about 4 minutes on 2 cores
    python3 benchmarks/worker_load.py --quick           # smoke test: about a minute
    python3 benchmarks/worker_load.py --only beanstalkd,haproxy,proxy-3 --seconds 10
    python3 benchmarks/worker_load.py --only proxy-3 --profile /tmp/proxy3.prof --json out.json

``--profile FILE`` adds one run of the single-tube flat-out load (``--profile-load``: another one)
on ``proxy-3`` with the proxy under cProfile (its numbers are not in the tables) and prints the
top functions by own time.
Exits 0 whatever the ratios; 1 when a target did not start or a client process failed; 130 when
interrupted (^C or SIGTERM: every process it started is stopped first, then what was measured is
reported).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

import greenstalk  # noqa: E402
from proxy_bench import cpu_seconds, free_port, pct, wait_listening  # noqa: E402

from beanrouter import AsyncRouter, DeadlineSoon, Router, RouterError  # noqa: E402
from beanrouter.core.ring import Placement  # noqa: E402
from beanrouter.proxy.cluster import shard_ids  # noqa: E402

HOST = "127.0.0.1"
BEANSTALKD = os.environ.get("BEANSTALKD_BIN", "/usr/bin/beanstalkd")
HAPROXY = os.environ.get("HAPROXY_BIN", "/usr/sbin/haproxy")
BODY_SIZE = 100
TTR = 60
PRODUCERS = 2
SHARD_NAMES = [f"shard-{i}" for i in range(3)]
PROTOCOL_TARGETS = ("beanstalkd", "haproxy", "proxy-1", "proxy-3", "cluster-3")
LIBRARY_TARGETS = ("greenstalk", "router-1", "router-3", "async-1", "async-3")
PROTOCOL_LOADS = ("single", "multi", "single-paced", "multi-paced")
LIBRARY_LOADS = ("single", "single-paced")
MAX_ERROR_SAMPLES = 5
MAX_ERRORS = 1000
FORK = mp.get_context("fork")


def pick_tubes() -> tuple[list[str], dict[str, str]]:
    """6 tube names, 2 owned by each of ``shard-0..2``, in the order shard-0, 1, 2, 0, 1, 2."""
    placement = Placement([(name, 1) for name in SHARD_NAMES])
    found: dict[str, list[str]] = {name: [] for name in SHARD_NAMES}
    i = 0
    while any(len(v) < 2 for v in found.values()):
        tube = f"jobs-{i}"
        owner = placement.owner(tube)
        if len(found[owner]) < 2:
            found[owner].append(tube)
        i += 1
    tubes = [found[name][k] for k in range(2) for name in SHARD_NAMES]
    return tubes, {t: placement.owner(t) for t in tubes}


# ---- servers -----------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """Where a run's clients connect and what the harness watches."""

    port: int = 0  # protocol targets: the port the raw clients use
    lines: list[str] = field(default_factory=list)  # library targets: server lines
    stat_ports: list[int] = field(default_factory=list)  # backlog: stats-tube summed over these
    shard_ports: list[int] = field(default_factory=list)  # real shards, shard-i at index i
    relay_pid: int | None = None  # HAProxy or the proxy: its CPU is reported
    http_port: int | None = None  # beanrouter cluster's HTTP port (/route)
    logs: list[tuple[str, Path]] = field(default_factory=list)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def spawn(
    argv: list[str], port: int, name: str, tmp: Path, ep: Endpoint
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` (stdout and stderr to a log file), wait until ``port`` answers; stop it."""
    log = tmp / f"{name}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH")) if x)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    ep.logs.append((name, log))
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        stop(proc)


def start_beanstalkd(stack: contextlib.ExitStack, tmp: Path, ep: Endpoint, name: str) -> int:
    port = free_port()
    stack.enter_context(spawn([BEANSTALKD, "-l", HOST, "-p", str(port)], port, name, tmp, ep))
    return port


def start_proxy(
    stack: contextlib.ExitStack, tmp: Path, ep: Endpoint, shards: list[int], profile: str | None
) -> int:
    """``beanrouter proxy`` over ``shards`` named ``shard-i``, ids as ``beanrouter cluster``'s."""
    names = SHARD_NAMES[: len(shards)]
    ids = shard_ids(names) if len(shards) > 1 else {names[0]: 0}
    config = tmp / "cluster.yaml"
    servers = [f"  - {HOST}:{p} {n} id={ids[n]}" for n, p in zip(names, shards, strict=True)]
    config.write_text("servers:\n" + "\n".join(servers) + "\n")
    port = free_port()
    ep.http_port = free_port()
    py = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
    argv = [*py, "-m", "beanrouter", "proxy", "--config", str(config), "-l", HOST, "-p", str(port)]
    argv += ["--http-port", str(ep.http_port)]
    proc = stack.enter_context(spawn(argv, port, "proxy", tmp, ep))
    ep.relay_pid = proc.pid
    return port


def start_haproxy(stack: contextlib.ExitStack, tmp: Path, ep: Endpoint, shard: int) -> int:
    port = free_port()
    config = tmp / "haproxy.cfg"
    config.write_text(
        "global\n    nbthread 1\n    maxconn 4096\n"
        "defaults\n    mode tcp\n    timeout connect 5s\n"
        "    timeout client 1h\n    timeout server 1h\n"
        f"listen beanstalkd\n    bind {HOST}:{port}\n    server b0 {HOST}:{shard}\n"
    )
    proc = stack.enter_context(spawn([HAPROXY, "-db", "-f", str(config)], port, "haproxy", tmp, ep))
    ep.relay_pid = proc.pid
    return port


@contextlib.contextmanager
def serve(target: str, label: str, profile: str | None = None) -> Iterator[Endpoint]:
    """Fresh servers for one run of ``target``; everything stopped on the way out."""
    ep = Endpoint()
    with tempfile.TemporaryDirectory(prefix="worker-load-") as tmpdir, contextlib.ExitStack() as st:
        tmp = Path(tmpdir)
        try:
            if target in ("beanstalkd", "greenstalk"):
                ep.port = start_beanstalkd(st, tmp, ep, "beanstalkd")
                ep.shard_ports = [ep.port]
            elif target == "haproxy":
                ep.shard_ports = [start_beanstalkd(st, tmp, ep, "beanstalkd")]
                ep.port = start_haproxy(st, tmp, ep, ep.shard_ports[0])
            elif target == "cluster-3":
                ep.port = free_port()
                argv = [sys.executable, "-m", "beanrouter", "cluster", "--shards", "3"]
                ep.http_port = free_port()
                argv += ["-l", HOST, "-p", str(ep.port), "--http-port", str(ep.http_port)]
                ep.relay_pid = st.enter_context(spawn(argv, ep.port, "cluster", tmp, ep)).pid
            else:  # proxy-N, router-N, async-N
                count = int(target.rsplit("-", 1)[1])
                ep.shard_ports = [
                    start_beanstalkd(st, tmp, ep, f"beanstalkd-{i}") for i in range(count)
                ]
                if target.startswith("proxy"):
                    ep.port = start_proxy(st, tmp, ep, ep.shard_ports, profile)
            if target in LIBRARY_TARGETS:
                ep.stat_ports = list(ep.shard_ports)
                ep.lines = [
                    f"{HOST}:{p} {n}" + (" id=0" if len(ep.shard_ports) == 1 else "")
                    for n, p in zip(SHARD_NAMES, ep.shard_ports, strict=False)
                ]
            else:
                ep.stat_ports = [ep.port]
            yield ep
        finally:
            st.close()  # stop the servers before their logs are read and the directory removed
            for name, path in ep.logs:
                with contextlib.suppress(OSError):
                    text = path.read_text(errors="replace").strip()
                    if text:
                        MESSAGES.append((f"{name} ({label})", text))


MESSAGES: list[tuple[str, str]] = []
"""(server, what it wrote) for every server that wrote anything, filled as runs end."""


# ---- clients -----------------------------------------------------------------------------------


class Conn:
    """A raw beanstalkd connection: one command, then its reply (first line and any body)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def cmd(self, data: bytes) -> tuple[bytes, bytes]:
        self.sock.sendall(data)
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        body = b""
        if line.startswith((b"RESERVED ", b"FOUND ", b"OK ")):
            size = int(line.rsplit(b" ", 1)[1])
            while len(self.buf) < size + 2:
                self._fill()
            body = bytes(self.buf[:size])
            del self.buf[: size + 2]
        return line, body

    def close(self) -> None:
        self.sock.close()


def stamped_body() -> bytes:
    return (b"%.9f " % time.monotonic()).ljust(BODY_SIZE, b"x")


def stamp_of(body: bytes) -> float:
    return float(body.split(b" ", 1)[0])


class Tally:
    """What one client process counted inside the window."""

    def __init__(self, role: str, t0: float, t1: float) -> None:
        self.role, self.t0, self.t1 = role, t0, t1
        self.puts = self.deletes = self.timeouts = self.deadline_soon = self.errors = 0
        self.latencies: list[float] = []
        self.samples: list[str] = []
        self.fatal = ""

    def inside(self, t: float) -> bool:
        return self.t0 <= t < self.t1

    def error(self, exc: Exception) -> None:
        """Count a reply that was not the expected one; give up after too many."""
        self.errors += 1
        if len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append(f"{type(exc).__name__}: {exc}")
        if self.errors > MAX_ERRORS:
            raise RuntimeError(f"{self.errors} unexpected replies: giving up") from exc

    def result(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "puts": self.puts,
            "deletes": self.deletes,
            "timeouts": self.timeouts,
            "deadline_soon": self.deadline_soon,
            "errors": self.errors,
            "error_samples": self.samples,
            "fatal": self.fatal,
            "latencies": self.latencies,
        }


class UnexpectedReply(Exception):
    """A raw client's reply that was not the expected one."""


RECOVERABLE: tuple[type[Exception], ...] = (UnexpectedReply, greenstalk.Error, RouterError)
"""A reply the loops count and carry on after (up to MAX_ERRORS)."""


class Client:
    """One process's client, whatever its kind: ``use``/``put`` and ``reserve``/``delete``."""

    def setup(self, watch: list[str]) -> None:
        raise NotImplementedError

    def use(self, tube: str) -> None:
        raise NotImplementedError

    def put(self, body: bytes) -> None:
        raise NotImplementedError

    def reserve(self) -> tuple[Any, bytes] | str | None:
        """(handle, body); None on timeout; ``"deadline"`` on DEADLINE_SOON."""
        raise NotImplementedError

    def delete(self, handle: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class RawClient(Client):
    def __init__(self, ep: Endpoint) -> None:
        self.conn = Conn(ep.port)

    def _expect(self, data: bytes, word: bytes) -> tuple[bytes, bytes]:
        line, body = self.conn.cmd(data)
        if not line.startswith(word):
            raise UnexpectedReply(f"{data.split(b' ')[0].decode()}: {line!r}")
        return line, body

    def setup(self, watch: list[str]) -> None:
        for tube in watch:
            self._expect(b"watch %s\r\n" % tube.encode(), b"WATCHING")
        if watch:
            self._expect(b"ignore default\r\n", b"WATCHING")

    def use(self, tube: str) -> None:
        self._expect(b"use %s\r\n" % tube.encode(), b"USING")

    def put(self, body: bytes) -> None:
        self._expect(b"put 1024 0 %d %d\r\n%s\r\n" % (TTR, len(body), body), b"INSERTED")

    def reserve(self) -> tuple[Any, bytes] | str | None:
        line, body = self.conn.cmd(b"reserve-with-timeout 1\r\n")
        if line.startswith(b"RESERVED "):
            return line.split(b" ")[1], body
        if line == b"TIMED_OUT":
            return None
        if line == b"DEADLINE_SOON":
            return "deadline"
        raise UnexpectedReply(f"reserve-with-timeout: {line!r}")

    def delete(self, handle: Any) -> None:
        self._expect(b"delete %s\r\n" % handle, b"DELETED")

    def close(self) -> None:
        self.conn.close()


class GreenstalkClient(Client):
    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.client: greenstalk.Client[bytes] | None = None

    def setup(self, watch: list[str]) -> None:
        self.client = greenstalk.Client(
            (HOST, self.ep.port), encoding=None, watch=watch or "default"
        )

    def _c(self) -> greenstalk.Client[bytes]:
        assert self.client is not None
        return self.client

    def use(self, tube: str) -> None:
        self._c().use(tube)

    def put(self, body: bytes) -> None:
        self._c().put(body, priority=1024, ttr=TTR)

    def reserve(self) -> tuple[Any, bytes] | str | None:
        try:
            job = self._c().reserve(timeout=1)
        except greenstalk.TimedOutError:
            return None
        except greenstalk.DeadlineSoonError:
            return "deadline"
        return job, job.body

    def delete(self, handle: Any) -> None:
        self._c().delete(handle)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class RouterClient(Client):
    def __init__(self, ep: Endpoint) -> None:
        self.router = Router(ep.lines)

    def setup(self, watch: list[str]) -> None:
        for tube in watch:
            self.router.watch(tube)
        if watch:
            self.router.ignore("default")

    def use(self, tube: str) -> None:
        self.router.use(tube)

    def put(self, body: bytes) -> None:
        self.router.put(body, priority=1024, ttr=TTR)

    def reserve(self) -> tuple[Any, bytes] | str | None:
        try:
            job = self.router.reserve(timeout=1)
        except DeadlineSoon:
            return "deadline"
        return None if job is None else (job, job.body)

    def delete(self, handle: Any) -> None:
        handle.delete()

    def close(self) -> None:
        self.router.close()


CLIENTS: dict[str, Callable[[Endpoint], Client]] = {
    "raw": RawClient,
    "greenstalk": GreenstalkClient,
    "router": RouterClient,
}


def wait_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def produce(c: Client, tally: Tally, tubes: list[str], index: int, rate: float, t: float) -> None:
    """Alternate ``use`` + ``put`` over ``tubes`` until the window ends; ``rate`` 0: flat out."""
    i = index * 3  # the two producers start on different shards' tubes
    k = 0
    while time.monotonic() < tally.t1:
        if rate:
            wait_until(t + (k + index / PRODUCERS) / rate)
            k += 1
        try:
            c.use(tubes[i % len(tubes)])
            i += 1
            c.put(stamped_body())
        except RECOVERABLE as exc:
            tally.error(exc)
            continue
        if tally.inside(time.monotonic()):
            tally.puts += 1


def work(c: Client, tally: Tally) -> None:
    """Loop reserve (timeout 1 s) -> delete until the window ends."""
    while time.monotonic() < tally.t1:
        try:
            got = c.reserve()
            now = time.monotonic()
            if got is None:
                tally.timeouts += tally.inside(now)
            elif isinstance(got, str):
                tally.deadline_soon += 1
            else:
                handle, body = got
                if tally.inside(now):
                    tally.latencies.append(now - stamp_of(body))
                c.delete(handle)
                tally.deletes += tally.inside(time.monotonic())
        except RECOVERABLE as exc:
            tally.error(exc)


async def async_run(
    ep: Endpoint, role: str, watch: list[str], index: int, rate: float, sync: Sync, tally: Tally
) -> None:
    """The same loops as ``produce`` and ``work`` with one ``AsyncRouter`` in one task."""
    async with AsyncRouter(ep.lines) as r:
        for tube in watch:
            await r.watch(tube)
        if watch:
            await r.ignore("default")
        start = sync.ready_and_wait(tally)
        if role == "producer":
            i, k = index * 3, 0
            while time.monotonic() < tally.t1:
                if rate:
                    delay = start + (k + index / PRODUCERS) / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    k += 1
                try:
                    await r.use(sync.tubes[i % len(sync.tubes)])
                    i += 1
                    await r.put(stamped_body(), priority=1024, ttr=TTR)
                except RouterError as exc:
                    tally.error(exc)
                    continue
                if tally.inside(time.monotonic()):
                    tally.puts += 1
            return
        while time.monotonic() < tally.t1:
            try:
                job = await r.reserve(timeout=1)
                now = time.monotonic()
                if job is None:
                    tally.timeouts += tally.inside(now)
                    continue
                if tally.inside(now):
                    tally.latencies.append(now - stamp_of(job.body))
                await job.delete()
                tally.deletes += tally.inside(time.monotonic())
            except DeadlineSoon:
                tally.deadline_soon += 1
            except RouterError as exc:
                tally.error(exc)


@dataclass
class Sync:
    """What a client process shares with the harness."""

    tubes: list[str]
    out: Any  # multiprocessing Queue: ("ready", i), ("result", i, dict)
    go: Event
    times: Any  # multiprocessing Array of 3 doubles: start, window start, window end
    index: int

    def ready_and_wait(self, tally: Tally) -> float:
        self.out.put(("ready", self.index))
        if not self.go.wait(120):
            raise TimeoutError("no start signal")
        start, tally.t0, tally.t1 = self.times[:]
        wait_until(start)
        return float(start)


def client_main(
    kind: str, ep: Endpoint, role: str, watch: list[str], index: int, rate: float, sync: Sync
) -> None:
    """A client process: set up, report ready, run its loop in the window, report its tally."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    tally = Tally(role, float("inf"), float("inf"))
    c: Client | None = None
    try:
        if kind == "async":
            asyncio.run(async_run(ep, role, watch, index, rate, sync, tally))
        else:
            c = CLIENTS[kind](ep)
            c.setup(watch)
            start = sync.ready_and_wait(tally)
            if role == "producer":
                produce(c, tally, sync.tubes, index, rate, start)
            else:
                work(c, tally)
    except Exception as exc:
        tally.fatal = "".join(traceback.format_exception_only(exc)).strip()
    finally:
        if c is not None:
            with contextlib.suppress(Exception):
                c.close()
    sync.out.put(("result", index, tally.result()))


# ---- one run -----------------------------------------------------------------------------------


def proc_stat_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def backlog(ports: list[int], tubes: list[str]) -> int:
    """Ready jobs in ``tubes``, summed over ``ports`` (a tube a port does not know counts 0)."""
    total = 0
    for port in ports:
        conn = Conn(port)
        try:
            for tube in tubes:
                line, body = conn.cmd(b"stats-tube %s\r\n" % tube.encode())
                if line.startswith(b"OK"):
                    for row in body.decode().splitlines():
                        if row.startswith("current-jobs-ready:"):
                            total += int(row.split(":")[1])
        finally:
            conn.close()
    return total


@contextlib.contextmanager
def tube_keepers(ep: Endpoint, tubes: list[str]) -> Iterator[None]:
    """One idle connection per real shard watching every tube, so that the tubes outlive the
    clients and ``placement_check`` can read them after the run."""
    conns: list[Conn] = []
    try:
        for port in ep.shard_ports if len(ep.shard_ports) > 1 else []:
            conns.append(Conn(port))
            for tube in tubes:
                conns[-1].cmd(b"watch %s\r\n" % tube.encode())
        yield
    finally:
        for conn in conns:
            conn.close()


def placement_check(ep: Endpoint, owners: dict[str, str]) -> str | None:
    """ "ok" when every tube's jobs went to its ring owner only: read on the real shards
    (``total-jobs``), or for ``beanrouter cluster`` asked of its ``/route``; None: not checked."""
    wrong = []
    if ep.http_port is not None and not ep.shard_ports:  # (beanrouter cluster: its shards' own)
        for tube, owner in owners.items():
            url = f"http://{HOST}:{ep.http_port}/route?tube={tube}"
            with urllib.request.urlopen(url, timeout=10) as reply:
                puts_go_to = json.load(reply).get("puts_go_to")
            if puts_go_to != owner:
                wrong.append(f"{tube}: puts go to {puts_go_to} (owner {owner})")
    elif len(ep.shard_ports) > 1:
        for i, port in enumerate(ep.shard_ports):
            conn = Conn(port)
            try:
                for tube, owner in owners.items():
                    line, body = conn.cmd(b"stats-tube %s\r\n" % tube.encode())
                    jobs = 0
                    if line.startswith(b"OK"):
                        for row in body.decode().splitlines():
                            if row.startswith("total-jobs:"):
                                jobs = int(row.split(":")[1])
                    if (jobs > 0) != (owner == SHARD_NAMES[i]):
                        wrong.append(f"{tube}: {jobs} jobs on {SHARD_NAMES[i]} (owner {owner})")
            finally:
                conn.close()
    else:
        return None
    return "ok" if not wrong else "; ".join(wrong)


ROUTING_COUNTERS = (
    "deliveries_total", "looks_total", "looks_spared_total", "sweep_retries_total",
    "wait_cancels_total", "phantom_releases_total",
)  # fmt: skip
"""The proxy's routing counters a run reports (per job delivered), from its ``/metrics``."""


def routing_counters(ep: Endpoint) -> dict[str, float]:
    """The proxy's ``ROUTING_COUNTERS`` now (empty for targets without an HTTP port)."""
    if not ep.http_port:
        return {}
    try:
        with urllib.request.urlopen(f"http://{HOST}:{ep.http_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        short = name.removeprefix("beanrouter_")
        if short in ROUTING_COUNTERS:
            out[short] = float(value)
    return out


def run_load(
    target: str, load: str, args: argparse.Namespace, tubes: list[str], owners: dict[str, str],
    profile: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One target under one load, on fresh servers; the numbers of its window."""
    kind = {"router": "router", "async": "async", "greenstalk": "greenstalk"}.get(
        target.split("-")[0], "raw"
    )
    paced = load.endswith("-paced")
    rate = args.rate / PRODUCERS if paced else 0.0
    watches = [[t] for t in tubes] if load.startswith("single") else [list(tubes)] * 3
    roles: list[tuple[str, list[str], int]] = [("producer", [], p) for p in range(PRODUCERS)]
    roles += [("worker", w, PRODUCERS + i) for i, w in enumerate(watches)]
    res: dict[str, Any] = {"target": target, "load": load, "profiled": bool(profile)}
    with serve(target, f"{target} {load}", profile) as ep, tube_keepers(ep, tubes):
        out: Any = FORK.Queue()
        go = FORK.Event()
        times: Any = FORK.Array("d", 3)
        procs = []
        try:
            for role, watch, index in roles:
                sync = Sync(tubes, out, go, times, index)
                procs.append(FORK.Process(
                    target=client_main, args=(kind, ep, role, watch, index, rate, sync),
                    daemon=True,
                ))  # fmt: skip
                procs[-1].start()
            results: dict[int, dict[str, Any]] = {}
            ready = 0
            deadline = time.monotonic() + 60
            while ready < len(procs):
                msg = out.get(timeout=max(0.1, deadline - time.monotonic()))
                if msg[0] == "ready":
                    ready += 1
                else:  # failed during its set-up
                    results[msg[1]] = msg[2]
                    ready += 1
            start = time.monotonic() + 0.05
            t0 = start + args.warmup
            t1 = t0 + args.seconds
            times[:] = [start, t0, t1]
            go.set()
            wait_until(t0)
            cpu0 = cpu_seconds(ep.relay_pid) if ep.relay_pid else 0.0
            busy0 = proc_stat_busy()
            counters0 = routing_counters(ep)
            wait_until(t1)
            cpu1 = cpu_seconds(ep.relay_pid) if ep.relay_pid else 0.0
            busy1 = proc_stat_busy()
            counters1 = routing_counters(ep)
            res["routing"] = {k: v - counters0.get(k, 0.0) for k, v in counters1.items()}
            res["backlog"] = backlog(ep.stat_ports, tubes)
            while len(results) < len(procs):
                msg = out.get(timeout=max(0.1, t1 + 30 - time.monotonic()))
                if msg[0] == "result":
                    results[msg[1]] = msg[2]
            for p in procs:
                p.join(10)
            res["placement"] = placement_check(ep, owners)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
    tallies = list(results.values())
    lat = sorted(x for t in tallies for x in t["latencies"])
    res.update(
        seconds=args.seconds,
        jobs_s=sum(t["deletes"] for t in tallies) / args.seconds,
        puts_s=sum(t["puts"] for t in tallies) / args.seconds,
        p50_ms=pct(lat, 0.5) * 1e3 if lat else None,
        p99_ms=pct(lat, 0.99) * 1e3 if lat else None,
        samples=len(lat),
        timeouts=sum(t["timeouts"] for t in tallies),
        deadline_soon=sum(t["deadline_soon"] for t in tallies),
        errors=sum(t["errors"] for t in tallies),
        error_samples=[s for t in tallies for s in t["error_samples"]][:MAX_ERROR_SAMPLES],
        fatal=[f"{t['role']}: {t['fatal']}" for t in tallies if t["fatal"]],
        relay_cpu=(cpu1 - cpu0) / args.seconds if ep.relay_pid else None,
        machine_busy=(busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]),
    )
    return res


# ---- report ------------------------------------------------------------------------------------


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def ratio(res: dict[str, Any], base: dict[str, Any] | None) -> str:
    if base is None or not base["jobs_s"]:
        return "-"
    return f"{res['jobs_s'] / base['jobs_s']:.2f}"


def line_of(res: dict[str, Any], bases: list[dict[str, Any] | None]) -> str:
    lat = f"{fmt(res['p50_ms'], '.2f')} / {fmt(res['p99_ms'], '.2f')}"
    cpu = "-" if res["relay_cpu"] is None else f"{res['relay_cpu'] * 100:.0f}%"
    cells = [
        res["target"],
        fmt(res["jobs_s"]),
        *(ratio(res, b) for b in bases),
        fmt(res["puts_s"]),
        lat,
        f"{res['backlog']:,}",
        f"{res['timeouts']:,}",
        cpu,
        f"{res['machine_busy'] * 100:.0f}%",
    ]
    return "| " + " | ".join(cells) + " |"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    by = {(r["target"], r["load"]): r for r in results if not r["profiled"]}
    paced_note = f"producers held to {args.rate:g} jobs/s in all"
    what = {
        "single": "single-tube, flat out (2 producers, 6 workers: one per tube)",
        "multi": "multi-tube, flat out (2 producers, 3 workers: each watches all 6 tubes)",
        "single-paced": f"single-tube, paced ({paced_note})",
        "multi-paced": f"multi-tube, paced ({paced_note})",
    }
    head = (
        "| target | jobs/s | / beanstalkd | / HAProxy | puts/s | put→reserve p50 / p99 ms "
        "| backlog | TIMED_OUT | relay CPU | machine busy |"
    )
    for load in PROTOCOL_LOADS:
        rows = [by[(t, load)] for t in PROTOCOL_TARGETS if (t, load) in by]
        if not rows:
            continue
        print(f"\n{what[load]}\n\n{head}\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        bases = [by.get(("beanstalkd", load)), by.get(("haproxy", load))]
        for r in rows:
            print(line_of(r, bases))
        for r in rows:
            routing = r.get("routing") or {}
            jobs = routing.get("deliveries_total", 0.0)
            if jobs:
                per = ", ".join(
                    f"{k.removesuffix('_total').replace('_', ' ')} {v / jobs:.2f}"
                    for k, v in routing.items()
                    if k != "deliveries_total"
                )
                print(f"\n{r['target']}: per job delivered: {per}")
    lhead = (
        "| client | jobs/s | / greenstalk | puts/s | put→reserve p50 / p99 ms | backlog "
        "| TIMED_OUT | relay CPU | machine busy |"
    )
    for load in LIBRARY_LOADS:
        rows = [by[(t, load)] for t in LIBRARY_TARGETS if (t, load) in by]
        if not rows:
            continue
        shape = "flat out" if load == "single" else f"paced ({paced_note})"
        print(f"\nlibrary, single-tube, {shape}: every producer and worker a library client\n")
        print(f"{lhead}\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        base = by.get(("greenstalk", load))
        for r in rows:
            print(line_of(r, [base]))


def problems(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        name = f"{r['target']} {r['load']}" + (" (profiled)" if r["profiled"] else "")
        if r.get("start_error"):
            out.append(f"{name}: did not start: {r['start_error']}")
            continue
        if r["errors"]:
            out.append(f"{name}: {r['errors']} unexpected replies, e.g. {r['error_samples']}")
        if r["deadline_soon"]:
            out.append(f"{name}: {r['deadline_soon']} DEADLINE_SOON")
        out.extend(f"{name}: client failed: {f}" for f in r["fatal"])
        if r.get("placement") not in (None, "ok"):
            out.append(f"{name}: placement: {r['placement']}")
    return out


# ---- main --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured window per run (5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds before the window (1)")
    ap.add_argument("--rate", type=float, default=400.0, help="paced: jobs/s in all (400)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny windows")
    ap.add_argument("--only", help="targets, comma-separated: " + ",".join(
        PROTOCOL_TARGETS + LIBRARY_TARGETS))  # fmt: skip
    ap.add_argument("--loads", help="loads, comma-separated: " + ",".join(PROTOCOL_LOADS))
    ap.add_argument("--profile", metavar="FILE", help="cProfile the proxy (proxy-3, single)")
    ap.add_argument(
        "--profile-load",
        default="single",
        choices=PROTOCOL_LOADS,
        help="the load of the --profile run (single)",
    )
    ap.add_argument("--json", metavar="FILE", help="save the results")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.warmup = 0.5, 0.3
    targets = list(PROTOCOL_TARGETS + LIBRARY_TARGETS)
    if args.only:
        chosen = [t.strip() for t in args.only.split(",") if t.strip()]
        unknown = [t for t in chosen if t not in targets]
        if unknown:
            ap.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(targets)}")
        targets = [t for t in targets if t in chosen]
    loads = list(PROTOCOL_LOADS)
    if args.loads:
        loads = [x.strip() for x in args.loads.split(",") if x.strip()]
        unknown = [x for x in loads if x not in PROTOCOL_LOADS]
        if unknown:
            ap.error(f"unknown load(s) {', '.join(unknown)}; known: {', '.join(PROTOCOL_LOADS)}")
    for binary in (BEANSTALKD, HAPROXY):
        if not os.access(binary, os.X_OK) and (binary == BEANSTALKD or "haproxy" in targets):
            print(f"worker_load: {binary} is missing", file=sys.stderr)
            return 1

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    tubes, owners = pick_tubes()
    began = time.monotonic()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"window {args.seconds:g} s after {args.warmup:g} s of warm-up; 100-byte bodies, "
          f"TTR {TTR}; paced: {args.rate:g} jobs/s in all")  # fmt: skip
    print("tubes (ketama over shard-0..2, used for proxy-3, cluster-3, router-3, async-3): "
          + "; ".join(f"{n}: {', '.join(t for t in tubes if owners[t] == n)}"
                      for n in SHARD_NAMES))  # fmt: skip
    results: list[dict[str, Any]] = []
    interrupted = False
    plan = []
    for target in targets:
        allowed = LIBRARY_LOADS if target in LIBRARY_TARGETS else PROTOCOL_LOADS
        plan += [(target, load) for load in loads if load in allowed]
    if args.profile:
        plan.append(("proxy-3", args.profile_load))
    try:
        for n, (target, load) in enumerate(plan):
            profiled = args.profile if args.profile and n == len(plan) - 1 else None
            label = f"{target} {load}" + (" (proxy under cProfile)" if profiled else "")
            print(f"  {label} ...", end=" ", flush=True)
            try:
                res = run_load(target, load, args, tubes, owners, profiled)
            except Exception as exc:  # a server that did not start, a client that hung: go on
                print(f"failed: {exc}")
                results.append({"target": target, "load": load, "profiled": bool(profiled),
                                "start_error": str(exc)})  # fmt: skip
                continue
            results.append(res)
            print(f"{res['jobs_s']:,.0f} jobs/s, p50 {fmt(res['p50_ms'], '.2f')} ms, "
                  f"backlog {res['backlog']:,}")  # fmt: skip
    except KeyboardInterrupt:
        print("\ninterrupted: every process started was stopped; partial results follow")
        interrupted = True
    ok = [r for r in results if not r.get("start_error")]
    print(f"\nload average after the runs {os.getloadavg()[0]:.2f}; "
          f"{time.monotonic() - began:.0f} s in all")  # fmt: skip
    report(ok, args)
    print("\nratios: jobs/s over beanstalkd direct's (library: over greenstalk's) and over "
          "HAProxy's, same load, same run; latency: put sent -> RESERVED read (flat out: mostly "
          "time in the backlog); backlog: ready jobs left in the 6 tubes at the window's end; "
          "relay CPU: the proxy's or HAProxy's process, % of one core; machine busy: all CPUs "
          "(other processes included)")  # fmt: skip
    checked = [r for r in ok if r.get("placement") is not None]
    if checked:
        good = sum(r["placement"] == "ok" for r in checked)
        print(f"placement of the 6 tubes (2 per shard): as computed in {good} of "
              f"{len(checked)} checked runs (3 beanstalkd shards: jobs counted on each; "
              "cluster-3: its /route)")  # fmt: skip
    trouble = problems(results)
    for msg in trouble:
        print(f"note: {msg}")
    for server, text in MESSAGES:
        lines = [x for x in text.splitlines() if ": INFO: " not in x]
        if not lines:
            continue
        print(f"note: {server} wrote {len(lines)} line(s), e.g.: " + " | ".join(lines[:3]))
    if args.profile and any(r["profiled"] for r in ok):
        print(f"\nprofile of the proxy over 3 shards, load {args.profile_load} "
              f"({args.profile}), top 25 by own time:")  # fmt: skip
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    if args.json:
        clean = [{k: v for k, v in r.items() if k != "latencies"} for r in results]
        Path(args.json).write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "tubes": owners, "args": vars(args), "results": clean,
        }, indent=2) + "\n")  # fmt: skip
    if interrupted:
        return 130
    failed = any(r.get("start_error") or r.get("fatal") for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
