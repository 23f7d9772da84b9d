#!/usr/bin/env python3
"""Benchmark the bundled server's binlog (``-b``) against the real beanstalkd's, same flags.

For each fsync mode (``-f 0``, ``-f 50``, ``-F``) and each of ``--rounds`` rounds, a fresh
beanstalkd and a fresh bundled server, each on a fresh binlog directory, run alternately:

* pipelined put: one client, ``-n`` puts of a 100-byte body in batches of ``--batch`` with up
  to ``--window`` in flight -> put/s;
* round trips: ``--clients`` processes each looping put -> reserve -> delete, one command at a
  time, for ``--seconds`` -> cycles/s (two logged records per cycle).

Then:

* replay: ``--replay-jobs`` jobs (100-byte bodies) are put into each server's directory, the
  server is killed with SIGKILL, and the time from starting it again to its first answer
  (``stats``, which also confirms the job count) is measured ``--replay-rounds`` times;
* loss window at ``-f 50`` (needs ``strace``): the server runs under ``strace`` (its data fsyncs
  and its writes); the client records when each ``INSERTED`` arrived; the window of a put is the
  time from its acknowledgement to the end of the first data fsync that started after the write
  holding its record: how long a machine crash (not a process crash: data written to the kernel
  survives that) could lose it. Measured under a steady load (one put per ms) and after a burst
  followed by 2 s of silence.

Targets: pipelined put >= 1.0x beanstalkd at -f 50 and at -f 0; replay within 3x.

    python3 benchmarks/binlog_vs_beanstalkd.py                # full run: about 5 minutes
    python3 benchmarks/binlog_vs_beanstalkd.py --quick        # smoke test: well under a minute
    python3 benchmarks/binlog_vs_beanstalkd.py --json results.json
    python3 benchmarks/binlog_vs_beanstalkd.py --modes=-F,"-f 0" --skip-replay --skip-loss

Stdlib only. Exits 0 whatever the ratios; 1 if a server failed to start or misbehaved.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import multiprocessing as mp
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BODY = b"x" * 100
PUT = b"put 0 0 120 %d\r\n%s\r\n" % (len(BODY), BODY)
DEFAULT_REF_CMD = "/usr/bin/beanstalkd -l {host} -p {port} -b {dir}"
DEFAULT_OURS_CMD = "{python} -m beanrouter server -l {host} -p {port} -b {dir}"
MODES = ("-f 0", "-f 50", "-F")
START_TIMEOUT = 120.0
SOCKET_TIMEOUT = 120.0
_RESERVED = re.compile(rb"RESERVED (\d+) (\d+)\r\n")


class BenchError(Exception):
    """A server did not start, hung up, or answered something unexpected."""


@dataclass(frozen=True)
class Config:
    rounds: int
    n: int
    window: int
    batch: int
    clients: int
    seconds: float
    replay_jobs: int
    replay_rounds: int
    loss_seconds: float


FULL = Config(3, 200_000, 1000, 250, 4, 5.0, 1_000_000, 3, 3.0)
QUICK = Config(1, 20_000, 1000, 250, 4, 1.0, 50_000, 1, 1.0)


@dataclass
class Side:
    name: str
    cmd: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None


# -- servers ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _argv(template: str, port: int, directory: Path, mode: str) -> list[str]:
    words = [
        w.format(host=HOST, port=port, dir=directory, python=sys.executable)
        for w in shlex.split(template)
    ]
    return words + shlex.split(mode)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-1500:].strip()


@contextlib.contextmanager
def running(
    template: str, directory: Path, mode: str, prefix: Sequence[str] = ()
) -> Iterator[Server]:
    """Start a server on ``directory`` and wait until it answers (it may replay first)."""
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*prefix, *_argv(template, port, directory, mode)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(proc, port, log)
        try:
            wait_answering(server)
            yield server
        finally:
            if prefix:  # strace detaches when signalled: stop its tracee, then strace exits
                with contextlib.suppress(OSError, ValueError):
                    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
                    for child in children.split():
                        os.kill(int(child), signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_answering(server: Server) -> float:
    """Wait for the first answer to ``stats``; returns the current-jobs-ready it reports."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            raise BenchError(f"server exited {server.proc.returncode}: {server.tail()}")
        try:
            with _connect(server.port) as sock:
                return float(_stat(sock, b"current-jobs-ready"))
        except (OSError, BenchError):
            if time.monotonic() > deadline:
                raise BenchError(f"server not answering: {server.tail()}") from None
            time.sleep(0.002)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 18)
    if not data:
        raise BenchError("server closed the connection")
    return data


