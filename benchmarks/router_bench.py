"""Router benchmarks: put throughput, cross-shard reserve wake-up latency, idle command rate.

    python benchmarks/router_bench.py [--backend beanstalkd|bundled] [--puts N] [--samples N]

1. put throughput: ``Router.put`` (one-shard and three-shard clusters) vs greenstalk direct to one
   server, same body, same tube, one connection each.
2. wake-up latency with 4 shards: a consumer process blocks in ``reserve()`` watching one tube per
   shard; the producer puts on a random one of them; latency = put start -> reserve return
   (CLOCK_MONOTONIC, shared by the two processes).
3. idle command rate: an idle consumer in a ``reserve(timeout=1)`` loop; reserve commands each
   shard received per second and per ``reserve`` call (cmd-reserve + cmd-reserve-with-timeout).

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beanrouter.protocol import Ok, parse_mapping  # noqa: E402
from beanrouter.router import Router  # noqa: E402
from beanrouter.router.connection import Connection  # noqa: E402
from beanrouter.router.ring import Placement  # noqa: E402

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def start(backend: str, count: int) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    procs, ports = [], []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for _ in range(count):
        port = free_port()
        flags = ["-l", HOST, "-p", str(port)]
        argv = (
            ["/usr/bin/beanstalkd", *flags]
            if backend == "beanstalkd"
            else [sys.executable, "-m", "beanrouter", "server", *flags]
        )
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))  # fmt: skip
        ports.append(port)
    for port in ports:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    return procs, ports


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def shard_stats(port: int) -> dict[str, object]:
    conn = Connection.open("bench", HOST, port, 2, 5)
    try:
        (reply,) = conn.request(b"stats\r\n")
    finally:
        conn.close()
    assert isinstance(reply, Ok)
    return dict(parse_mapping(reply.body))


def bench_put(backend: str, n: int, rounds: int = 10) -> None:
    """Interleaved rounds (greenstalk, then each Router setup) so machine noise hits all alike."""
    import greenstalk

    body = b"x" * 100
    chunk = max(1, n // rounds)
    procs, ports = start(backend, 3)
    rates: dict[str, list[float]] = {}
    # Every client talks to the same server process (ports[0]): the 3-shard router uses a tube
    # that server owns, so only client-side costs differ.
    placement = Placement([(f"s{i}", 1) for i in range(3)])
    tube = next(f"b{i}" for i in range(10_000) if placement.owner(f"b{i}") == "s0")
    try:
        client = greenstalk.Client((HOST, ports[0]), encoding=None, use=tube)
        routers = {
            "Router, 1 shard": Router([f"{HOST}:{ports[0]} a id=0"]),
            "Router, 3 shards": Router([f"{HOST}:{p} s{i}" for i, p in enumerate(ports)]),
        }
        for r in routers.values():
            r.use(tube)
            r.put(body)
        client.put(body)
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(chunk):
                client.put(body)
            rates.setdefault("greenstalk, one server", []).append(chunk / (time.perf_counter() - t))
            for label, r in routers.items():
                t = time.perf_counter()
                for _ in range(chunk):
                    r.put(body)
                rates.setdefault(label, []).append(chunk / (time.perf_counter() - t))
        client.close()
        for r in routers.values():
            r.close()
    finally:
        stop(procs)
    base = rates["greenstalk, one server"]
    print(f"put throughput ({backend}, {rounds} interleaved rounds of {chunk} puts of 100 bytes):")
    for label, values in rates.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"  {label:24s} median {statistics.median(values):8.0f} puts/s,"
            f" best {max(values):8.0f}; median ratio {statistics.median(ratios):.2f}x greenstalk"
        )


def _consumer(lines: list[str], tubes: list[str], out: Pipe) -> None:
    with Router(lines) as r:
        for tube in tubes:
            r.watch(tube)
        r.ignore("default")
        out.send("ready")
        while True:
            job = r.reserve()
            assert job is not None
            now = time.perf_counter()
            if job.body == b"stop":
                job.delete()
                return
            out.send((job.body, now))
            job.delete()


def _baseline_consumer(port: int, out: Pipe) -> None:
    import greenstalk

    client = greenstalk.Client((HOST, port), encoding=None, watch="w")
    out.send("ready")
    while True:
        job = client.reserve()
        now = time.perf_counter()
        client.delete(job)
        if job.body == b"stop":
            return
        out.send((job.body, now))


def bench_wakeup(backend: str, samples: int) -> None:
    """Router consumer over 4 shards, then greenstalk on one server as the machine's baseline."""
    procs, ports = start(backend, 4)
    names = [f"s{i}" for i in range(4)]
    lines = [f"{HOST}:{p} {n}" for n, p in zip(names, ports, strict=True)]
    placement = Placement([(n, 1) for n in names])
    tubes = []
    for owner in names:
        tubes.append(next(f"w{i}" for i in range(10_000) if placement.owner(f"w{i}") == owner))
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_consumer, args=(lines, tubes, child))
    proc.start()
    try:
        assert parent.recv() == "ready"
        lat = []
        rng = random.Random(1)
        with Router(lines) as r:
            for i in range(samples + 20):
                time.sleep(rng.uniform(0.002, 0.005))  # the consumer is blocked again
                r.use(rng.choice(tubes))
                t0 = time.perf_counter()
                r.put(str(i).encode())
                body, t1 = parent.recv()
                assert body == str(i).encode()
                if i >= 20:
                    lat.append((t1 - t0) * 1000)
            r.use(tubes[0])
            r.put(b"stop")
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
        stop(procs)
    base = _baseline_wakeup(backend, samples)
    print(f"wake-up latency ({backend}, {samples} samples, put start -> reserve return):")
    for label, values in (("Router, 4 shards", lat), ("greenstalk, 1 server", base)):
        values.sort()

        def pct(p: float, values: list[float] = values) -> float:
            return values[min(len(values) - 1, int(p / 100 * len(values)))]

        print(f"  {label:22s} p50 {pct(50):.3f} ms  p90 {pct(90):.3f} ms  p99 {pct(99):.3f} ms"
              f"  max {values[-1]:.3f} ms  mean {statistics.mean(values):.3f} ms")  # fmt: skip


