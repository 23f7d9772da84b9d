"""Micro-benchmark of the bare engine (no protocol, no sockets): prints operations per second.

    python benchmarks/engine_micro.py [-n 200000] [--memory]

- put/s: puts of 100-byte jobs into one tube.
- reserve+delete pairs/s: reserve (blocking form, jobs ready) then delete, draining the backlog.
- put->waiter->delete/s: a worker waits, each put goes straight to it, it deletes the job.
- with --memory: bytes per ready 100-byte job, measured with tracemalloc.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from beanrouter.server.engine import Engine, Job
from beanrouter.server.procinfo import ProcInfo

BODY_SIZE = 100


def bodies(n: int) -> list[bytes]:
    return [i.to_bytes(8, "big") * (BODY_SIZE // 8) + b"x" * (BODY_SIZE % 8) for i in range(n)]


def bench_put(n: int) -> float:
    e = Engine(procinfo=ProcInfo.fixed())
    c = e.connect()
    data = bodies(n)
    put = e.put
    t0 = time.perf_counter()
    for b in data:
        put(c, 1024, 0, 60, b)
    return n / (time.perf_counter() - t0)


def bench_reserve_delete(n: int) -> float:
    e = Engine(procinfo=ProcInfo.fixed())
    p, w = e.connect(), e.connect()
    for b in bodies(n):
        e.put(p, 1024, 0, 60, b)
    reserve, delete = e.reserve, e.delete
    t0 = time.perf_counter()
    for _ in range(n):
        j = reserve(w, None)
        assert isinstance(j, Job)
        delete(w, j.id)
    return n / (time.perf_counter() - t0)


def bench_put_to_waiter(n: int) -> float:
    e = Engine(procinfo=ProcInfo.fixed())
    p, w = e.connect(), e.connect()
    got: list[object] = []
    w.on_wake = got.append
    data = bodies(n)
    t0 = time.perf_counter()
    for b in data:
        e.reserve(w, None)
        e.put(p, 1024, 0, 60, b)
        j = got.pop()
        assert isinstance(j, Job)
        e.delete(w, j.id)
    return n / (time.perf_counter() - t0)


def memory_per_job(n: int) -> float:
    gc.collect()
    tracemalloc.start()
    e = Engine(procinfo=ProcInfo.fixed())
    c = e.connect()
    base, _ = tracemalloc.get_traced_memory()
    pad = b"x" * (BODY_SIZE - 8)
    for i in range(n):
        e.put(c, 1024, 0, 60, i.to_bytes(8, "big") + pad)  # a fresh body per job, as from the wire
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (used - base) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200_000, help="jobs per run (default 200000)")
    ap.add_argument("--memory", action="store_true", help="also measure bytes per job")
    args = ap.parse_args()
    n = args.n
    print(f"engine micro-benchmark, {n} jobs of {BODY_SIZE} bytes")
    print(f"put/s                     {bench_put(n):>12,.0f}")
    print(f"reserve+delete pairs/s    {bench_reserve_delete(n):>12,.0f}")
    print(f"put->waiter->delete/s     {bench_put_to_waiter(n):>12,.0f}")
    if args.memory:
        per_job = memory_per_job(n)
        print(f"bytes per ready job       {per_job:>12,.0f}  (beanstalkd ~263, target <= 395)")


if __name__ == "__main__":
    main()