def _stat(sock: socket.socket, name: bytes) -> int:
    sock.sendall(b"stats\r\n")
    data = b""
    while True:
        data += _recv(sock)
        m = re.match(rb"OK (\d+)\r\n", data)
        if m and len(data) >= m.end() + int(m[1]) + 2:
            break
    found = re.search(rb"\n%s: (\d+)" % re.escape(name), data)
    if found is None:
        raise BenchError(f"no {name!r} in stats")
    return int(found[1])


# -- client loads ------------------------------------------------------------------------------


def pipelined_puts(sock: socket.socket, n: int, window: int, batch: int) -> list[float]:
    """Put ``n`` jobs, ``window`` in flight; returns each INSERTED's arrival time."""
    chunk = PUT * batch
    sent = acked = 0
    tail = b""
    times: list[float] = []
    while acked < n:
        while sent < n and sent - acked + batch <= window:
            count = min(batch, n - sent)
            sock.sendall(chunk if count == batch else PUT * count)
            sent += count
        data = tail + _recv(sock)
        now = time.time()
        end = data.rfind(b"\r\n") + 2
        lines = data.count(b"\r\n", 0, end)
        if data.count(b"INSERTED ", 0, end) != lines:
            raise BenchError(f"unexpected reply to put: {data[:200]!r}")
        times += [now] * lines
        acked += lines
        tail = data[end:]
    return times


