#!/usr/bin/env python3
"""Benchmark ``beanrouter proxy`` against the beanstalkd behind it, in the same run.

Every measurement runs against beanstalkd direct and then through a proxy in front of one
beanstalkd (a fresh beanstalkd for each side), so each ratio proxy / direct comes from one run on
one machine state. Clients are raw sockets (stdlib only); 100-byte bodies.

* pipelined put: one connection, ``--jobs`` puts written in batches of 250, at most 1000 in
  flight -> put/s;
* pipelined reserve+delete: the same connection drains them, each ``RESERVED`` answered at once
  by ``delete <id>``, 100 pairs in flight -> pairs/s;
* round trips: ``--clients`` processes, each looping put -> reserve -> delete one command at a
  time for ``--seconds`` -> cycles/s;
* latency: one connection, one command at a time (put, reserve, delete, stats-tube, peek-ready),
  ``--samples`` of each -> p50/p99 per command and what the proxy adds;
* 3 shards behind ``--workers 2``: the round trips and a pipelined put (each client in its own
  tube, so all three shards work), against one beanstalkd direct;
* PHP-style load: ``--clients`` processes, each opening short connections for ``--seconds``
  (connect, ``use``, ``put``, ``quit``, close) -> connections/s; against one beanstalkd direct,
  the proxy in front of it, and the 3-shard ``--workers 2`` proxy;
* for the single-shard proxy, the CPU its process used per operation (``/proc``, Linux): less
  sensitive to the machine's load than the rates;
* ``--profile FILE``: the single-shard proxy runs under cProfile (its numbers are then not the
  ones to compare) and the top functions by own time are printed.

Exits 0 whatever the ratios (targets: >= 0.5 for put, reserve+delete and round trips).

    python3 benchmarks/proxy_bench.py                 # ~2 minutes on a 2-core machine
    python3 benchmarks/proxy_bench.py --quick         # a few seconds
    python3 benchmarks/proxy_bench.py --profile /tmp/proxy.prof
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BODY = b"x" * 100
BEANSTALKD = os.environ.get("BEANSTALKD_BIN", "/usr/bin/beanstalkd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=5) as s:
                s.sendall(b"list-tube-used\r\n")
                if s.recv(100).startswith(b"USING"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing answered on {port}")


@contextlib.contextmanager
def process(argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO_ROOT), env.get("PYTHONPATH")) if x)
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def beanstalkd() -> Iterator[int]:
    port = free_port()
    with process([BEANSTALKD, "-l", HOST, "-p", str(port)], port):
        yield port


@contextlib.contextmanager
def proxy(shard_ports: list[int], workers: int = 1, profile: str | None = None) -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cluster.yaml"
        lines = [f"  - {HOST}:{p} s{i} id={i}" for i, p in enumerate(shard_ports)]
        config.write_text("servers:\n" + "\n".join(lines) + "\nconnect_timeout: 10\n")
        py = [sys.executable]
        if profile is not None:
            py += ["-m", "cProfile", "-o", profile]
        argv = [*py, "-m", "beanrouter", "proxy", "--config", str(config), "-p", str(port)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        with process(argv, port) as proc:
            PIDS[port] = proc.pid
            yield port


@contextlib.contextmanager
def relay(shard_port: int) -> Iterator[int]:
    """``benchmarks/relay.py`` in front of ``shard_port``: the floor of an asyncio proxy."""
    port = free_port()
    argv = [sys.executable, str(REPO_ROOT / "benchmarks" / "relay.py"), str(port), str(shard_port)]
    with process(argv, port) as proc:
        PIDS[port] = proc.pid
        yield port


PIDS: dict[int, int] = {}
"""Proxy port -> its process id (for the CPU it used)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- a minimal client ------------------------------------------------------------------------


