"""``beanrouter cluster``: N bundled shards and a proxy in front of them, in one command.

Takes beanstalkd's flags (``-l -p -b -z -f -F -s -V -v -h``, parsed by the bundled server's own
parser, so errors and ``-v``/``-h`` print as beanstalkd does) plus ``--shards N`` (default 3),
``--http-port P`` and ``--http-addr A``, so it can stand in for ``/usr/bin/beanstalkd`` in any
harness. Start-up order, for harnesses that connect 0.1 s after starting it:

1. parse the flags and bind the proxy's listening socket (standard library only, no click);
   connections from now on wait in its backlog (1024);
2. bind one loopback socket per shard and start each shard, ``beanrouter server`` with those
   flags (``-b DIR/shard-i``), through ``child.spawn``: the shard is handed its socket (so no
   race for free ports) and dies with this process, also when this process is SIGKILLed;
3. import the proxy and the backend, wait until every shard answers, build the cluster
   configuration in memory and only then start accepting clients.

Shard ids: ``--shards 1`` gives the single shard id 0, so job ids are byte-identical to
beanstalkd's; with N shards the ring owner of tube ``default`` gets id 0 (a client that never
uses another tube sees beanstalkd's ids too) and the others 1..N-1. Shard names are
``shard-0``..``shard-N-1``. With ``-b DIR`` the shard count is recorded in ``DIR/cluster.json``
and a different ``--shards`` for the same directory is refused (its jobs would be stranded).

Supervision: a shard that exits while the cluster runs is restarted on the same socket (clients'
connections to it wait in its backlog meanwhile; its binlog brings its jobs back), after 0.5 s,
doubling to 10 s while it keeps dying within 5 s. SIGUSR1 drains (puts answer DRAINING), SIGTERM
or SIGINT stops the proxy gracefully, then SIGTERMs the shards (SIGKILL after 10 s), exit 0.
SIGHUP is logged and ignored (the configuration is built in memory). A shard that cannot start
(say, its binlog directory is locked) stops everything with the shard's exit status.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Final

# Only what binding the listening socket needs is imported up front (start-up speed).
from ..server.listen import ListenError, bind, inherited_socket
from ..server.options import ServerOptions, UsageExit, parse_args

if TYPE_CHECKING:
    import asyncio
    import subprocess
    from collections.abc import Callable

    from ..router.config import ClusterConfig
    from .app import ProxyServer
    from .seam import BackendFactory
    from .stats import ProxyStats

__all__ = ["ClusterOptions", "main", "parse_cluster_args", "run", "shard_ids"]

DEFAULT_SHARDS: Final = 3
MAX_SHARDS: Final = 256
READY_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 10.0
SHARD_HOST: Final = "127.0.0.1"
STATE_FILE: Final = "cluster.json"
EXTRA_USAGE: Final = (
    f" --shards N      number of bundled shards (default is {DEFAULT_SHARDS})\n"
    " --http-port P   serve /healthz, /metrics and /route on port P (default: off)\n"
    " --http-addr A   address of the HTTP port (default is 127.0.0.1)\n"
)


class ClusterOptions:
    """What ``beanrouter cluster``'s command line asked for."""

    __slots__ = ("http_addr", "http_port", "server", "shards")

    def __init__(self, server: ServerOptions) -> None:
        self.server = server
        self.shards = DEFAULT_SHARDS
        self.http_addr = "127.0.0.1"
        self.http_port: int | None = None


def _usage_error(progname: str, message: str) -> UsageExit:
    from ..server.options import usage_text

    return UsageExit(5, stderr=f"{progname}: {message}\n{usage_text(progname)}{EXTRA_USAGE}")