def _baseline_wakeup(backend: str, samples: int) -> list[float]:
    import greenstalk

    procs, ports = start(backend, 1)
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_baseline_consumer, args=(ports[0], child))
    proc.start()
    lat = []
    try:
        assert parent.recv() == "ready"
        client = greenstalk.Client((HOST, ports[0]), encoding=None, use="w")
        rng = random.Random(1)
        for i in range(samples + 20):
            time.sleep(rng.uniform(0.002, 0.005))
            t0 = time.perf_counter()
            client.put(str(i).encode())
            body, t1 = parent.recv()
            assert body == str(i).encode()
            if i >= 20:
                lat.append((t1 - t0) * 1000)
        client.put(b"stop")
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
        stop(procs)
    return lat


def _idle_consumer(lines: list[str], timeout: float | None) -> None:
    with Router(lines, failover=3) as r:  # every shard is relevant for 'default'
        while True:
            r.reserve(timeout=timeout)


def bench_idle(backend: str, seconds: int) -> None:
    """An idle consumer runs in its own process; we sample the shards' reserve counters while it
    loops (so sampling does not disturb its rhythm)."""
    procs, ports = start(backend, 4)
    lines = [f"{HOST}:{p} s{i}" for i, p in enumerate(ports)]

    def counts() -> list[int]:
        out = []
        for p in ports:
            st = shard_stats(p)
            out.append(int(st["cmd-reserve"]) + int(st["cmd-reserve-with-timeout"]))  # type: ignore[call-overload]
        return out

    results = []
    try:
        for timeout in (1.0, None):
            proc = mp.get_context("spawn").Process(target=_idle_consumer, args=(lines, timeout))
            proc.start()
            time.sleep(2.5)  # start-up and the first call's sweep
            before, t = counts(), time.monotonic()
            time.sleep(seconds)
            after, elapsed = counts(), time.monotonic() - t
            proc.kill()
            proc.join()
            results.append((timeout, [a - b for a, b in zip(after, before, strict=True)], elapsed))
    finally:
        stop(procs)
    print(f"idle consumer ({backend}, 4 shards, every shard watched, {seconds} s sampled):")
    for timeout, per_shard, elapsed in results:
        label = f"reserve(timeout={timeout})"
        rate = max(per_shard) / elapsed
        per_call = f", {rate * timeout:.2f} per call" if timeout else ""
        print(f"  {label:22s} reserve commands per shard {per_shard}: {rate:.2f}/s{per_call}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("beanstalkd", "bundled"), default="beanstalkd")
    parser.add_argument("--puts", type=int, default=20000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--idle-seconds", type=int, default=5)
    args = parser.parse_args()
    bench_put(args.backend, args.puts)
    bench_wakeup(args.backend, args.samples)
    bench_idle(args.backend, args.idle_seconds)


if __name__ == "__main__":
    main()
