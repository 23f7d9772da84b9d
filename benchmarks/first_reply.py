#!/usr/bin/env python3
"""First reply after a start: the bundled server's ways of starting, beanstalkd, and the floor.

Each start is timed from the spawn to the reply to ``stats`` of a client that retries its connect
every millisecond (as ``server_vs_beanstalkd.py``'s start-up row, whose helpers this uses); the
server's CPU time by then is recorded too (its process tree's: a cluster's shards count; the time
on a CPU from /proc/PID/schedstat, in ns, else user + system in 10 ms ticks), steadier than the
wall time on a shared machine. The rows, run in turn ``--starts`` times:

* beanstalkd;
* ``python -m beanrouter server``, and the console scripts ``beanrouter server`` and
  ``beanrouter-server`` (when installed next to this Python);
* ``beanrouter cluster --shards 3`` (the console script) and ``python -m beanrouter cluster
  --shards 3``: shards and proxy in one command, its ``stats`` answered through the proxy from
  every shard; its CPU time is the whole process tree's (supervisor and proxy, and the shards);
* ``--base DIR``: ``python -m beanrouter server`` run from another checkout (a "before");
* the floor: the same client against two stand-ins that answer anything with a fixed ``OK``,
  a plain-socket Python server, and one on asyncio (``ssl`` kept out, as the server does) that
  listens before importing asyncio, as the bundled server does: what any Python server built
  like ours pays before its own code runs.

``--importtime N`` also prints where the time goes: ``python -X importtime -m beanrouter server``
started N times, each top-level import's cumulative time (median over the starts, in ms), with
the biggest of its own imports under it.

    python3 benchmarks/first_reply.py                  # ~15 s
    python3 benchmarks/first_reply.py --starts 30 --importtime 15 --base /tmp/old-checkout
    python3 benchmarks/first_reply.py --only beanstalkd,"beanrouter server",cluster --starts 30
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_vs_beanstalkd import (
    HOST,
    REPO_ROOT,
    SOCKET_TIMEOUT,
    START_TIMEOUT,
    BenchError,
    Server,
    _free_port,
    _one_reply,
    _stop,
    first_stats_reply,
)

FLOOR_SOCKET = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[4])))
s.listen(1024)
c, _ = s.accept()
c.recv(4096)
c.sendall(b"OK 2\r\nok\r\n")
c.recv(4096)
"""
FLOOR_ASYNCIO = r"""
import _socket, sys
s = _socket.socket()
s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[4])))
s.listen(1024)
sys.modules["ssl"] = None
import asyncio, socket
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(b"OK 2\r\nok\r\n")
async def main():
    await asyncio.get_running_loop().create_server(P, sock=socket.socket(fileno=s.detach()))
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _env(cwd: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
    return env


def _tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its live children (the cluster's shards): the time on a CPU from
    ``/proc/PID/schedstat`` (nanoseconds), else user + system from ``/proc/PID/stat`` (ticks)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(entry) != pid and fields[1] != str(pid):
                continue
            try:
                total += int(Path(f"/proc/{entry}/schedstat").read_text().split()[0]) / 1e9
            except (OSError, IndexError, ValueError):
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return total


def first_reply(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Spawn ``argv`` + listen flags; (ms to the reply to ``stats``, server CPU ms by then: the
    process tree's, for a cluster; in ns from schedstat where there is one, else 10 ms ticks)."""
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*argv, "-l", HOST, "-p", str(port)],
            cwd=cwd,
            env=_env(cwd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(proc, port, log)
        try:
            wall, cpu = first_stats_reply(server, start)
            cpu = _tree_cpu_seconds(proc.pid)
        finally:
            _stop(proc)
    return wall * 1000, cpu * 1000


def rows(base: Path | None) -> list[tuple[str, list[str], Path]]:
    """(label, argv, cwd) for every row that can run here."""
    py = sys.executable
    bindir = Path(py).parent
    out: list[tuple[str, list[str], Path]] = [
        ("beanstalkd", ["/usr/bin/beanstalkd"], REPO_ROOT),
        ("python -m beanrouter server", [py, "-m", "beanrouter", "server"], REPO_ROOT),
    ]
    if (bindir / "beanrouter").exists():
        out.append(("beanrouter server", [str(bindir / "beanrouter"), "server"], REPO_ROOT))
    if (bindir / "beanrouter-server").exists():
        out.append(("beanrouter-server", [str(bindir / "beanrouter-server")], REPO_ROOT))
    if (bindir / "beanrouter").exists():
        cluster = [str(bindir / "beanrouter"), "cluster", "--shards", "3"]
        out.append(("beanrouter cluster --shards 3", cluster, REPO_ROOT))
    out.append(
        (
            "python -m beanrouter cluster --shards 3",
            [py, "-m", "beanrouter", "cluster", "--shards", "3"],
            REPO_ROOT,
        )
    )
    if base is not None:
        label = f"base: python -m beanrouter server ({base})"
        out.append((label, [py, "-m", "beanrouter", "server"], base))
        label = f"base: python -m beanrouter cluster --shards 3 ({base})"
        out.append((label, [py, "-m", "beanrouter", "cluster", "--shards", "3"], base))
    out.append(("floor: python, a socket server", [py, "-c", FLOOR_SOCKET], REPO_ROOT))
    out.append(("floor: python, an asyncio server", [py, "-c", FLOOR_ASYNCIO], REPO_ROOT))
    return out


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} ({min(values):.1f}-{max(values):.1f})"


