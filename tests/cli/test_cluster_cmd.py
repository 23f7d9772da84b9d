"""``beanrouter cluster``, the supervisor: flags, readiness, shard processes, binlogs, no orphans.

The routing core is not what is tested here: the proxy runs with the test backend of
``tests/proxy/fakes.py`` (``$BEANROUTER_BACKEND``), which forwards commands to the first shard and
answers ``list-tube-used`` only once *every* shard has answered it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from beanrouter.proxy.cluster import parse_cluster_args, shard_ids
from beanrouter.server.options import UsageExit
from tests.ports import free_port

from .procs import REPO_ROOT, Proc, alive, children, env, talk, wait_for

PY = [sys.executable, "-m", "beanrouter", "cluster"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PY, *args], capture_output=True, text=True, timeout=30, cwd=REPO_ROOT, env=env()
    )


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.close()


def cluster(procs: list[Proc], *args: str, backend: str | None = None) -> tuple[Proc, int]:
    port = free_port()
    argv = ["cluster", "-p", str(port), *args]
    p = Proc(argv) if backend is None else Proc(argv, backend=backend)
    procs.append(p)
    return p, port


# -- flags ----------------------------------------------------------------------------------------


def test_version_flag_prints_like_beanstalkd() -> None:
    done = run("-v")
    assert (done.returncode, done.stdout) == (0, "beanstalkd 1.12\n")


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_shows_beanstalkd_flags_and_shards(flag: str) -> None:
    """``--help`` too: the command is ours (the server keeps beanstalkd's "unknown flag")."""
    done = run(flag)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("Use: beanrouter cluster [OPTIONS]\n")
    assert " -b DIR" in done.stderr and "--shards N" in done.stderr
    assert done.stderr == run("-h").stderr  # the same help whichever flag asked
    assert parse_cluster_args_exit(["--shards", "2", flag, "-x"]) == 0  # help wins, as -h does


def test_bad_flags_exit_5_with_usage() -> None:
    for args in (["-x"], ["--shards", "0"], ["--shards=x"], ["--shards"], ["--shards=²"]):
        done = run(*args)
        assert done.returncode == 5, args
        assert "Options:" in done.stderr and "--shards N" in done.stderr, args


def parse_cluster_args_exit(argv: list[str]) -> int | None:
    try:
        parse_cluster_args(argv)
    except UsageExit as exc:
        return exc.code
    return None


def test_parse_cluster_args() -> None:
    opts = parse_cluster_args(["-l", "0.0.0.0", "-p11301", "--shards=5", "-z", "10", "-F"])
    assert (opts.server.addr, opts.server.port, opts.shards) == ("0.0.0.0", 11301, 5)
    assert opts.server.max_job_size == 10 and opts.server.fsync_ms is None
    opts = parse_cluster_args(["--http-port", "9000", "--shards", "1", "-V"])
    assert (opts.http_port, opts.shards, opts.server.verbose) == (9000, 1, 1)
    with pytest.raises(UsageExit):
        parse_cluster_args(["--http-port", "x"])


def test_shard_ids_give_the_owner_of_default_id_0() -> None:
    from beanrouter.core.ring import Placement

    assert shard_ids(["shard-0"]) == {"shard-0": 0}
    for n in (2, 3, 5):
        names = [f"shard-{i}" for i in range(n)]
        ids = shard_ids(names)
        assert sorted(ids.values()) == list(range(n))
        owner = Placement([(name, 1) for name in names]).owner("default")
        assert ids[owner] == 0


# -- running --------------------------------------------------------------------------------------


def test_the_listening_line_names_each_shard_with_its_id(procs: list[Proc]) -> None:
    """A shard's name is not its id (names place the tubes, and the owner of ``default`` has id
    0): ``-V`` says plainly which is which and why."""
    from beanrouter.core.ring import Placement

    p, port = cluster(procs, "--shards", "3", "-V")
    with p.connect(port) as sock:
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"
    wait_for(lambda: "shards: " in p.output(), "the listening line")
    line = next(line for line in p.output().splitlines() if "listening on" in line)
    names = ["shard-0", "shard-1", "shard-2"]
    ids = shard_ids(names)
    for name in names:
        assert re.search(rf"\b{name} \(id {ids[name]}\) on 127\.0\.0\.1:\d+", line), line
    owner = Placement([(name, 1) for name in names]).owner("default")
    assert ids[owner] == 0
    assert line.endswith(
        f"; tube default is on {owner}, which has id 0 so that its jobs keep beanstalkd's ids"
    ), line
    assert p.stop() == 0


def test_listens_at_once_and_answers_only_when_every_shard_is_ready(procs: list[Proc]) -> None:
    p, port = cluster(procs, "--shards", "3", "-V")
    sock = p.connect(port)  # bound first: this connection waits in the backlog
    with sock:
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"  # all 3 answered
        assert talk(sock, b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
    kids = children(p.pid)
    assert len(kids) == 3
    match = re.search(r"listening on 127\.0\.0\.1:(\d+); 3 shards: (.*)", p.output())
    assert match is not None and int(match.group(1)) == port
    assert sorted(re.findall(r"\(id (\d+)\)", match.group(2))) == ["0", "1", "2"]
    assert p.stop() == 0
    wait_for(lambda: not any(alive(k) for k in kids), "the shards to exit")


# Imported by no process of a cluster (the supervisor, the proxy in it, its shards) on its way to
# its first reply: the proxy's configuration is built without PyYAML, the blocking client is not
# the proxy's. Nor is OpenSSL's libcrypto loaded (asyncio is imported without ssl, md5 is
# CPython's own).
NOT_AT_START = (
    "yaml",
    "beanrouter.router.router",
    "beanrouter.router.summary",
    "beanrouter.proxy.seam",  # its protocols are for type checkers (and the console)
)
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| *(\S+)$", re.M)


def _maps_libcrypto(pid: int) -> bool:
    return any(
        "libcrypto" in line or "libssl" in line
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
    )


def test_the_shards_start_without_a_new_interpreter(procs: list[Proc], tmp_path: Path) -> None:
    """Start-up: the shards are forked from the supervisor once it has imported the server, so
    a 3-shard cluster imports the server (and the binlog) once, not once per shard, and the
    proxy imports nothing it does not need (``python -X importtime`` of every process)."""
    port = free_port()
    p = Proc(
        ["cluster", "--shards", "3", "-p", str(port), "-b", str(tmp_path / "data")],
        backend=None,  # the real proxy
        extra_env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    procs.append(p)
    with p.connect(port) as sock:
        assert talk(sock, b"put 0 0 60 1\r\nx\r\n") == b"INSERTED 1\r\n"
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"
    kids = children(p.pid)
    comms = sorted(Path(f"/proc/{kid}/comm").read_text().strip() for kid in kids)
    assert comms == ["br-shard-0", "br-shard-1", "br-shard-2"]  # forks, named for ps and top
    if importlib.util.find_spec("uvloop") is None:  # uvloop (beanrouter[fast]) loads OpenSSL
        assert [pid for pid in [p.pid, *kids] if _maps_libcrypto(pid)] == []
    assert p.stop() == 0
    imported = IMPORTED.findall(p.output())
    assert "beanrouter.proxy.app" in imported  # the report is there
    for module in ("beanrouter.server.engine", "beanrouter.server.binlog", "asyncio"):
        assert imported.count(module) == 1, f"{module} imported {imported.count(module)} times"
    assert [m for m in NOT_AT_START if m in imported] == []


def test_the_cluster_configuration_is_what_server_lines_give() -> None:
    from beanrouter.proxy.shards import SHARD_HOST, cluster_config
    from beanrouter.router.config import config_from_servers

    ports = {"shard-0": 11301, "shard-1": 11302, "shard-2": 11303}
    ids = shard_ids(list(ports))
    lines = [f"{SHARD_HOST}:{port} {name} id={ids[name]}" for name, port in ports.items()]
    assert cluster_config(ports, ids) == config_from_servers(lines)
    assert cluster_config(ports, ids).servers == config_from_servers(lines).servers


def test_sigterm_stops_every_shard(procs: list[Proc]) -> None:
    p, port = cluster(procs, "--shards", "2")
    with p.connect(port) as sock:
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"
    kids = children(p.pid)
    assert len(kids) == 2
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0
    assert not any(alive(k) for k in kids)  # reaped before the supervisor exited


def test_sigterm_while_starting_leaves_no_shard(procs: list[Proc]) -> None:
    p, _ = cluster(procs, "--shards", "3")
    wait_for(lambda: len(children(p.pid)) == 3, "the shards to be spawned")
    kids = children(p.pid)
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0
    assert not any(alive(k) for k in kids)


def test_sigkill_of_the_supervisor_leaves_no_orphan_shards(procs: list[Proc]) -> None:
    p, port = cluster(procs, "--shards", "3")
    with p.connect(port) as sock:
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"
    kids = children(p.pid)
    assert len(kids) == 3
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait(10)
    wait_for(lambda: not any(alive(k) for k in kids), "the orphaned shards to exit", 10)


def test_sigusr1_drains(procs: list[Proc]) -> None:
    p, port = cluster(procs, "--shards", "1", backend="tests.proxy.fakes:make_backend")
    with p.connect(port) as sock:
        assert talk(sock, b"put 0 0 1 1\r\nx\r\n") == b"INSERTED 1\r\n"
        p.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: talk(sock, b"put 0 0 1 1\r\nx\r\n") == b"DRAINING\r\n", "drain mode")
    assert p.stop() == 0


def test_a_shard_that_dies_is_restarted_on_the_same_port(procs: list[Proc]) -> None:
    p, port = cluster(procs, "--shards", "2")
    with p.connect(port) as sock:
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"
    before = children(p.pid)
    os.kill(before[0], signal.SIGKILL)
    wait_for(lambda: len(set(children(p.pid)) - set(before)) == 1, "a new shard process")
    with p.connect(port) as sock:
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"  # both answer again
    assert "shard-" in p.output() and "restarting" in p.output()
    assert p.stop() == 0


def test_binlog_dir_gets_one_directory_per_shard_and_jobs_survive(
    procs: list[Proc], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    p, port = cluster(procs, "--shards", "1", "-b", str(data))
    with p.connect(port) as sock:
        assert talk(sock, b"put 0 0 60 4\r\nkeep\r\n") == b"INSERTED 1\r\n"
    assert p.stop() == 0
    assert json.loads((data / "cluster.json").read_text()) == {"shards": 1}
    assert [d.name for d in data.iterdir() if d.is_dir()] == ["shard-0"]
    assert any(f.name.startswith("beanrouter-binlog.") for f in (data / "shard-0").iterdir())
    p2, port2 = cluster(procs, "--shards", "1", "-b", str(data))
    with p2.connect(port2) as sock:
        assert talk(sock, b"reserve-with-timeout 0\r\n", b"keep\r\n") == b"RESERVED 1 4\r\nkeep\r\n"
    assert p2.stop() == 0
    # Three shards need three directories; another count for the same data is refused.
    p3, _ = cluster(procs, "--shards", "3", "-b", str(data))
    assert p3.proc.wait(30) == 1
    assert "1-shard cluster" in p3.output()
    other = tmp_path / "three"
    p4, port4 = cluster(procs, "--shards", "3", "-b", str(other))
    with p4.connect(port4) as sock:
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"
    assert sorted(d.name for d in other.iterdir() if d.is_dir()) == [
        "shard-0",
        "shard-1",
        "shard-2",
    ]
    assert p4.stop() == 0


def test_a_shard_that_cannot_start_stops_everything(procs: list[Proc], tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, port = cluster(procs, "--shards", "2", "-b", str(data))
    with first.connect(port) as sock:
        assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"
    second, _ = cluster(procs, "--shards", "2", "-b", str(data))  # the binlogs are locked
    assert second.proc.wait(30) == 10  # the bundled server's (and beanstalkd's) status
    assert children(second.pid) == []
    assert first.stop() == 0


def test_missing_backend_is_a_clear_error(procs: list[Proc]) -> None:
    p, _ = cluster(procs, "--shards", "2", backend="no_such_module:make_backend")
    assert p.proc.wait(30) == 1
    assert "cannot import the proxy backend" in p.output()


def test_port_in_use_is_a_clear_error(procs: list[Proc]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = Proc(["cluster", "-p", str(port)])
        procs.append(p)
        assert p.proc.wait(30) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in p.output()


# What must not be imported when the listening socket starts listening: each costs start-up time
# (socket pulls in selectors, typing is large, the rest is the proxy and the shards' supervisor).
HEAVY = ("asyncio", "socket", "selectors", "typing", "subprocess", "beanrouter.proxy.shards",
         "beanrouter.proxy.app", "beanrouter.core", "beanrouter.router")  # fmt: skip
SPY = """
import os, sys
import beanrouter.server.listen as listen
real = {name}
def spy(*args):
    sock = real(*args)
    sys.stdout.write(" ".join(m for m in {heavy!r} if m in sys.modules) + "|" + str(sock.listen))
    sys.stdout.flush()
    os._exit(0)
listen.{attr} = spy
sys.argv = ["beanrouter-cluster", {args}]
from beanrouter.proxy.cluster import main
main()
"""


@pytest.mark.parametrize(
    ("attr", "args"), [("_bind_inet", "'-l', '127.0.0.1', '-p', '0'"), ("_bind_unix", "'-l', UNIX")]
)
def test_cluster_listens_before_heavy_imports(attr: str, args: str, tmp_path: Path) -> None:
    """The console script's module binds its socket with nothing heavy imported yet, so a
    harness that connects right after spawning it lands in the backlog."""
    args = args.replace("UNIX", repr(f"unix:{tmp_path / 's.sock'}"))
    code = SPY.format(name=f"listen.{attr}", heavy=HEAVY, attr=attr, args=args)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env()
    )
    assert done.returncode == 0, done.stderr
    imported, _, listening = done.stdout.partition("|")
    assert listening.startswith("<built-in method listen"), done.stdout  # bound by _socket
    assert imported == "", f"imported before listening: {imported}"