def parse_cluster_args(argv: list[str], progname: str = "beanrouter cluster") -> ClusterOptions:
    """Parse the command line (``argv`` excludes the program name); raises ``UsageExit``."""
    rest: list[str] = []
    longs: dict[str, str] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        name, eq, value = word.partition("=")
        if name in ("--shards", "--http-port", "--http-addr"):
            if not eq:
                if i >= len(argv):
                    raise _usage_error(progname, f"option requires an argument: {name}")
                value = argv[i]
                i += 1
            longs[name] = value
        else:
            rest.append(word)
    try:
        server = parse_args(rest, progname=progname)
    except UsageExit as exc:
        if "Options:" in exc.stderr:
            exc.stderr += EXTRA_USAGE
        raise
    opts = ClusterOptions(server)
    if "--shards" in longs:
        text = longs["--shards"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_SHARDS:
            raise _usage_error(progname, f"invalid shard count: {text} (1..{MAX_SHARDS})")
        opts.shards = int(text)
    if "--http-port" in longs:
        text = longs["--http-port"]
        if not text.isdigit() or int(text) > 65535:
            raise _usage_error(progname, f"invalid port: {text}")
        opts.http_port = int(text)
    if "--http-addr" in longs:
        opts.http_addr = longs["--http-addr"]
    return opts


def shard_ids(names: list[str]) -> dict[str, int]:
    """Shard id per name: 0 for the ring owner of tube ``default``, then 1.. in order."""
    from ..router.ring import Placement

    owner = Placement([(name, 1) for name in names]).owner("default")
    others = iter(range(1, len(names)))
    return {name: 0 if name == owner else next(others) for name in names}


def shard_args(opts: ServerOptions, index: int, port: int) -> list[str]:
    """The ``beanrouter`` argv of shard ``index`` (its socket is passed, ``-l/-p`` are shown)."""
    args = ["server", "-l", SHARD_HOST, "-p", str(port), "-z", str(opts.max_job_size)]
    if opts.binlog_dir is not None:
        args += ["-b", os.path.join(opts.binlog_dir, f"shard-{index}")]
        args += ["-s", str(opts.binlog_file_size)]
        args += ["-F"] if opts.fsync_ms is None else ["-f", str(opts.fsync_ms)]
        if opts.salvage:
            args.append("--salvage")
    if opts.verbose > 1:
        args.append("-" + "V" * (opts.verbose - 1))
    return args


def _prepare_binlog(directory: str, shards: int) -> str | None:
    """Create ``DIR`` and ``DIR/shard-i``; check the recorded shard count. Returns an error."""
    import json
    from pathlib import Path

    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        state = root / STATE_FILE
        if state.exists():
            recorded = json.loads(state.read_text(encoding="utf-8")).get("shards")
            if recorded != shards:
                return (
                    f"{directory} holds the binlogs of a {recorded}-shard cluster; start it with"
                    f" --shards {recorded}, or use another directory"
                )
        else:
            state.write_text(json.dumps({"shards": shards}) + "\n", encoding="utf-8")
        for i in range(shards):
            (root / f"shard-{i}").mkdir(exist_ok=True)
    except (OSError, ValueError, AttributeError) as exc:
        return f"cannot prepare the binlog directory {directory}: {exc}"
    return None


class Shard:
    """One shard process and the listening socket it is handed (kept here for restarts)."""

    def __init__(self, index: int, sock: socket.socket, opts: ServerOptions) -> None:
        self.index = index
        self.name = f"shard-{index}"
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.args = shard_args(opts, index, self.port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.backoff = 0.5
        self.restart_at: float | None = None

    def start(self) -> None:
        from .child import spawn

        self.proc = spawn(self.args, listen=self.sock)
        self.started_at = time.monotonic()
        self.restart_at = None

    def poll(self) -> int | None:
        """The exit status once the process is gone (None while it runs or was never started)."""
        return None if self.proc is None else self.proc.poll()


class ShardFailed(Exception):
    def __init__(self, shard: Shard, status: int) -> None:
        super().__init__(f"{shard.name} ({' '.join(shard.args)}) exited with status {status}")
        self.status = status


def stop_shards(shards: list[Shard], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every shard, wait up to ``timeout`` seconds, SIGKILL the rest; reap all."""
    for shard in shards:
        if shard.proc is not None and shard.proc.poll() is None:
            shard.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for shard in shards:
        if shard.proc is None:
            continue
        try:
            shard.proc.wait(max(0.0, deadline - time.monotonic()))
        except Exception:  # subprocess.TimeoutExpired, or interrupted
            shard.proc.kill()
            shard.proc.wait()


async def _probe(port: int) -> bool:
    """True once the shard on ``port`` answers a command (False: not yet, try again)."""
    import asyncio

    try:
        reader, writer = await asyncio.open_connection(SHARD_HOST, port)
    except OSError:
        return False
    try:
        writer.write(b"list-tube-used\r\n")
        line = await reader.readline()
        return line.startswith(b"USING ")
    except OSError:
        return False
    finally:
        writer.close()


async def wait_ready(shards: list[Shard], timeout: float, stop: asyncio.Event) -> None:
    """Return when every shard answers; raise ``ShardFailed`` if one exits, TimeoutError."""
    import asyncio

    async def one(shard: Shard) -> None:
        while True:
            probe = asyncio.ensure_future(_probe(shard.port))
            while not probe.done():
                status = shard.poll()
                if status is not None:
                    probe.cancel()
                    raise ShardFailed(shard, status)
                await asyncio.wait((probe,), timeout=0.05)
            if probe.result():
                return
            await asyncio.sleep(0.05)

    tasks = {asyncio.ensure_future(one(shard)) for shard in shards}
    stopper = asyncio.ensure_future(stop.wait())
    deadline = time.monotonic() + timeout
    try:
        while tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the shards did not answer within {timeout:g} s")
            done, _ = await asyncio.wait(
                [*tasks, stopper], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if stopper in done:
                return
            for task in done:
                tasks.discard(task)
                exc = task.exception()
                if exc is not None:
                    raise exc
    finally:
        for task in [*tasks, stopper]:
            task.cancel()


async def supervise(shards: list[Shard], wake: asyncio.Event, stopping: Callable[[], bool]) -> None:
    """Restart shards that exit, with backoff, until cancelled or ``stopping()``."""
    import asyncio
    import contextlib

    while not stopping():
        now = time.monotonic()
        for shard in shards:
            if shard.restart_at is not None:
                if now >= shard.restart_at:
                    print(f"beanrouter cluster: restarting {shard.name}", file=sys.stderr)
                    shard.start()
                continue
            status = shard.poll()
            if status is None:
                continue
            lived = now - shard.started_at
            shard.backoff = 0.5 if lived >= 5.0 else min(shard.backoff * 2, 10.0)
            shard.restart_at = now + shard.backoff
            print(
                f"beanrouter cluster: {shard.name} exited with status {status}; restarting it"
                f" in {shard.backoff:g} s",
                file=sys.stderr,
            )
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), 0.2)


def _address(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, tuple):
        return f"[{name[0]}]:{name[1]}" if ":" in name[0] else f"{name[0]}:{name[1]}"
    return f"unix:{name}"


async def _serve(
    opts: ClusterOptions,
    sock: socket.socket,
    http_sock: socket.socket | None,
    shards: list[Shard],
    factory: BackendFactory,
    stats: ProxyStats,
    early: dict[str, bool],
) -> int:
    import asyncio

    from ..router.config import config_from_servers
    from .run import serve

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    wake = asyncio.Event()

    def drain() -> None:
        stats.draining = True

    # Until the proxy takes them over (add_signal_handler replaces, never leaves a gap).
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, drain)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    loop.add_signal_handler(signal.SIGCHLD, wake.set)
    if early["term"]:
        stop.set()
    try:
        await wait_ready(shards, READY_TIMEOUT, stop)
    except ShardFailed as exc:
        print(f"beanrouter cluster: {exc}", file=sys.stderr)
        return exc.status or 1
    except TimeoutError as exc:
        print(f"beanrouter cluster: {exc}", file=sys.stderr)
        return 1
    if stop.is_set():
        return 0
    names = [shard.name for shard in shards]
    ids = shard_ids(names)
    config: ClusterConfig = config_from_servers(
        [f"{SHARD_HOST}:{s.port} {s.name} id={ids[s.name]}" for s in shards]
    )
    proxies: list[ProxyServer] = []
    keeper = loop.create_task(
        supervise(shards, wake, lambda: stop.is_set() or any(p.stopping for p in proxies))
    )

    def ready(proxy: ProxyServer) -> None:
        proxies.append(proxy)
        proxy.config_path = None  # SIGHUP: logged, nothing to reload
        if stop.is_set():
            proxy.request_stop()
        if opts.server.verbose:
            where = _address(sock)
            if http_sock is not None:
                where += f" (HTTP on {_address(http_sock)})"
            listing = ", ".join(f"{s.name} {SHARD_HOST}:{s.port} id={ids[s.name]}" for s in shards)
            print(
                f"beanrouter cluster listening on {where}; {len(shards)} shards: {listing}",
                file=sys.stderr,
            )

    try:
        await serve(sock, config, factory, stats=stats, http_sock=http_sock, ready=ready)
    finally:
        keeper.cancel()
        loop.remove_signal_handler(signal.SIGCHLD)
    return 0


def run(opts: ClusterOptions) -> int:
    """Run the cluster until SIGTERM/SIGINT; returns the exit status."""
    server = opts.server
    for line in server.warnings:
        print(line, file=sys.stderr)
    if server.user is not None:
        print("beanrouter cluster: -u is not supported; start it as that user", file=sys.stderr)
        return 3
    early = {"term": False, "drain": False}

    def on_term(signum: int, frame: object) -> None:
        early["term"] = True
        raise SystemExit(0)  # before the loop runs: the finally below stops the shards

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, lambda signum, frame: early.__setitem__("drain", True))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # 1. Listen first: early connections wait in the backlog.
    try:
        sock = inherited_socket() or bind(server.addr, server.port)
        http_sock = None
        if opts.http_port is not None:
            http_sock = bind(opts.http_addr, opts.http_port)
    except ListenError as exc:
        print(f"beanrouter cluster: {exc}", file=sys.stderr)
        return 1
    if server.binlog_dir is not None:
        error = _prepare_binlog(server.binlog_dir, opts.shards)
        if error is not None:
            print(f"beanrouter cluster: {error}", file=sys.stderr)
            return 1
    # 2. The shards, each on a socket bound here.
    shards: list[Shard] = []
    try:
        for i in range(opts.shards):
            shards.append(Shard(i, bind(SHARD_HOST, 0), server))
        for shard in shards:
            shard.start()
        # 3. The proxy.
        from .run import BackendUnavailable, load_backend_factory, raise_nofile_limit, setup_logging
        from .stats import ProxyStats

        try:
            factory = load_backend_factory()
        except BackendUnavailable as exc:
            print(f"beanrouter cluster: {exc}", file=sys.stderr)
            return 1
        import logging

        setup_logging(logging.INFO if server.verbose else logging.WARNING)
        raise_nofile_limit()
        stats = ProxyStats(max_job_size=server.max_job_size)
        stats.draining = early["drain"]
        import asyncio

        return asyncio.run(_serve(opts, sock, http_sock, shards, factory, stats, early))
    except ListenError as exc:
        print(f"beanrouter cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # we are stopping anyway
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_shards(shards)


def main(argv: list[str] | None = None, progname: str | None = None) -> None:
    """Entry point of ``beanrouter cluster`` and ``beanrouter-cluster``."""
    args = sys.argv[1:] if argv is None else argv
    if progname is None:
        base = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        progname = base if base and base not in ("beanrouter", "__main__.py") else "beanrouter"
        if progname == "beanrouter":
            progname = "beanrouter cluster"
    try:
        opts = parse_cluster_args(args, progname=progname)
    except UsageExit as exc:
        sys.stdout.write(exc.stdout)
        sys.stderr.write(exc.stderr)
        sys.exit(exc.code)
    try:
        sys.exit(run(opts))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
