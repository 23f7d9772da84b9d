"""``beanrouter-server`` / ``beanrouter server``: start the bundled server with beanstalkd's flags.

Lean on purpose: test harnesses spawn this as ``$BEANSTALKD_PATH`` and give it 0.1 s to listen,
so it imports neither click nor the router.
"""

from __future__ import annotations

import os
import signal
import sys

from .listen import ListenError, bind, inherited_socket
from .options import ServerOptions, UsageExit, parse_args


def run(opts: ServerOptions) -> int:
    """Run the server described by ``opts`` until SIGTERM/SIGINT; returns the exit status."""
    for line in opts.warnings:
        print(line, file=sys.stderr)
    if opts.binlog_dir is not None:
        print("beanrouter server: -b (binlog persistence) is not yet supported", file=sys.stderr)
        return 3
    if opts.user is not None:
        print("beanrouter server: -u is not supported; start it as that user", file=sys.stderr)
        return 3
    # Until the event loop takes the signals over, remember SIGUSR1 (drain) and exit on SIGTERM:
    # a harness may signal us while the rest is still being imported.
    early_drain: list[int] = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: early_drain.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
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

    def ready(names: list[str]) -> None:
        if opts.verbose:
            print(f"beanrouter server listening on {', '.join(names)}", file=sys.stderr)

    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        import asyncio

        asyncio.run(serve(engine, sock, ready=ready))
    else:  # pragma: no cover - optional extra
        uvloop.run(serve(engine, sock, ready=ready))
    return 0


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
