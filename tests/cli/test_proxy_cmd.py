"""``beanrouter proxy``: configuration, SIGHUP, the HTTP port and ``--workers`` (real processes).

The proxy runs with the forwarding test backend of ``tests/proxy/fakes.py`` in front of one
bundled shard: the routing core is not what is tested here.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port, free_port_run
from tests.router.cluster import Shard, start_all

from .procs import Proc, alive, children, talk, wait_for


@pytest.fixture(scope="module")
def shard() -> Iterator[Shard]:
    (s,) = start_all("bundled", 1)
    yield s
    s.stop()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.close()


def config(tmp_path: Path, shard: Shard) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(f"servers:\n  - {shard.address} s0 id=0\n")
    return path


def get(port: int, target: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{target}", timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(port: int, proc: Proc) -> None:
    def up() -> bool:
        assert proc.proc.poll() is None, proc.output()
        try:
            return get(port, "/healthz")[0] == 200
        except OSError:
            return False

    wait_for(up, f"HTTP on {port}")


def test_bad_configuration_at_start_exits_1(procs: list[Proc], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers:\n  - nope\n")
    p = Proc(["proxy", "--config", str(bad), "-p", str(free_port())])
    procs.append(p)
    assert p.proc.wait(30) == 1
    assert "servers[0]" in p.output()


def test_proxy_serves_reloads_and_keeps_the_old_config_on_a_bad_file(
    procs: list[Proc], tmp_path: Path, shard: Shard
) -> None:
    path = config(tmp_path, shard)
    port, http = free_port(), free_port()
    p = Proc(["proxy", "--config", str(path), "-p", str(port), "--http-port", str(http)])
    procs.append(p)
    with p.connect(port) as sock:
        assert talk(sock, b"use proxied\r\n") == b"USING proxied\r\n"
    wait_http(http, p)
    path.write_text("servers: [\n")
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "keeping the running configuration" in p.output(), "the rejected reload")
    with p.connect(port) as sock:
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"
    path.write_text(f"servers:\n  - {shard.address} s0 id=0\n  - 127.0.0.1:1 s1 id=1\n")
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in p.output(), "the good reload")
    status, body = get(http, "/healthz")
    assert status == 200 and json.loads(body)["shards"] == 2
    assert p.stop() == 0


def test_workers_share_the_port_and_die_with_the_supervisor(
    procs: list[Proc], tmp_path: Path, shard: Shard
) -> None:
    path = config(tmp_path, shard)
    port, http = free_port(), free_port_run(2)  # worker i serves HTTP on http + i
    args = ["proxy", "--config", str(path), "-p", str(port), "--workers", "2"]
    p = Proc([*args, "--http-port", str(http)])
    procs.append(p)
    wait_http(http, p)
    wait_http(http + 1, p)
    pids = {json.loads(get(h, "/route?tube=x")[1])["pid"] for h in (http, http + 1)}
    workers = children(p.pid)
    assert pids == set(workers) and len(workers) == 2
    for _ in range(20):
        with p.connect(port) as sock:
            assert talk(sock, b"use w\r\n") == b"USING w\r\n"
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: p.output().count("reloaded") == 2, "both workers to reload")
    p.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: p.output().count("drain mode") == 2, "both workers to drain")
    assert p.stop() == 0
    assert not any(alive(w) for w in workers)
    # SIGKILL of the supervisor: the workers follow it.
    p2 = Proc(args)
    procs.append(p2)
    with p2.connect(port) as sock:
        assert talk(sock, b"use w\r\n") == b"USING w\r\n"
    wait_for(lambda: len(children(p2.pid)) == 2, "two workers")
    workers = children(p2.pid)
    p2.proc.send_signal(signal.SIGKILL)
    p2.proc.wait(10)
    wait_for(lambda: not any(alive(w) for w in workers), "the orphaned workers to exit", 15)


def test_a_worker_that_cannot_start_stops_the_supervisor(procs: list[Proc], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: 3\n")
    p = Proc(["proxy", "--config", str(bad), "-p", str(free_port()), "--workers", "2"])
    procs.append(p)
    assert p.proc.wait(30) == 1
    assert "while starting" in p.output()


def _ledger(pid: int) -> str | None:
    """The unseen-counter ledger process ``pid`` maps (its file's name), if any."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            names = {line.split()[5] for line in f if "beanrouter-unseen-" in line}
    except OSError:
        return None
    return names.pop() if len(names) == 1 else None


def test_workers_share_one_unseen_counter_ledger(
    procs: list[Proc], tmp_path: Path, shard: Shard
) -> None:
    """The routing core's workers map the one ledger the supervisor made (tests/unit/
    test_unseen_ledger.py: what that does for ``stats-job``); nothing is left in /dev/shm, as
    the file was unlinked as soon as it was made."""
    path = config(tmp_path, shard)
    port = free_port()
    p = Proc(["proxy", "--config", str(path), "-p", str(port), "--workers", "2"], backend=None)
    procs.append(p)
    with p.connect(port) as sock:
        assert talk(sock, b"use w\r\n") == b"USING w\r\n"
    wait_for(lambda: len(children(p.pid)) == 2 and all(map(_ledger, children(p.pid))),
             "both workers to map a ledger")  # fmt: skip
    assert len({_ledger(w) for w in children(p.pid)}) == 1
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("beanrouter-unseen-")]
    assert p.stop() == 0
