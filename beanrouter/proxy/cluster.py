"""``beanrouter cluster``: N bundled shards and a proxy in front of them, in one command.

Takes beanstalkd's flags (``-l -p -b -z -f -F -s -V -v -h``, parsed by the bundled server's own
parser, so errors and ``-v``/``-h`` print as beanstalkd does) plus ``--shards N`` (default 3),
``--http-port P``, ``--http-addr A`` and ``--help`` (the same as ``-h``: unlike the server, this
command is ours), so it can stand in for ``/usr/bin/beanstalkd`` in any harness. Start-up order,
for harnesses that connect 0.1 s after starting it:

1. parse the flags and bind the proxy's listening socket: this module and what it imports up to
   then are ``os``, ``sys``, the pure flag parser and ``_socket`` (``server.listen``), nothing
   else, so the port listens in about the time an idle interpreter takes to start; connections
   from now on wait in its backlog (1024). Everything else is in ``shards.py``, imported after;
2. bind one loopback socket per shard, import the bundled server (``server.cli.preload``) and
   fork each shard, which runs ``beanrouter server`` with those flags (``-b DIR/shard-i``) on
   its socket (so no race for free ports) in a session of its own, and dies with this process,
   also when this process is SIGKILLed (``child.die_with_parent``). Forked, the shards start
   without a new interpreter and without importing anything: three interpreters starting at once
   were most of a cluster's start-up on a 2-core machine. A restarted shard is spawned
   (``child.spawn``, a new interpreter), as the forks happen only before any thread or loop;
3. import the proxy and the backend (no PyYAML: the configuration is built from Python values;
   md5 without OpenSSL), wait until every shard answers, and only then start accepting clients;
   then, when started by a service manager with ``$NOTIFY_SOCKET`` (systemd ``Type=notify``),
   send it ``READY=1``.

Shard ids: ``--shards 1`` gives the single shard id 0, so job ids are byte-identical to
beanstalkd's; with N shards the ring owner of tube ``default`` gets id 0 (a client that never
uses another tube sees beanstalkd's ids too) and the others 1..N-1. Shard names are
``shard-0``..``shard-N-1``, so a shard's name and id differ (with 3 shards: ``shard-0`` id 1,
``shard-1`` id 0, ``shard-2`` id 2); ``-V`` prints each name with its id. They cannot agree
without losing that property: placement hashes the names, and the owner of ``default`` among
``shard-0``..``shard-N-1`` is ``shard-0`` for ``--shards 1`` only (of 1..12). Renaming the shards
instead would move tubes away from the binlog directories (``DIR/shard-i``) that hold their jobs,
and renumbering them would change what the global ids of stored jobs name. With ``-b DIR`` the
shard count is recorded in ``DIR/cluster.json`` and a different ``--shards`` for the same
directory is refused (its jobs would be stranded).

Supervision: a shard that exits while the cluster runs is restarted on the same socket (clients'
connections to it wait in its backlog meanwhile; its binlog brings its jobs back), after 0.5 s,
doubling to 10 s while it keeps dying within 5 s. SIGUSR1 drains (puts answer DRAINING), SIGTERM
or SIGINT stops the proxy gracefully, then SIGTERMs the shards (SIGKILL after 10 s), exit 0.
SIGHUP is logged and ignored (the configuration is built in memory). A shard that cannot start
(say, its binlog directory is locked) stops everything with the shard's exit status.
"""

from __future__ import annotations

import os
import sys

from ..server.options import ServerOptions, UsageExit, parse_args

TYPE_CHECKING = False  # not ``from typing``: start-up speed (type checkers take it as true)
if TYPE_CHECKING:
    from typing import Final

__all__ = ["ClusterOptions", "main", "parse_cluster_args", "run", "shard_ids"]

DEFAULT_SHARDS: Final = 3
MAX_SHARDS: Final = 256
EXTRA_USAGE: Final = (
    f" --shards N      number of bundled shards (default is {DEFAULT_SHARDS})\n"
    " --http-port P   serve the console, /healthz, /metrics and /route on port P (default: off)\n"
    " --http-admin    allow the console's admin actions (kick, delete, pause; default: read-only)\n"
    " --http-addr A   address of the HTTP port (default is 127.0.0.1)\n"
    " --help          show this help (as -h)\n"
)


class ClusterOptions:
    """What ``beanrouter cluster``'s command line asked for."""

    __slots__ = ("http_addr", "http_admin", "http_port", "server", "shards")

    def __init__(self, server: ServerOptions) -> None:
        self.server = server
        self.shards = DEFAULT_SHARDS
        self.http_addr = "127.0.0.1"
        self.http_port: int | None = None
        self.http_admin = False


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
        if word == "--help":  # ours, unlike the server's parser (beanstalkd: "unknown flag")
            rest.append("-h")
            continue
        if word == "--http-admin":
            longs[word] = ""
            continue
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
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_SHARDS:
            raise _usage_error(progname, f"invalid shard count: {text} (1..{MAX_SHARDS})")
        opts.shards = int(text)
    if "--http-port" in longs:
        text = longs["--http-port"]
        if not (text.isascii() and text.isdigit()) or int(text) > 65535:
            raise _usage_error(progname, f"invalid port: {text}")
        opts.http_port = int(text)
    opts.http_admin = "--http-admin" in longs
    if "--http-addr" in longs:
        opts.http_addr = longs["--http-addr"]
    return opts


def shard_ids(names: list[str]) -> dict[str, int]:
    """Shard id per name: 0 for the ring owner of tube ``default``, then 1.. in order."""
    from ..core.ring import Placement

    owner = Placement([(name, 1) for name in names]).owner("default")
    others = iter(range(1, len(names)))
    return {name: 0 if name == owner else next(others) for name in names}


def run(opts: ClusterOptions) -> int:
    """Run the cluster until SIGTERM/SIGINT; returns the exit status."""
    server = opts.server
    for line in server.warnings:
        print(line, file=sys.stderr)
    if server.user is not None:
        print("beanrouter cluster: -u is not supported; start it as that user", file=sys.stderr)
        return 3
    # 1. Listen first: early connections wait in the backlog. A SIGTERM until the shards module
    # installs its handlers ends the process at once, which is right: nothing was started yet.
    from ..server.listen import ListenError, bind, inherited_socket

    try:
        sock = inherited_socket() or bind(server.addr, server.port)
        http_sock = None
        if opts.http_port is not None:
            http_sock = bind(opts.http_addr, opts.http_port)
    except ListenError as exc:
        print(f"beanrouter cluster: {exc}", file=sys.stderr)
        return 1
    from .shards import run_listening

    return run_listening(opts, sock, http_sock)


def main(argv: list[str] | None = None, progname: str | None = None) -> None:
    """Entry point of ``beanrouter cluster`` and ``beanrouter-cluster``."""
    # No cyclic garbage collection while starting: the imports make many objects and no cycles
    # worth collecting (about 5% of the start's CPU). Back on once the proxy accepts clients;
    # a forked shard turns it on at once (shards.py).
    import gc

    gc.disable()
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
