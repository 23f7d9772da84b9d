"""``beanrouter-server`` / ``beanrouter server``: start the bundled server with beanstalkd's flags.

Lean on purpose: test harnesses spawn this as ``$BEANSTALKD_PATH`` and give it 0.1 s to listen
(greenstalk's time their first reply too), so it imports neither click nor the router, and until
the socket listens nothing beyond ``os``, ``sys`` and C modules: ``signal`` is used through
``_signal`` (``signal`` imports ``enum``) and ``typing`` only by type checkers. What the first
reply needs (asyncio, the codec, the engine) is imported after that; tests/unit/test_package.py
checks the start path imports no click, yaml, uhashring or router code.
"""

from __future__ import annotations

import os
import sys

from .listen import NOTIFY_ENV, ListenError, bind, describe, inherited_socket, sd_notify
from .options import ServerOptions, UsageExit, parse_args

TYPE_CHECKING = False  # ``typing`` costs start-up time; type checkers take this name as true
if TYPE_CHECKING:
    import asyncio
    import signal as _signal  # the same functions and numbers, with type stubs
    import socket
    from collections.abc import Callable, Coroutine
    from typing import Any

    from .commit import GroupCommit
    from .engine import Engine
else:
    import _signal


LISTEN_STATUS = 111
"""Exit status when the address cannot be listened on (beanstalkd's)."""
NO_USER_STATUS = 33
"""``-u`` names no user (beanstalkd's)."""
SETID_STATUS = 34
"""``-u``: the group or user could not be taken (beanstalkd's)."""


def run(
    opts: ServerOptions, progname: str = "beanrouter server", sock: socket.socket | None = None
) -> int:
    """Run the server described by ``opts`` until SIGTERM/SIGINT; returns the exit status.

    ``sock``: a listening socket to serve on instead of ``-l``/``-p`` (or an inherited one); a
    shard that ``beanrouter cluster`` forks is handed its socket this way.
    """
    for line in opts.warnings:
        print(line, file=sys.stderr)
    # Until the event loop takes the signals over, remember SIGUSR1 (drain) and exit on SIGTERM:
    # a harness may signal us while the rest is still being imported.
    early_drain: list[int] = []
    early_term: list[int] = []

    def on_term(signum: int, frame: object) -> None:
        early_term.append(signum)
        sys.exit(0)

    _signal.signal(_signal.SIGUSR1, lambda signum, frame: early_drain.append(signum))
    _signal.signal(_signal.SIGTERM, on_term)
    if opts.verbose:
        print(f"pid {os.getpid()}", flush=True)
    # Listen first, import the rest after: early connections wait in the backlog.
    try:
        if sock is None:
            sock = inherited_socket() or bind(opts.addr, opts.port)
    except ListenError as exc:
        print(f"{progname}: {exc}", file=sys.stderr)
        return LISTEN_STATUS
    if opts.verbose:
        print(f"bind {sock.fileno()} {describe(sock)}", flush=True)
    loop_runner = _event_loop()
    from .app import serve
    from .engine import Engine

    if opts.user is not None:
        # Everything is imported first: the new user may not be able to read this Python's
        # files (an interpreter under /root, say). The binlog is opened as the new user.
        from . import binlog, commit  # noqa: F401

        status = become(opts.user, progname)
        if status:
            return status

    engine = Engine(max_job_size=opts.max_job_size)
    engine.draining = bool(early_drain)
    engine.binlog_stats["binlog-max-size"] = opts.binlog_file_size  # shown even without -b
    make_commit = None
    if opts.binlog_dir is not None:
        status, make_commit = _open_binlog(opts, engine, progname)
        if make_commit is None:
            return status

    notify = os.environ.pop(NOTIFY_ENV, None) or None

    def ready(names: list[str]) -> None:
        # The loop handles the signals now. A SIGTERM that came before may have had its
        # SystemExit swallowed (raised inside a finalizer, say): deliver it again.
        if early_term:
            os.kill(os.getpid(), _signal.SIGTERM)
        if notify is not None:  # systemd Type=notify: serving now (the binlog is loaded)
            sd_notify(notify, f"READY=1\nMAINPID={os.getpid()}")

    loop_runner(serve(engine, sock, ready=ready, commit=make_commit, verbose=opts.verbose))
    return 0


