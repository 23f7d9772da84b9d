"""Router benchmarks: put, reserve+delete, wake-up latency, phantom give-backs, idle commands.

    python benchmarks/router_bench.py [--only put,reserve,wakeup,phantom,idle] [--bundled]

Every section starts its own servers on free loopback ports (real beanstalkd, /usr/bin/beanstalkd,
unless ``--backend bundled``) and measures the baseline in the same run, so the ratios hold even
when the machine's speed drifts. Clients are ``Router`` (blocking) and ``AsyncRouter`` (asyncio,
one task, sequential awaits) against greenstalk straight to one server.

1. put: one producer each, 100-byte bodies, one put at a time, interleaved rounds. The routers
   run on 3 shards and use a tube owned by the server greenstalk talks to, so only client-side
   costs differ. Ratio = median of the per-round ratios router / greenstalk (target >= 0.9).
   ``--bundled`` repeats it on bundled-server shards.
2. reserve+delete: jobs pre-filled across 12 tubes (4 per shard on 3 shards; all 12 on the one
   server of the baseline), random priorities; the client watches the 12 tubes and loops
   reserve -> delete until they are gone. Also the commands the shards received per reserved job
   (the shards' ``cmd-*`` totals read before and after).
3. wake-up latency, 4 shards, 12 tubes: a consumer process blocked in ``reserve()``; the producer
   puts to a random tube 2-5 ms after the previous job arrived; latency = ``put`` returned (the
   shard acknowledged) -> ``reserve`` returned in the consumer (CLOCK_MONOTONIC, shared by the
   processes). Target p99 <= 5 ms.
4. phantom give-backs under load: 2 producer processes put into 12 tubes over 3 shards (paced,
   per-producer rate from ``--load-rates``; 0 = as fast as they can) while 3 consumer processes
   reserve (waiting when nothing is ready), read ``stats-job`` of each job as it is delivered,
   and delete it. Reported: the consumers' ``metrics.give_backs / deliveries`` and, checked on the
   shards, the fraction of delivered jobs whose ``reserves`` was > 1 at delivery (goal < 0.1%).
5. idle command rate: an idle consumer loops on ``reserve(timeout=1)`` (then ``reserve()``) with
   every shard watched; reserve commands each shard receives per second and per call.

Prints numbers; asserts only that every job was delivered exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beanrouter.protocol import Ok, parse_mapping  # noqa: E402
from beanrouter.router import Router  # noqa: E402
from beanrouter.router.aio import AsyncRouter  # noqa: E402
from beanrouter.router.connection import Connection  # noqa: E402

HOST = "127.0.0.1"
BODY = b"x" * 100
SPAWN = mp.get_context("spawn")


# ---- servers -----------------------------------------------------------------------------------


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


@contextmanager
def servers(backend: str, count: int) -> Iterator[list[int]]:
    procs, ports = start(backend, count)
    try:
        yield ports
    finally:
        for p in procs:
            p.kill()
            p.wait()


def lines_for(ports: Sequence[int]) -> list[str]:
    return [f"{HOST}:{p} s{i}" for i, p in enumerate(ports)]


def tubes_by_shard(lines: list[str], per_shard: int, prefix: str) -> list[str]:
    """``per_shard`` tube names owned by each shard, shard by shard (placement asked of Router)."""
    with Router(lines) as r:
        names = r.shards
        found: dict[str, list[str]] = {n: [] for n in names}
        i = 0
        while any(len(v) < per_shard for v in found.values()):
            tube = f"{prefix}{i}"
            owner = r.shard_for(tube)
            if len(found[owner]) < per_shard:
                found[owner].append(tube)
            i += 1
    return [t for n in names for t in found[n]]


def shard_stats(port: int) -> dict[str, Any]:
    conn = Connection.open("bench", HOST, port, 2, 5)
    try:
        (reply,) = conn.request(b"stats\r\n")
    finally:
        conn.close()
    assert isinstance(reply, Ok)
    return dict(parse_mapping(reply.body))


def cmd_totals(ports: Sequence[int]) -> dict[str, int]:
    """Sum over the shards of every ``cmd-*`` counter (the ``stats`` reading this costs is
    subtracted by the caller: one ``cmd-stats`` per shard)."""
    total: dict[str, int] = {}
    for port in ports:
        for key, value in shard_stats(port).items():
            if key.startswith("cmd-") and isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return total


def prefill(port: int, jobs: Sequence[tuple[str, int]]) -> None:
    """Pipelined ``use``+``put`` of (tube, priority) jobs, 100-byte bodies, TTR 60."""
    parts = []
    for tube, pri in jobs:
        parts.append(b"use %s\r\nput %d 0 60 %d\r\n%s\r\n" % (tube.encode(), pri, len(BODY), BODY))
    data = b"".join(parts)
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(data)
        want, got = 2 * len(jobs), b""
        while got.count(b"\r\n") < want:
            chunk = sock.recv(65536)
            assert chunk, "server closed"
            got += chunk
    assert got.count(b"INSERTED") == len(jobs), got[:200]


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# ---- 1. put throughput -------------------------------------------------------------------------


def bench_put(backend: str, n: int, rounds: int) -> None:
    """Interleaved rounds (greenstalk, Router, AsyncRouter) so machine noise hits all alike."""
    import greenstalk

    chunk = max(1, n // rounds)
    rates: dict[str, list[float]] = {}
    with servers(backend, 3) as ports:
        lines = lines_for(ports)
        tube = tubes_by_shard(lines, 1, "p")[0]  # owned by s0 = ports[0]
        client = greenstalk.Client((HOST, ports[0]), encoding=None, use=tube)
        router = Router(lines)
        runner = asyncio.Runner()
        arouter = AsyncRouter(lines)

        async def aput(k: int) -> float:
            t = time.perf_counter()
            for _ in range(k):
                await arouter.put(BODY)
            return time.perf_counter() - t

        try:
            router.use(tube)
            runner.run(arouter.use(tube))
            for _ in range(2):  # connect, warm up
                client.put(BODY)
                router.put(BODY)
                runner.run(aput(1))
            for _ in range(rounds):
                t = time.perf_counter()
                for _ in range(chunk):
                    client.put(BODY)
                rates.setdefault("greenstalk, 1 server", []).append(
                    chunk / (time.perf_counter() - t)
                )
                t = time.perf_counter()
                for _ in range(chunk):
                    router.put(BODY)
                rates.setdefault("Router, 3 shards", []).append(chunk / (time.perf_counter() - t))
                elapsed = runner.run(aput(chunk))
                rates.setdefault("AsyncRouter, 3 shards", []).append(chunk / elapsed)
        finally:
            client.close()
            router.close()
            runner.run(arouter.close())
            runner.close()
    base = rates["greenstalk, 1 server"]
    print(f"put throughput ({backend} shards, {rounds} interleaved rounds of {chunk} puts):")
    for label, values in rates.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"  {label:24s} median {statistics.median(values):7.0f} puts/s"
            f" (rounds {min(values):.0f}-{max(values):.0f});"
            f" ratio median {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-"
            f"{max(ratios):.2f})"
        )


# ---- 2. reserve + delete -----------------------------------------------------------------------


def _fill_cluster(ports: Sequence[int], tubes: Sequence[str], n: int, rng: random.Random) -> None:
    per = len(tubes) // len(ports)
    jobs: dict[int, list[tuple[str, int]]] = {p: [] for p in ports}
    for i in range(n):
        k = i % len(tubes)
        jobs[ports[k // per]].append((tubes[k], rng.randrange(1000)))
    for port, items in jobs.items():
        prefill(port, items)


def bench_reserve(backend: str, n: int, rounds: int) -> None:
    import greenstalk

    rng = random.Random(7)
    rates: dict[str, list[float]] = {}
    per_job: dict[str, dict[str, float]] = {}
    with servers(backend, 3) as ports, servers(backend, 1) as (solo,):
        lines = lines_for(ports)
        tubes = tubes_by_shard(lines, 4, "r")
        for _ in range(rounds):
            # greenstalk, one server, the same 12 tubes watched
            prefill(solo, [(tubes[i % 12], rng.randrange(1000)) for i in range(n)])
            client = greenstalk.Client((HOST, solo), encoding=None, watch=tubes)
            before = cmd_totals([solo])
            t = time.perf_counter()
            for _ in range(n):
                client.delete(client.reserve())
            rates.setdefault("greenstalk, 1 server", []).append(n / (time.perf_counter() - t))
            per_job["greenstalk, 1 server"] = _per_job(before, cmd_totals([solo]), 1, n)
            client.close()

            _fill_cluster(ports, tubes, n, rng)
            before = cmd_totals(ports)
            with Router(lines) as r:
                for tube in tubes:
                    r.watch(tube)
                r.ignore("default")
                t = time.perf_counter()
                for _ in range(n):
                    job = r.reserve(timeout=0)
                    assert job is not None
                    job.delete()
                rates.setdefault("Router, 3 shards", []).append(n / (time.perf_counter() - t))
            per_job["Router, 3 shards"] = _per_job(before, cmd_totals(ports), len(ports), n)

            _fill_cluster(ports, tubes, n, rng)
            before = cmd_totals(ports)
            elapsed = asyncio.run(_async_drain(lines, tubes, n))
            rates.setdefault("AsyncRouter, 3 shards", []).append(n / elapsed)
            per_job["AsyncRouter, 3 shards"] = _per_job(before, cmd_totals(ports), len(ports), n)
    base = rates["greenstalk, 1 server"]
    print(f"reserve+delete ({backend}, 12 watched tubes, {rounds} rounds of {n} jobs):")
    for label, values in rates.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"  {label:24s} median {statistics.median(values):7.0f} jobs/s"
            f" (rounds {min(values):.0f}-{max(values):.0f}); ratio {statistics.median(ratios):.2f}"
        )
    print("  shard commands per reserved job (last round, delete included):")
    for label, counts in per_job.items():
        detail = ", ".join(f"{k[4:]} {v:.2f}" for k, v in sorted(counts.items()) if v >= 0.005)
        print(f"    {label:24s} {sum(counts.values()):6.2f}: {detail}")


def _per_job(
    before: dict[str, int], after: dict[str, int], shards: int, n: int
) -> dict[str, float]:
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta["cmd-stats"] -= shards  # the reading itself
    return {k: v / n for k, v in delta.items() if v}


async def _async_drain(lines: list[str], tubes: Sequence[str], n: int) -> float:
    async with AsyncRouter(lines) as r:
        for tube in tubes:
            await r.watch(tube)
        await r.ignore("default")
        t = time.perf_counter()
        for _ in range(n):
            job = await r.reserve(timeout=0)
            assert job is not None
            await job.delete()
        return time.perf_counter() - t


# ---- 3. wake-up latency ------------------------------------------------------------------------


def _wake_consumer(kind: str, lines: list[str], tubes: list[str], out: Pipe) -> None:
    if kind == "AsyncRouter":
        asyncio.run(_async_wake_consumer(lines, tubes, out))
        return
    if kind == "greenstalk":
        import greenstalk

        host, port = lines[0].split()[0].split(":")
        client = greenstalk.Client((host, int(port)), encoding=None, watch=tubes)
        out.send("ready")
        while True:
            gjob = client.reserve()
            now = time.perf_counter()
            client.delete(gjob)
            if gjob.body == b"stop":
                return
            out.send((gjob.body, now))
    with Router(lines) as r:
        for tube in tubes:
            r.watch(tube)
        r.ignore("default")
        out.send("ready")
        while True:
            job = r.reserve()
            assert job is not None
            now = time.perf_counter()
            job.delete()
            if job.body == b"stop":
                return
            out.send((job.body, now))


async def _async_wake_consumer(lines: list[str], tubes: list[str], out: Pipe) -> None:
    async with AsyncRouter(lines) as r:
        for tube in tubes:
            await r.watch(tube)
        await r.ignore("default")
        out.send("ready")
        while True:
            job = await r.reserve()
            assert job is not None
            now = time.perf_counter()
            await job.delete()
            if job.body == b"stop":
                return
            out.send((job.body, now))


def _wake_run(kind: str, lines: list[str], tubes: list[str], samples: int) -> list[float]:
    parent, child = mp.Pipe()
    proc = SPAWN.Process(target=_wake_consumer, args=(kind, lines, tubes, child))
    proc.start()
    lat = []
    try:
        assert parent.recv() == "ready"
        rng = random.Random(1)
        with Router(lines) as r:
            for i in range(samples + 20):
                time.sleep(rng.uniform(0.002, 0.005))  # the consumer is blocked again
                r.use(rng.choice(tubes))
                r.put(str(i).encode())
                t0 = time.perf_counter()
                body, t1 = parent.recv()
                assert body == str(i).encode()
                if i >= 20:
                    lat.append(max(0.0, t1 - t0) * 1000)
            r.use(tubes[0])
            r.put(b"stop")
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
    return lat


def bench_wakeup(backend: str, samples: int) -> None:
    with servers(backend, 4) as ports:
        lines = lines_for(ports)
        tubes = tubes_by_shard(lines, 3, "w")
        results = {
            "Router, 4 shards": _wake_run("Router", lines, tubes, samples),
            "AsyncRouter, 4 shards": _wake_run("AsyncRouter", lines, tubes, samples),
        }
    with servers(backend, 1) as ports:
        results["greenstalk, 1 server"] = _wake_run("greenstalk", lines_for(ports), tubes, samples)
    print(f"wake-up latency ({backend}, 12 tubes, {samples} samples,"
          " put acknowledged -> job received):")  # fmt: skip
    for label, values in results.items():
        print(
            f"  {label:24s} p50 {pct(values, 50):.3f} ms  p90 {pct(values, 90):.3f} ms"
            f"  p99 {pct(values, 99):.3f} ms  max {max(values):.3f} ms"
        )


# ---- 4. phantom give-backs under load ----------------------------------------------------------


def _producer(lines: list[str], tubes: list[str], n: int, rate: float, seed: int) -> None:
    rng = random.Random(seed)
    with Router(lines) as r:
        t0 = time.perf_counter()
        for i in range(n):
            if rate:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            r.use(rng.choice(tubes))
            r.put(BODY, priority=rng.randrange(1000))


def _load_consumer(kind: str, lines: list[str], tubes: list[str], stop: Event, out: Pipe) -> None:
    """Reserve until ``stop`` is set and nothing is left; report (ids, reserves>1, metrics)."""
    if kind == "AsyncRouter":
        asyncio.run(_async_load_consumer(lines, tubes, stop, out))
        return
    seen: list[int] = []
    multi = 0
    with Router(lines) as r:
        for tube in tubes:
            r.watch(tube)
        r.ignore("default")
        out.send("ready")
        while True:
            job = r.reserve(timeout=0.2)
            if job is None:
                if stop.is_set():
                    break
                continue
            if int(job.stats()["reserves"]) > 1:
                multi += 1
            seen.append(job.id)
            job.delete()
        out.send((seen, multi, _metrics(r.metrics)))


async def _async_load_consumer(lines: list[str], tubes: list[str], stop: Event, out: Pipe) -> None:
    seen: list[int] = []
    multi = 0
    async with AsyncRouter(lines) as r:
        for tube in tubes:
            await r.watch(tube)
        await r.ignore("default")
        out.send("ready")
        while True:
            job = await r.reserve(timeout=0.2)
            if job is None:
                if stop.is_set():
                    break
                continue
            if int((await job.stats())["reserves"]) > 1:
                multi += 1
            seen.append(job.id)
            await job.delete()
        out.send((seen, multi, _metrics(r.metrics)))


def _metrics(m: Any) -> dict[str, int]:
    keys = ("deliveries", "give_backs", "raced", "prefetch_hits", "wait_cancels", "sweep_retries")
    return {k: int(getattr(m, k)) for k in keys}


def bench_phantom(backend: str, n: int, rates: Sequence[float], kinds: Sequence[str]) -> None:
    print(f"phantom give-backs under load ({backend}, 3 shards, 12 tubes, 2 producers,"
          f" 3 consumers, {n} jobs):")  # fmt: skip
    for kind in kinds:
        for rate in rates:
            with servers(backend, 3) as ports:
                lines = lines_for(ports)
                tubes = tubes_by_shard(lines, 4, "l")
                before = cmd_totals(ports)
                res = _phantom_run(kind, lines, tubes, n, rate)
                after = cmd_totals(ports)
                left = sum(int(shard_stats(p)["current-jobs-ready"]) for p in ports)
            seen, multi, metrics, elapsed = res
            assert len(seen) == n and len(set(seen)) == n and left == 0, (len(seen), left)
            releases = after.get("cmd-release", 0) - before.get("cmd-release", 0)
            total: dict[str, int] = {}
            for m in metrics:
                for k, v in m.items():
                    total[k] = total.get(k, 0) + v
            label = f"{rate * 2:.0f}/s" if rate else "flat out"
            print(
                f"  {kind:12s} puts {label:>8s} ({n / elapsed:5.0f} jobs/s):"
                f" give_backs/deliveries {total['give_backs']}/{total['deliveries']}"
                f" = {100 * total['give_backs'] / max(1, total['deliveries']):.3f}%;"
                f" reserves>1 at delivery {multi}/{len(seen)} = {100 * multi / len(seen):.3f}%;"
                f" shards' cmd-release {releases}; raced {total['raced']},"
                f" prefetch hits {total['prefetch_hits']}, wait cancels {total['wait_cancels']},"
                f" sweep retries {total['sweep_retries']}"
            )


def _phantom_run(
    kind: str, lines: list[str], tubes: list[str], n: int, rate: float
) -> tuple[list[int], int, list[dict[str, int]], float]:
    stop = SPAWN.Event()
    pipes, consumers = [], []
    for _ in range(3):
        parent, child = mp.Pipe()
        proc = SPAWN.Process(target=_load_consumer, args=(kind, lines, tubes, stop, child))
        proc.start()
        pipes.append(parent)
        consumers.append(proc)
    try:
        for p in pipes:
            assert p.recv() == "ready"
        t = time.perf_counter()
        producers = [
            SPAWN.Process(target=_producer, args=(lines, tubes, n // 2 + (n % 2) * i, rate, i))
            for i in range(2)
        ]
        for producer in producers:
            producer.start()
        for producer in producers:
            producer.join()
        stop.set()
        seen: list[int] = []
        multi = 0
        metrics = []
        for p in pipes:
            ids, m, met = p.recv()
            seen += ids
            multi += m
            metrics.append(met)
        elapsed = time.perf_counter() - t
        for proc in consumers:
            proc.join(10)
    finally:
        for proc in consumers:
            if proc.is_alive():
                proc.kill()
    return seen, multi, metrics, elapsed


# ---- 5. idle command rate ----------------------------------------------------------------------


def _idle_consumer(lines: list[str], timeout: float | None) -> None:
    with Router(lines, failover=3) as r:  # every shard is relevant for 'default'
        while True:
            r.reserve(timeout=timeout)


def bench_idle(backend: str, seconds: int) -> None:
    """The idle consumer runs in its own process; the shards' reserve counters are sampled while
    it loops (so sampling does not disturb its rhythm)."""
    results = []
    with servers(backend, 4) as ports:
        lines = lines_for(ports)

        def counts() -> list[int]:
            out = []
            for p in ports:
                st = shard_stats(p)
                out.append(int(st["cmd-reserve"]) + int(st["cmd-reserve-with-timeout"]))
            return out

        for timeout in (1.0, None):
            proc = SPAWN.Process(target=_idle_consumer, args=(lines, timeout))
            proc.start()
            time.sleep(2.5)  # start-up and the first call's sweep
            before, t = counts(), time.monotonic()
            time.sleep(seconds)
            after, elapsed = counts(), time.monotonic() - t
            proc.kill()
            proc.join()
            results.append((timeout, [a - b for a, b in zip(after, before, strict=True)], elapsed))
    print(f"idle consumer ({backend}, 4 shards, every shard watched, {seconds} s sampled):")
    for timeout, per_shard, elapsed in results:
        label = f"reserve(timeout={timeout})"
        rate = max(per_shard) / elapsed
        per_call = f", {rate * timeout:.2f} per call" if timeout else ""
        print(f"  {label:22s} reserve commands per shard {per_shard}: {rate:.2f}/s{per_call}")


# ---- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=("beanstalkd", "bundled"), default="beanstalkd")
    parser.add_argument("--bundled", action="store_true", help="also put on bundled shards")
    parser.add_argument("--only", default="put,reserve,wakeup,phantom,idle")
    parser.add_argument("--puts", type=int, default=20000)
    parser.add_argument("--put-rounds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2000, help="reserve+delete jobs per round")
    parser.add_argument("--reserve-rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--load-jobs", type=int, default=3000)
    parser.add_argument("--load-rates", default="40,0", help="puts/s per producer; 0: flat out")
    parser.add_argument("--load-kinds", default="Router,AsyncRouter")
    parser.add_argument("--idle-seconds", type=int, default=5)
    args = parser.parse_args()
    only = set(args.only.split(","))
    sections: list[tuple[str, Callable[[], None]]] = [
        ("put", lambda: bench_put(args.backend, args.puts, args.put_rounds)),
        ("put", lambda: bench_put("bundled", args.puts, args.put_rounds) if args.bundled else None),
        ("reserve", lambda: bench_reserve(args.backend, args.jobs, args.reserve_rounds)),
        ("wakeup", lambda: bench_wakeup(args.backend, args.samples)),
        (
            "phantom",
            lambda: bench_phantom(
                args.backend,
                args.load_jobs,
                [float(x) for x in args.load_rates.split(",")],
                args.load_kinds.split(","),
            ),
        ),
        ("idle", lambda: bench_idle(args.backend, args.idle_seconds)),
    ]
    print(f"start: {load()}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}", flush=True)
    for name, run in sections:
        if name in only:
            run()
            print(f"  [{load()}]", flush=True)


if __name__ == "__main__":
    main()
