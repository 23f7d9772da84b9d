"""The running part of ``beanrouter cluster`` (cluster.py, which documents it): the shard
processes, their readiness and supervision, and the proxy in front. Imported by ``cluster.run``
once the listening socket is bound.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Final, NoReturn

from ..server.listen import NOTIFY_ENV, ListenError, bind, sd_notify
from ..server.options import ServerOptions
from .cluster import ClusterOptions, shard_ids

if TYPE_CHECKING:
    import asyncio
    import subprocess
    from collections.abc import Callable

    from ..core.config import ClusterConfig
    from .app import ProxyServer
    from .seam import BackendFactory
    from .stats import ProxyStats

__all__ = [
    "Forked",
    "Shard",
    "ShardFailed",
    "answering_now",
    "cluster_config",
    "run_listening",
    "shard_args",
    "stop_shards",
    "wait_ready",
]

READY_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 10.0
SHARD_HOST: Final = "127.0.0.1"
STATE_FILE: Final = "cluster.json"


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


def cluster_config(ports: dict[str, int], ids: dict[str, int]) -> ClusterConfig:
    """The proxy's configuration: shard ``name`` on ``SHARD_HOST:ports[name]`` with id
    ``ids[name]``, in order; what ``config_from_servers(["HOST:PORT NAME id=ID", ...])`` builds,
    without PyYAML (which that parses with)."""
    from ..core.config import ClusterConfig, ShardConfig

    return ClusterConfig(
        servers=tuple(
            ShardConfig(name=name, host=SHARD_HOST, port=port, id=ids[name])
            for name, port in ports.items()
        )
    )


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


class Forked:
    """A shard forked from this process: the part of ``subprocess.Popen`` the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                self.returncode = 255
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"pid {self.pid} still runs after {timeout:g} s")
            time.sleep(0.01)
        return status

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _name_process(name: str) -> None:
    """Set the kernel's name of this process (``/proc/PID/comm``, 15 bytes; Linux only)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)  # PR_SET_NAME
        except (OSError, AttributeError):  # pragma: no cover - no usable libc
            pass


def _forked_shard(shard: Shard, parent: int, close: list[socket.socket]) -> NoReturn:
    """The forked child: become what ``child.adopt`` makes of an exec'd shard, then run the
    bundled server on the shard's socket; never returns into the supervisor's code."""
    status = 1
    try:
        import gc

        gc.enable()  # off while the supervisor starts (cluster.main)
        os.setsid()  # as ``spawn``: a terminal's ^C reaches only the supervisor
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server installs its own
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        from .child import die_with_parent

        die_with_parent(parent)
        _name_process(f"br-{shard.name}")  # ps -o comm, top: a fork shows its parent's argv
        for other in close:  # the proxy's and the other shards' sockets
            os.close(other.detach())
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        from ..server.cli import run
        from ..server.options import parse_args

        progname = "beanrouter server"
        status = run(parse_args(shard.args[1:], progname=progname), progname, sock=shard.sock)
    except SystemExit as exc:
        code = exc.code
        status = code if isinstance(code, int) else 0 if code is None else 1
    except KeyboardInterrupt:
        status = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        import contextlib

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # exiting anyway
                stream.flush()
        os._exit(status)


class Shard:
    """One shard process and the listening socket it is handed (kept here for restarts)."""

    def __init__(self, index: int, sock: socket.socket, opts: ServerOptions) -> None:
        self.index = index
        self.name = f"shard-{index}"
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.args = shard_args(opts, index, self.port)
        self.proc: subprocess.Popen[bytes] | Forked | None = None
        self.started_at = 0.0
        self.backoff = 0.5
        self.restart_at: float | None = None

    def start(self) -> None:
        """Start ``beanrouter server`` as a new process (a restart)."""
        from .child import spawn

        self.proc = spawn(self.args, listen=self.sock)
        self.started_at = time.monotonic()
        self.restart_at = None

    def fork(self, close: list[socket.socket]) -> None:
        """Start the shard as a fork of this process (the first start: the supervisor has
        imported the server, so the shard starts without a new interpreter or any import).
        ``close``: the sockets the child must not keep. Only while this process has no threads
        and no event loop."""
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _forked_shard(self, parent, close)
        self.proc = Forked(pid)
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


def answering_now(shards: list[Shard], timeout: float = 0.05) -> bool:
    """Every shard answers ``list-tube-used`` with ``USING`` within ``timeout`` seconds, asked
    of all at once over blocking sockets: the common case at start-up (the shards are up when
    the proxy's imports end), checked in a fraction of the time ``wait_ready``'s tasks take.
    False (a shard not answering yet, or gone): ask ``wait_ready``."""
    import select

    if any(shard.poll() is not None for shard in shards):
        return False
    conns: list[socket.socket] = []
    try:
        for shard in shards:
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conns.append(conn)
            conn.settimeout(timeout)
            conn.connect((SHARD_HOST, shard.port))
            conn.sendall(b"list-tube-used\r\n")
        deadline = time.monotonic() + timeout
        replies = dict.fromkeys(conns, b"")
        waiting = list(conns)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select(waiting, [], [], left)
            for conn in readable:
                chunk = conn.recv(256)
                replies[conn] += chunk
                if not chunk or len(replies[conn]) > 256:
                    return False
                if replies[conn].endswith(b"\r\n"):
                    waiting.remove(conn)
        return all(reply.startswith(b"USING ") for reply in replies.values())
    except OSError:  # refused, reset, timed out
        return False
    finally:
        for conn in conns:
            conn.close()


# ASYNC109: the deadline is shared with the stop event and shard exits in one wait loop.
async def wait_ready(shards: list[Shard], timeout: float, stop: asyncio.Event) -> None:  # noqa: ASYNC109
    """Return when every shard answers; raise ``ShardFailed`` if one exits, TimeoutError."""
    import asyncio

    from .driver import answers

    async def one(shard: Shard) -> None:
        while True:
            probe = asyncio.ensure_future(answers(SHARD_HOST, shard.port))
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
    notify: str | None,
) -> int:
    import asyncio

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
        if stop.is_set() or not answering_now(shards):
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
    ids = shard_ids(names)  # a shard's id is not the number in its name: see cluster.py
    default = next(name for name, i in ids.items() if i == 0)  # the ring owner of default
    config = cluster_config({s.name: s.port for s in shards}, ids)
    proxies: list[ProxyServer] = []
    keeper = loop.create_task(
        supervise(shards, wake, lambda: stop.is_set() or any(p.stopping for p in proxies))
    )

    def ready(proxy: ProxyServer) -> None:
        import gc

        gc.enable()  # off while starting (cluster.main)
        proxies.append(proxy)
        proxy.config_path = None  # SIGHUP: logged, nothing to reload
        if stop.is_set():
            proxy.request_stop()
        if notify is not None:
            sd_notify(notify, f"READY=1\nMAINPID={os.getpid()}")
        if opts.server.verbose:
            where = _address(sock)
            if http_sock is not None:
                where += f" (HTTP on {_address(http_sock)})"
            listing = ", ".join(
                f"{s.name} (id {ids[s.name]}) on {SHARD_HOST}:{s.port}" for s in shards
            )
            print(
                f"beanrouter cluster listening on {where}; {len(shards)} shards: {listing};"
                f" tube default is on {default}, which has id 0 so that its jobs keep"
                " beanstalkd's ids",
                file=sys.stderr,
            )

    try:
        await serve(
            sock,
            config,
            factory,
            stats=stats,
            http_sock=http_sock,
            http_admin=opts.http_admin,
            ready=ready,
        )
    finally:
        keeper.cancel()
        loop.remove_signal_handler(signal.SIGCHLD)
    return 0


def run_listening(
    opts: ClusterOptions, sock: socket.socket, http_sock: socket.socket | None
) -> int:
    """Run the cluster on the bound ``sock`` until SIGTERM/SIGINT; returns the exit status."""
    server = opts.server
    notify = os.environ.pop(NOTIFY_ENV, None) or None  # for us, not for the shards
    early = {"term": False, "drain": False}

    def on_term(signum: int, frame: object) -> None:
        early["term"] = True
        raise SystemExit(0)  # before the loop runs: the finally below stops the shards

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, lambda signum, frame: early.__setitem__("drain", True))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
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
        # Forked, not spawned: a new interpreter per shard, each importing the server, is most of
        # a cluster's start-up on a small machine (restarts spawn, see ``supervise``).
        from ..server.cli import preload

        preload(with_binlog=server.binlog_dir is not None)
        from . import child  # noqa: F401 - die_with_parent, for the children

        # Not ctypes (child.die_with_parent's prctl): each shard imports it, on another core,
        # while this process goes on to the proxy's imports (the first reply waits for those).
        sys.stdout.flush()
        sys.stderr.flush()
        import gc

        gc.freeze()  # what is imported so far stays shared with the shards, out of their GC
        held = [sock, *([] if http_sock is None else [http_sock]), *(s.sock for s in shards)]
        for shard in shards:
            shard.fork([other for other in held if other is not shard.sock])
        # 3. The proxy. Its placement hashes with md5 (ours and uhashring's, through hashlib):
        # CPython's own md5 does, without loading OpenSSL's libcrypto (as asyncio's ssl is left
        # out, see server.cli._event_loop), which is a good part of the proxy's imports.
        if "hashlib" not in sys.modules and "_hashlib" not in sys.modules:
            sys.modules["_hashlib"] = None  # type: ignore[assignment]
            try:
                import hashlib  # noqa: F401
            finally:
                del sys.modules["_hashlib"]
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

        return asyncio.run(_serve(opts, sock, http_sock, shards, factory, stats, early, notify))
    except ListenError as exc:
        print(f"beanrouter cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # we are stopping anyway
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_shards(shards)
