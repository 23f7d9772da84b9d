"""``beanrouter-server`` / ``beanrouter server``: start the bundled server with beanstalkd's flags.

Lean on purpose: test harnesses spawn this as ``$BEANSTALKD_PATH`` and give it 0.1 s to listen,
so it imports neither click nor the router.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .listen import ListenError, bind, inherited_socket
from .options import ServerOptions, UsageExit, parse_args

if TYPE_CHECKING:
    import asyncio

    from .commit import GroupCommit
    from .engine import Engine


def run(opts: ServerOptions) -> int:
    """Run the server described by ``opts`` until SIGTERM/SIGINT; returns the exit status."""
    for line in opts.warnings:
        print(line, file=sys.stderr)
    if opts.user is not None:
        print("beanrouter server: -u is not supported; start it as that user", file=sys.stderr)
        return 3
    # Until the event loop takes the signals over, remember SIGUSR1 (drain) and exit on SIGTERM:
    # a harness may signal us while the rest is still being imported.
    early_drain: list[int] = []
    early_term: list[int] = []

    def on_term(signum: int, frame: object) -> None:
        early_term.append(signum)
        sys.exit(0)

    signal.signal(signal.SIGUSR1, lambda signum, frame: early_drain.append(signum))
    signal.signal(signal.SIGTERM, on_term)
    # Listen first, import the rest after: early connections wait in the backlog.
    try:
        sock = inherited_socket() or bind(opts.addr, opts.port)
    except ListenError as exc:
        print(f"beanrouter server: {exc}", file=sys.stderr)
        return 1

    from .app import serve
    from .engine import Engine

    engine = Engine(max_job_size=opts.max_job_size)
    engine.draining = bool(early_drain)
    engine.binlog_stats["binlog-max-size"] = opts.binlog_file_size  # shown even without -b
    make_commit = None
    if opts.binlog_dir is not None:
        status, make_commit = _open_binlog(opts, engine)
        if make_commit is None:
            return status

    def ready(names: list[str]) -> None:
        # The loop handles the signals now. A SIGTERM that came before may have had its
        # SystemExit swallowed (raised inside a finalizer, say): deliver it again.
        if early_term:
            os.kill(os.getpid(), signal.SIGTERM)
        if opts.verbose:
            print(f"beanrouter server listening on {', '.join(names)}", file=sys.stderr)

    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        import asyncio

        asyncio.run(serve(engine, sock, ready=ready, commit=make_commit))
    else:  # pragma: no cover - optional extra
        uvloop.run(serve(engine, sock, ready=ready, commit=make_commit))
    return 0


LOCKED_STATUS = 10
"""Exit status when the binlog directory is missing or locked (beanstalkd's)."""


def _open_binlog(
    opts: ServerOptions, engine: Engine
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
        print(f"beanrouter server: {exc}", file=sys.stderr)
        return LOCKED_STATUS, None
    except (RecoveryError, WalError) as exc:
        print(f"beanrouter server: {exc}", file=sys.stderr)
        return 1, None
    except OSError as exc:
        print(
            f"beanrouter server: cannot open the binlog in {opts.binlog_dir}: {exc}",
            file=sys.stderr,
        )
        return 1, None
    if opts.verbose:
        print(
            f"beanrouter server: binlog {opts.binlog_dir}: {len(found.jobs)} jobs from "
            f"{found.records} records in {len(found.files)} files",
            file=sys.stderr,
        )
    fsync_ms = opts.fsync_ms
    return 0, lambda loop: GroupCommit(wal, loop, fsync_ms)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``beanrouter-server``."""
    args = sys.argv[1:] if argv is None else argv
    progname = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "beanrouter-server"
    try:
        opts = parse_args(args, progname=progname)
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