def preload(with_binlog: bool) -> None:
    """Import what ``run`` imports after listening (asyncio as ``run`` imports it, the engine,
    the server and, with ``with_binlog``, the binlog): ``beanrouter cluster`` calls this before it
    forks its shards, so they start without importing anything."""
    _event_loop()
    from . import app, engine  # noqa: F401

    if with_binlog:
        from . import binlog, commit  # noqa: F401


def _event_loop() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop's ``run`` when it is installed (extra ``beanrouter[fast]``; ``BEANROUTER_NO_UVLOOP``
    set: not used), else ``asyncio.run`` with asyncio imported without ``ssl``: the server never
    speaks TLS, and leaving OpenSSL unloaded saves 4.5 MB of resident memory and part of the
    start-up (``ssl`` stays importable for anyone else; only asyncio's own reference is None)."""
    if not os.environ.get("BEANROUTER_NO_UVLOOP"):
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            pass
        else:  # pragma: no cover - optional extra
            return uvloop.run  # type: ignore[no-any-return,unused-ignore]
    if "asyncio" not in sys.modules and "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]
        try:
            import asyncio
        finally:
            del sys.modules["ssl"]
    import asyncio

    return asyncio.run


def become(user: str, progname: str) -> int:
    """``-u USER``: take the user's group and then its uid (after binding, as beanstalkd);
    run as root, also its supplementary groups (beanstalkd keeps root's). 0, or the exit
    status with the message printed."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        print(f'{progname}: getpwnam("{user}"): no such user', file=sys.stderr)
        return NO_USER_STATUS
    steps: list[tuple[str, int, Callable[[], None]]] = []
    if os.geteuid() == 0:
        steps.append(("initgroups", entry.pw_gid, lambda: os.initgroups(user, entry.pw_gid)))
    steps.append(("setgid", entry.pw_gid, lambda: os.setgid(entry.pw_gid)))
    steps.append(("setuid", entry.pw_uid, lambda: os.setuid(entry.pw_uid)))
    for name, number, step in steps:
        try:
            step()
        except OSError as exc:
            print(f'{progname}: {name}({number} "{user}"): {exc.strerror}', file=sys.stderr)
            return SETID_STATUS
    return 0


LOCKED_STATUS = 10
"""Exit status when the binlog directory is missing or locked (beanstalkd's)."""


def _open_binlog(
    opts: ServerOptions, engine: Engine, progname: str
) -> tuple[int, Callable[[asyncio.AbstractEventLoop], GroupCommit] | None]:
    """Lock and replay ``-b DIR``; returns (0, a GroupCommit factory) or (exit status, None)."""
    from .binlog import DirLockError, RecoveryError, WalError, open_binlog
    from .commit import GroupCommit

    assert opts.binlog_dir is not None
    try:
        wal, found = open_binlog(
            engine,
            opts.binlog_dir,
            file_size=opts.binlog_file_size,
            fsync=opts.fsync_ms is not None,
            salvage=opts.salvage,
        )
    except DirLockError as exc:
        print(f"{progname}: {exc}", file=sys.stderr)
        return LOCKED_STATUS, None
    except (RecoveryError, WalError) as exc:
        print(f"{progname}: {exc}", file=sys.stderr)
        return 1, None
    except OSError as exc:
        print(
            f"{progname}: cannot open the binlog in {opts.binlog_dir}: {exc}",
            file=sys.stderr,
        )
        return 1, None
    if opts.verbose:
        print(
            f"{progname}: binlog {opts.binlog_dir}: {len(found.jobs)} jobs from "
            f"{found.records} records in {len(found.files)} files",
            file=sys.stderr,
        )
    fsync_ms = opts.fsync_ms
    return 0, lambda loop: GroupCommit(wal, loop, fsync_ms)


def main(argv: list[str] | None = None, progname: str | None = None) -> None:
    """Entry point of ``beanrouter-server`` (``beanrouter server`` passes its own name)."""
    args = sys.argv[1:] if argv is None else argv
    if progname is None:
        progname = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if not progname or progname.endswith(".py") or progname == "-c":
            progname = "beanrouter-server"  # python -m / -c: no useful program name
    try:
        opts = parse_args(args, progname=progname)
    except UsageExit as exc:
        sys.stdout.write(exc.stdout)
        sys.stderr.write(exc.stderr)
        sys.exit(exc.code)
    try:
        sys.exit(run(opts, progname))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