class Conn:
    """Raw socket; replies parsed just enough (first line, and a job body after RESERVED)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2 :]
                return line
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def reply(self) -> bytes:
        line = self.line()
        if line.startswith((b"RESERVED ", b"FOUND ", b"OK ")):
            size = int(line.rsplit(b" ", 1)[1])
            while len(self.buf) < size + 2:
                chunk = self.sock.recv(262144)
                if not chunk:
                    raise ConnectionError("closed")
                self.buf += chunk
            self.buf = self.buf[size + 2 :]
        return line

    def cmd(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


PUT = b"put 0 0 120 %d\r\n%s\r\n" % (len(BODY), BODY)


def pipelined_put(port: int, jobs: int, tube: bytes = b"default") -> float:
    c = Conn(port)
    assert c.cmd(b"use %s\r\n" % tube).startswith(b"USING")
    start = time.perf_counter()
    sent = acked = 0
    while acked < jobs:
        while sent < jobs and sent - acked < 1000:
            n = min(250, jobs - sent)
            c.sock.sendall(PUT * n)
            sent += n
        for _ in range(min(250, sent - acked)):
            assert c.reply().startswith(b"INSERTED")
            acked += 1
    elapsed = time.perf_counter() - start
    c.close()
    return jobs / elapsed


def pipelined_reserve_delete(port: int, jobs: int) -> float:
    c = Conn(port)
    start = time.perf_counter()
    c.sock.sendall(b"reserve-with-timeout 5\r\n" * min(100, jobs))
    asked = min(100, jobs)
    done = 0
    while done < jobs:
        line = c.reply()
        if line.startswith(b"RESERVED"):
            job_id = line.split(b" ")[1]
            more = b"reserve-with-timeout 5\r\n" if asked < jobs else b""
            asked += 1 if more else 0
            c.sock.sendall(b"delete %s\r\n%s" % (job_id, more))
        elif line == b"DELETED":
            done += 1
        else:
            raise AssertionError(line)
    elapsed = time.perf_counter() - start
    c.close()
    return jobs / elapsed


def _cycles(port: int, seconds: float, tube: bytes, start_at: float, out: Any) -> None:
    c = Conn(port)
    c.cmd(b"use %s\r\n" % tube)
    c.cmd(b"watch %s\r\n" % tube)
    c.cmd(b"ignore default\r\n")
    while time.time() < start_at:
        time.sleep(0.001)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        assert c.cmd(PUT).startswith(b"INSERTED")
        line = c.cmd(b"reserve-with-timeout 5\r\n")
        assert line.startswith(b"RESERVED"), line
        assert c.cmd(b"delete %s\r\n" % line.split(b" ")[1]) == b"DELETED"
        n += 1
    c.close()
    out.put(n)


def _short_connections(port: int, seconds: float, tube: bytes, start_at: float, out: Any) -> None:
    while time.time() < start_at:
        time.sleep(0.001)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        c = Conn(port)
        c.sock.sendall(b"use %s\r\n" % tube)
        assert c.reply().startswith(b"USING")
        c.sock.sendall(PUT)
        assert c.reply().startswith(b"INSERTED")
        c.sock.sendall(b"quit\r\n")
        c.close()
        n += 1
    out.put(n)


def parallel(target: Callable[..., None], port: int, clients: int, seconds: float) -> float:
    """``clients`` processes running ``target`` at once, each on its own tube; total per second."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.3
    procs = [
        ctx.Process(target=target, args=(port, seconds, b"bench%d" % i, start_at, out))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    total = float(sum(out.get(timeout=seconds + 120) for _ in procs))
    for p in procs:
        p.join(30)
    return total / seconds if seconds else total  # seconds 0: each reports its own rate


def latencies(port: int, samples: int) -> dict[str, list[float]]:
    c = Conn(port)
    c.cmd(b"use lat\r\n")
    c.cmd(b"watch lat\r\n")
    c.cmd(b"ignore default\r\n")
    out: dict[str, list[float]] = {
        k: [] for k in ("put", "reserve", "delete", "stats-tube", "peek-ready")
    }
    clock = time.perf_counter
    for _ in range(samples):
        t = clock()
        assert c.cmd(PUT).startswith(b"INSERTED")
        out["put"].append(clock() - t)
        t = clock()
        assert c.cmd(b"peek-ready\r\n").startswith(b"FOUND")
        out["peek-ready"].append(clock() - t)
        t = clock()
        line = c.cmd(b"reserve-with-timeout 5\r\n")
        out["reserve"].append(clock() - t)
        t = clock()
        assert c.cmd(b"delete %s\r\n" % line.split(b" ")[1]) == b"DELETED"
        out["delete"].append(clock() - t)
        t = clock()
        assert c.cmd(b"stats-tube lat\r\n").startswith(b"OK")
        out["stats-tube"].append(clock() - t)
    c.close()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- the run ---------------------------------------------------------------------------------


def single(port: int, args: argparse.Namespace) -> dict[str, Any]:
    """The single-shard measurements; through a proxy, also its CPU per operation (µs)."""
    pid = PIDS.get(port)
    cpu: dict[str, float] = {}

    def measured(key: str, run: Callable[[], float], count: Callable[[float], float]) -> float:
        before = cpu_seconds(pid) if pid else 0.0
        rate = run()
        if pid:
            cpu[key] = (cpu_seconds(pid) - before) / max(1.0, count(rate)) * 1e6
        return rate

    put = measured("put", lambda: pipelined_put(port, args.jobs), lambda _: args.jobs)
    rd = measured(
        "reserve+delete", lambda: pipelined_reserve_delete(port, args.jobs), lambda _: args.jobs
    )
    rt = measured(
        "round trips",
        lambda: parallel(_cycles, port, args.clients, args.seconds),
        lambda rate: rate * args.seconds,
    )
    lat = latencies(port, args.samples)
    php = measured(
        "php",
        lambda: parallel(_short_connections, port, args.clients, args.seconds),
        lambda rate: rate * args.seconds,
    )
    return {
        "put": put,
        "reserve+delete": rd,
        "round trips": rt,
        "latency": lat,
        "php": php,
        "cpu": cpu,
    }


def sharded(port: int, args: argparse.Namespace) -> dict[str, Any]:
    puts = parallel(_put_worker, port, 3, 0)  # 3 tubes: one pipelined producer each
    rt = parallel(_cycles, port, args.clients, args.seconds)
    php = parallel(_short_connections, port, args.clients, args.seconds)
    return {"put x3": puts, "round trips": rt, "php": php}


_JOBS = 0

RATES = (
    ("put", "put/s", "put"),
    ("reserve+delete", "pairs/s", "pair"),
    ("round trips", "cycles/s", "cycle"),
)
"""The measurements with a target: key, unit, and what the CPU is counted per."""


def _put_worker(port: int, seconds: float, tube: bytes, start_at: float, out: Any) -> None:
    while time.time() < start_at:
        time.sleep(0.001)
    start = time.perf_counter()
    pipelined_put(port, _JOBS, tube)
    out.put(_JOBS / (time.perf_counter() - start))


def main() -> int:
    global _JOBS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", metavar="FILE")
    ap.add_argument(
        "--relay",
        action="store_true",
        help="also measure benchmarks/relay.py (a byte relay: the floor of an asyncio proxy)",
    )
    args = ap.parse_args()
    if args.quick:
        args.jobs, args.seconds, args.samples = 2000, 0.5, 200
    _JOBS = args.jobs // 3
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip

    with beanstalkd() as port:
        direct = single(port, args)
    with beanstalkd() as shard, proxy([shard], profile=args.profile) as port:
        via = single(port, args)
    floor: dict[str, Any] = {}
    if args.relay:
        with beanstalkd() as shard, relay(shard) as port:
            floor = single(port, args)
    with beanstalkd() as port:
        direct3 = sharded(port, args)
    with beanstalkd() as a, beanstalkd() as b, beanstalkd() as c, proxy([a, b, c], 2) as port:
        via3 = sharded(port, args)

    cpu = via["cpu"]
    print(f"load after the runs {os.getloadavg()[0]:.2f}")
    print("\n| measurement | direct | proxy | proxy / direct | target | proxy CPU per op |")
    print("|---|---:|---:|---:|---|---:|")
    for key, unit, per in RATES:
        r = via[key] / direct[key]
        mark = "met" if r >= 0.5 else "**missed**"
        print(f"| {key} | {direct[key]:,.0f} {unit} | {via[key]:,.0f} | **{r:.2f}** | "
              f">= 0.5 {mark} | {cpu.get(key, 0):,.0f} µs/{per} |")  # fmt: skip
    if floor:
        print("\n| byte relay (the floor) | direct | relay | relay / direct | relay CPU per op |")
        print("|---|---:|---:|---:|---:|")
        for key, unit, per in (*RATES, ("php", "conn/s", "conn")):
            r = floor[key] / direct[key]
            print(f"| {key} | {direct[key]:,.0f} {unit} | {floor[key]:,.0f} | **{r:.2f}** | "
                  f"{floor['cpu'].get(key, 0):,.0f} µs/{per} |")  # fmt: skip
        print()
    php = via["php"] / direct["php"]
    print(f"| PHP-style conns | {direct['php']:,.0f} conn/s | {via['php']:,.0f} | "
          f"**{php:.2f}** | | {cpu.get('php', 0):,.0f} µs/conn |")  # fmt: skip
    for key, unit in (("put x3", "put/s"), ("round trips", "cycles/s"), ("php", "conn/s")):
        r = via3[key] / direct3[key]
        print(f"| 3 shards, --workers 2: {key} | {direct3[key]:,.0f} {unit} | "
              f"{via3[key]:,.0f} | **{r:.2f}** | |")  # fmt: skip
    print("\n| command | direct p50 / p99 (µs) | proxy p50 / p99 (µs) | added p50 / p99 (µs) |")
    print("|---|---:|---:|---:|")
    for cmd in direct["latency"]:
        d, v = direct["latency"][cmd], via["latency"][cmd]
        d50, d99, v50, v99 = (pct(x, q) * 1e6 for x in (d, v) for q in (0.5, 0.99))
        print(f"| {cmd} | {d50:.0f} / {d99:.0f} | {v50:.0f} / {v99:.0f} | "
              f"{v50 - d50:.0f} / {v99 - d99:.0f} |")  # fmt: skip
    if args.profile:
        print(f"\nprofile of the single-shard proxy ({args.profile}), top 25 by own time:")
        stats = pstats.Stats(args.profile)
        stats.sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
