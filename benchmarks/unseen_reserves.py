#!/usr/bin/env python3
"""Counters a client reads through the proxy under a blocking cross-shard load.

Starts ``beanrouter cluster --shards N`` (bundled shards and a proxy, with its HTTP port) on free
loopback ports. Producers put paced jobs over many tubes; consumers watch every tube and loop
``reserve-with-timeout 1`` -> ``stats-job`` -> ``delete``, so they mostly wait on every shard at
once and each delivery cancels the waits on the other shards. Reported: the first deliveries
whose ``stats-job`` showed ``reserves`` > 1 (one beanstalkd shows 1: Laravel counts a job's
attempts with it), and the proxy's ``wait_cancels`` and ``unseen_reserves`` (``/metrics``).

    python3 benchmarks/unseen_reserves.py   # 3 shards, 3 x 50 puts/s, 4 consumers, 10 s
    python3 benchmarks/unseen_reserves.py --seconds 30 --rate 200
    python3 benchmarks/unseen_reserves.py --workers 2   # bundled shards, ``proxy --workers 2``

With ``--workers N`` the shards are ``beanrouter server`` processes and the proxy is ``beanrouter
proxy --workers N``: a consumer's connection lands on either worker, so a job reserved unseen
through one is often delivered through another (the workers share their unseen counters).

Exits 1 when a put was not acknowledged or a job was not delivered, else 0 (whatever the counts).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")

    def line(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.file.readline()

    def body(self, header: bytes) -> bytes:
        size = int(header.split()[-1])
        return self.file.read(size + 2)[:-2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=50.0, help="puts/s per producer")
    ap.add_argument("--consumers", type=int, default=4)
    ap.add_argument("--tubes", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1, help="N > 1: proxy --workers N")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        return start(args, stack)


def spawn(argv: list[str], stack: contextlib.ExitStack) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "beanrouter", *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        proc.terminate()
        proc.wait(30)

    stack.callback(stop)
    return proc


@contextlib.contextmanager
def _config(ports: list[int]) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        lines = [f"  - 127.0.0.1:{p} s{i} id={i}" for i, p in enumerate(ports)]
        path.write_text("servers:\n" + "\n".join(lines) + "\n")
        yield str(path)


def start(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    port, http = free_port(), free_port()
    while any(_taken(http + i) for i in range(1, args.workers)):  # (worker i serves http + i)
        http = free_port()
    if args.workers > 1:
        shards = [free_port() for _ in range(args.shards)]
        for p in shards:
            spawn(["server", "-l", "127.0.0.1", "-p", str(p)], stack)
        path = stack.enter_context(_config(shards))
        argv = ["proxy", "--config", path, "-p", str(port), "--workers", str(args.workers)]
    else:
        argv = ["cluster", "--shards", str(args.shards), "-p", str(port)]
    proc = spawn([*argv, "--http-port", str(http)], stack)
    deadline = time.monotonic() + 30
    while True:
        try:
            Client(port).sock.close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                print("the cluster did not start", file=sys.stderr)
                return 1
            time.sleep(0.1)
    time.sleep(1.0 if args.workers > 1 else 0.0)  # (every worker listening)
    return run(args, port, [http + i for i in range(args.workers)])


def _taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def run(args: argparse.Namespace, port: int, https: list[int]) -> int:
    tubes = [b"t%d" % i for i in range(args.tubes)]
    stop = time.monotonic() + args.seconds
    lock = threading.Lock()
    acked: set[bytes] = set()
    first: dict[bytes, int] = {}  # body -> reserves at its first delivery
    errors: list[str] = []

    def producer(k: int) -> None:
        c = Client(port)
        interval = 1.0 / args.rate
        n = 0
        nxt = time.monotonic()
        while time.monotonic() < stop:
            c.line(b"use " + random.choice(tubes) + b"\r\n")
            body = b"%d-%d" % (k, n)
            n += 1
            reply = c.line(b"put 0 0 30 %d\r\n%s\r\n" % (len(body), body))
            if not reply.startswith(b"INSERTED"):
                with lock:
                    errors.append(f"put: {reply!r}")
                return
            with lock:
                acked.add(body)
            nxt += interval
            time.sleep(max(0.0, nxt - time.monotonic()))

    def consumer() -> None:
        c = Client(port)
        for tube in tubes:
            c.line(b"watch " + tube + b"\r\n")
        c.line(b"ignore default\r\n")
        while True:
            reply = c.line(b"reserve-with-timeout 1\r\n")
            if reply.startswith(b"TIMED_OUT"):
                if time.monotonic() > stop + 2:
                    return
                continue
            if not reply.startswith(b"RESERVED"):
                with lock:
                    errors.append(f"reserve: {reply!r}")
                return
            job_id = int(reply.split()[1])
            body = c.body(reply)
            stats = c.body(c.line(b"stats-job %d\r\n" % job_id))
            reserves = int(stats.split(b"\nreserves: ")[1].split(b"\n")[0])
            with lock:
                first.setdefault(body, reserves)
            c.line(b"delete %d\r\n" % job_id)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(args.producers)]
    threads += [threading.Thread(target=consumer) for _ in range(args.consumers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    metrics: dict[str, float] = {}
    for http in https:  # (summed over the workers)
        text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10).read()
        for line in text.decode().splitlines():
            if line.startswith("beanrouter_") and " " in line and "{" not in line:
                name, value = line.rsplit(" ", 1)
                metrics[name] = metrics.get(name, 0.0) + float(value)
    over = sum(1 for r in first.values() if r > 1)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}; "
        f"{args.shards} shards, {args.workers} proxy process(es), "
        f"{args.producers} x {args.rate:g} puts/s, "
        f"{args.consumers} consumers, {args.tubes} tubes, {took:.0f} s"
    )
    print(
        "| acked | delivered | first deliveries with reserves > 1 | wait cancels "
        "| unseen reserves |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {len(acked)} | {len(first)} | {over} ({100 * over / max(1, len(first)):.2f} %) "
        f"| {metrics.get('beanrouter_wait_cancels_total', 0):.0f} "
        f"| {metrics.get('beanrouter_unseen_reserves_total', 0):.0f} |"
    )
    missing = acked - set(first)
    if errors or missing:
        print(f"errors: {errors[:3]}; undelivered: {len(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