def _round_trip_client(port: int, seconds: float, out: Any) -> None:
    try:
        with _connect(port) as sock:
            cycles = 0
            deadline = time.perf_counter() + seconds
            buf = b""
            while time.perf_counter() < deadline:
                sock.sendall(PUT)
                while not buf.endswith(b"\r\n"):
                    buf += _recv(sock)
                if not buf.startswith(b"INSERTED"):
                    raise BenchError(f"put: {buf!r}")
                buf = b""
                sock.sendall(b"reserve\r\n")
                while True:
                    buf += _recv(sock)
                    m = _RESERVED.match(buf)
                    if m and len(buf) >= m.end() + int(m[2]) + 2:
                        break
                assert m is not None
                sock.sendall(b"delete %s\r\n" % m[1])
                buf = b""
                while not buf.endswith(b"\r\n"):
                    buf += _recv(sock)
                if buf != b"DELETED\r\n":
                    raise BenchError(f"delete: {buf!r}")
                buf = b""
                cycles += 1
            out.put(cycles / seconds)
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def round_trips(port: int, clients: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    procs = [
        ctx.Process(target=_round_trip_client, args=(port, seconds, out)) for _ in range(clients)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + SOCKET_TIMEOUT) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    errors = [r for r in results if isinstance(r, str)]
    if errors:
        raise BenchError(errors[0])
    return float(sum(results))


# -- measurements --------------------------------------------------------------------------------


def bench_mode(side: Side, mode: str, cfg: Config) -> None:
    key = mode.replace(" ", "")
    with (
        tempfile.TemporaryDirectory(prefix="binlog-bench-") as d,
        running(side.cmd, Path(d), mode) as srv,
        _connect(srv.port) as sock,
    ):
        started = time.perf_counter()
        pipelined_puts(sock, cfg.n, cfg.window, cfg.batch)
        side.add(f"put{key}", cfg.n / (time.perf_counter() - started))
    with (
        tempfile.TemporaryDirectory(prefix="binlog-bench-") as d,
        running(side.cmd, Path(d), mode) as srv,
    ):
        side.add(f"rt{key}", round_trips(srv.port, cfg.clients, cfg.seconds))


def bench_replay(side: Side, cfg: Config) -> None:
    with tempfile.TemporaryDirectory(prefix="binlog-replay-") as d:
        directory = Path(d)
        with running(side.cmd, directory, "-F") as srv, _connect(srv.port) as sock:
            pipelined_puts(sock, cfg.replay_jobs, cfg.window, cfg.batch)
            srv.proc.kill()  # a crash: the files stay as they are
            srv.proc.wait()
        side.add("replay_disk", sum(p.stat().st_size for p in directory.iterdir()))
        for _ in range(cfg.replay_rounds):
            port = _free_port()
            started = time.perf_counter()
            with tempfile.TemporaryFile() as log:
                proc = subprocess.Popen(
                    _argv(side.cmd, port, directory, "-F"),
                    cwd=REPO_ROOT,
                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                try:
                    ready = wait_answering(Server(proc, port, log))
                    elapsed = time.perf_counter() - started
                finally:
                    proc.kill()
                    proc.wait()
            if ready != cfg.replay_jobs:
                raise BenchError(f"replayed {ready:.0f} of {cfg.replay_jobs} jobs")
            side.add("replay_s", elapsed)


CALL_LINE = re.compile(r"^\d+\s+(\d+\.\d+) (\w+)\((\d+),?.*= (-?\d+).* <(\d+\.\d+)>$")


def bench_loss_window(side: Side, cfg: Config, syscall: str) -> None:
    """Acknowledged-but-not-yet-fsynced time at -f 50, seen from outside with strace.

    ``syscall`` is the server's data sync call. For each acknowledged put: the last write to a
    binlog file that started before the acknowledgement arrived holds its record (records are
    written before replies); the put is durable at the end of the first data sync that
    started after that write ended. Its window is that end minus the acknowledgement time
    (0 if the sync ended first).
    """
    strace = shutil.which("strace")
    if strace is None:
        side.errors.append("loss window: strace not found")
        return
    with tempfile.TemporaryDirectory(prefix="binlog-loss-") as d:
        trace = Path(d) / "trace"
        directory = Path(d) / "binlog"
        directory.mkdir()
        calls = f"trace={syscall},write,pwrite64"
        prefix = [strace, "-f", "--seccomp-bpf", "-ttt", "-T", "-s", "0", "-e", calls]
        prefix += ["-o", str(trace)]
        acks: list[float] = []
        burst: list[float] = []
        with running(side.cmd, directory, "-f 50", prefix) as srv, _connect(srv.port) as sock:
            deadline = time.perf_counter() + cfg.loss_seconds
            while time.perf_counter() < deadline:  # steady: one put per ms, one at a time
                acks += pipelined_puts(sock, 1, 1, 1)
                time.sleep(0.001)
            burst = pipelined_puts(sock, 1000, 1000, 250)
            time.sleep(2.0)  # silence: is the burst's tail ever synced?
            pipelined_puts(sock, 1, 1, 1)
        syncs: list[tuple[float, float]] = []
        writes: list[tuple[int, float, float]] = []
        for line in trace.read_text().splitlines():
            m = CALL_LINE.match(line)
            if m is None or int(m[4]) < 0:
                continue
            begin, end = float(m[1]), float(m[1]) + float(m[5])
            if m[2] == syscall:
                syncs.append((begin, end))
            elif m[2] in ("write", "pwrite64"):
                writes.append((int(m[3]), begin, end))
        sync_fds = {
            int(m[3])
            for m in map(CALL_LINE.match, trace.read_text().splitlines())
            if m is not None and m[2] == syscall
        }
    record_writes = sorted((b, e) for fd, b, e in writes if fd in sync_fds)
    write_starts = [b for b, _ in record_writes]
    syncs.sort()
    sync_starts = [b for b, _ in syncs]

    def windows(times: list[float]) -> list[float]:
        out = []
        for t in times:
            i = bisect.bisect_left(write_starts, t)  # writes that started before the ack
            if i == 0:
                continue
            k = bisect.bisect_left(sync_starts, record_writes[i - 1][1])
            out.append(float("inf") if k == len(syncs) else max(0.0, syncs[k][1] - t))
        return out

    steady = sorted(windows(acks))
    tail = windows(burst)
    side.add("loss_steady_max_ms", 1000 * steady[-1])
    side.add("loss_steady_p99_ms", 1000 * steady[int(0.99 * (len(steady) - 1))])
    side.add("loss_burst_max_ms", 1000 * max(tail))


# -- report --------------------------------------------------------------------------------------


ROWS = [
    ("put-f0", "pipelined put, -f 0", "put/s", ">= 1.0"),
    ("put-f50", "pipelined put, -f 50", "put/s", ">= 1.0"),
    ("put-F", "pipelined put, -F", "put/s", ""),
    ("rt-f0", "round trips, -f 0", "cycles/s", ""),
    ("rt-f50", "round trips, -f 50", "cycles/s", ""),
    ("rt-F", "round trips, -F", "cycles/s", ""),
    ("replay_s", "replay of the jobs", "s", "<= 3.0"),
    ("replay_disk", "binlog size before replay", "bytes", ""),
    ("loss_steady_p99_ms", "loss window -f 50, steady, p99", "ms", ""),
    ("loss_steady_max_ms", "loss window -f 50, steady, max", "ms", ""),
    ("loss_burst_max_ms", "loss window -f 50, burst then idle", "ms", ""),
]


def fmt_value(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v == float("inf"):
        return "never"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def report(ref: Side, ours: Side) -> dict[str, float]:
    ratios = {}
    rows = [("metric", "unit", "beanstalkd", "ours", "ratio", "target", "")]
    for key, label, unit, target in ROWS:
        a, b = ref.median(key), ours.median(key)
        ratio = verdict = ""
        if a and b is not None and a != float("inf") and b != float("inf"):
            r = b / a
            ratios[key] = r
            ratio = f"{r:.2f}"
            if target:
                op, bound = target.split()
                ok = round(r, 2) >= float(bound) if op == ">=" else round(r, 2) <= float(bound)
                verdict = "ok" if ok else "MISS"
        rows.append((label, unit, fmt_value(a), fmt_value(b), ratio, target, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(7)]
    for i, row in enumerate(rows):
        print(
            "  ".join(
                c.ljust(w) if k < 2 else c.rjust(w)
                for k, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nmedian over rounds; ratio = ours / beanstalkd (for replay: lower is better)")
    return ratios


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    for name in Config.__dataclass_fields__:
        parser.add_argument("--" + name.replace("_", "-"), type=float if "seconds" in name else int)
    parser.add_argument("-n", dest="n_override", type=int, help="pipelined puts")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--skip-loss", action="store_true")
    parser.add_argument("--ref-cmd", default=DEFAULT_REF_CMD)
    parser.add_argument("--ours-cmd", default=DEFAULT_OURS_CMD)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    base = asdict(QUICK if args.quick else FULL)
    for name in base:
        value = getattr(args, name)
        if value is not None:
            base[name] = value
    if args.n_override is not None:
        base["n"] = args.n_override
    cfg = Config(**base)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, kernel {platform.release()}"
    )
    print(f"config: {cfg}\nmodes: {modes}\nreference: {args.ref_cmd}\nours: {args.ours_cmd}\n")
    ref, ours = Side("beanstalkd", args.ref_cmd), Side("ours", args.ours_cmd)
    started = time.perf_counter()
    for rnd in range(1, cfg.rounds + 1):
        for mode in modes:
            for side in (ref, ours):
                try:
                    bench_mode(side, mode, cfg)
                except (BenchError, OSError) as exc:
                    side.errors.append(f"{mode}: {exc}")
                    print(f"ERROR [{side.name}] {mode}: {exc}", file=sys.stderr)
                    continue
                key = mode.replace(" ", "")
                print(
                    f"round {rnd} {side.name:>10} {mode:>5}: "
                    f"put {side.samples[f'put{key}'][-1]:,.0f}/s, "
                    f"round trips {side.samples[f'rt{key}'][-1]:,.0f}/s",
                    flush=True,
                )
    if not args.skip_replay:
        for side in (ref, ours):
            try:
                bench_replay(side, cfg)
                print(f"replay {side.name:>10}: {side.samples['replay_s']}", flush=True)
            except (BenchError, OSError) as exc:
                side.errors.append(f"replay: {exc}")
                print(f"ERROR [{side.name}] replay: {exc}", file=sys.stderr)
    if not args.skip_loss:
        for side, syscall in ((ref, "fsync"), (ours, "fdatasync")):
            try:
                bench_loss_window(side, cfg, syscall)
            except (BenchError, OSError) as exc:
                side.errors.append(f"loss window: {exc}")
                print(f"ERROR [{side.name}] loss window: {exc}", file=sys.stderr)
    print(f"\ntotal {time.perf_counter() - started:.0f}s\n")
    ratios = report(ref, ours)
    for side in (ref, ours):
        for error in side.errors:
            print(f"{side.name} failed: {error}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": asdict(cfg),
                    "modes": modes,
                    "sides": {s.name: {"cmd": s.cmd, "samples": s.samples} for s in (ref, ours)},
                    "ratios": ratios,
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if ref.errors or ours.errors else 0


if __name__ == "__main__":
    sys.exit(main())