PROFILED = [sys.executable, "-X", "importtime", "-m", "beanrouter", "server"]
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$", re.M)


def importtime_profile(starts: int, cwd: Path = REPO_ROOT) -> None:
    """Median cumulative import time per top-level import (and its main children), in ms, of
    ``python -m beanrouter server`` run from ``cwd``."""
    samples: dict[tuple[str, str], list[float]] = {}
    order: list[tuple[str, str]] = []
    for _ in range(starts):
        port = _free_port()
        with subprocess.Popen(
            [*PROFILED, "-l", HOST, "-p", str(port)],
            cwd=cwd,
            env=_env(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ) as proc:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as sock:
                        sock.sendall(b"stats\r\n")
                        _one_reply(sock)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise BenchError("server did not start") from None
                    time.sleep(0.001)
            _stop(proc)
            assert proc.stderr is not None
            report = proc.stderr.read().decode()
        parent = ""
        # The report lists a module after its imports: walk it backwards to know the parents.
        for m in reversed(list(IMPORT_LINE.finditer(report))):
            depth = len(m.group(3)) // 2
            name = m.group(4)
            if depth == 0:
                parent = name
                key = (name, "")
            elif depth == 1:
                key = (parent, name)
            else:
                continue
            if key not in samples:
                order.append(key)
            samples.setdefault(key, []).append(int(m.group(2)) / 1000)
    total = 0.0
    print(
        f"\nimport time of `python -m beanrouter server` in {cwd}, median of {starts} starts (ms):"
    )
    for top, child in reversed(order):
        if child:
            continue
        cumulative = statistics.median(samples[(top, "")])
        total += cumulative
        if cumulative < 0.5:
            continue
        print(f"  {cumulative:6.1f}  {top}")
        children = [(statistics.median(samples[k]), k[1]) for k in order if k[0] == top and k[1]]
        for ms, name in sorted(children, reverse=True)[:6]:
            if ms >= 1.0:
                print(f"  {'':6}  {ms:6.1f}  {name}")
    print(f"  {total:6.1f}  all imports")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=15, help="starts per row (default 15)")
    parser.add_argument("--base", type=Path, help="another checkout, run as a 'before' row")
    parser.add_argument("--importtime", type=int, default=0, metavar="N", help="profile N starts")
    parser.add_argument(
        "--only", help="comma-separated: run only the rows whose label contains one of these"
    )
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(
            "warning: PYTHONDONTWRITEBYTECODE is set: where beanrouter has no .pyc files, every "
            "start compiles it again (python -m compileall beanrouter, as an installation does)",
            file=sys.stderr,
        )
    table = rows(args.base)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        table = [row for row in table if any(w in row[0] for w in wanted)]
    results: dict[str, tuple[list[float], list[float]]] = {r[0]: ([], []) for r in table}
    for _ in range(args.starts):
        for label, command, cwd in table:
            wall, cpu = first_reply(command, cwd)
            results[label][0].append(wall)
            results[label][1].append(cpu)
    load = os.getloadavg()[0]
    print(f"{args.starts} starts per row, load average {load:.2f}, {os.cpu_count()} cores")
    print(f"{'':44} {'wall ms, median (min-max)':>27} {'CPU ms, median (min-max)':>27}")
    for label, (walls, cpus) in results.items():
        print(f"{label:44} {_fmt(walls):>27} {_fmt(cpus):>27}")
    if args.importtime:
        importtime_profile(args.importtime)
        if args.base is not None:
            importtime_profile(args.importtime, args.base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
