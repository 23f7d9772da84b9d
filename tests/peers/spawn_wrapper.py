#!/usr/bin/env python3
"""A ``$BEANSTALKD_PATH`` that starts a server whose listening socket is already open.

Usage: ``spawn_wrapper.py SERVER [SERVER_ARGS...] -- [BEANSTALKD_FLAGS...]``

Client test suites start ``$BEANSTALKD_PATH -l ADDR -p PORT`` (or ``-l unix:PATH``) and connect
soon after: greenstalk's suite sleeps only 0.1 s. A Python server may need longer than that to
import and bind, and waiting inside the wrapper would not help, since the suite does not wait for
the wrapper. So the wrapper binds and listens on the address the flags name itself (milliseconds
after it starts), then ``exec``s the server in the same process, handing over the socket as fd 3
under the systemd socket-activation protocol (``LISTEN_FDS=1``, ``LISTEN_PID=<pid>``). A client
that connects before the server is ready waits in the listen backlog.

Invariants:
- The wrapper never connects to the server, so connection counters (``total-connections``) are
  the suite's own.
- ``exec`` keeps the pid: signals the suite sends (SIGTERM, SIGUSR1 for drain mode) reach the
  server, and the exit status the suite sees is the server's.
- The flags are passed on untouched. A server that inherits a socket ignores ``-l``/``-p``
  (beanstalkd warns "inherited listen fd; ignoring option").
- If the wrapper cannot bind, it execs the server without a socket, so the failure the suite sees
  is the server's own.

beanstalkd built with libsystemd (Debian's is) honours ``LISTEN_FDS``; beanrouter's server must too.
It imports only ``os``, ``stat``, ``sys`` and ``_socket`` (``socket.py`` would cost ~10 ms more).
``listening()`` tells, from ``/proc/net``, whether something listens on an address, without
connecting to it.
"""

from __future__ import annotations

import _socket as socket  # the C module: ``socket.py`` imports enum and selectors
import os
import stat
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

USAGE = "usage: spawn_wrapper.py SERVER [SERVER_ARGS...] -- [BEANSTALKD_FLAGS...]"
SD_LISTEN_FDS_START = 3
BACKLOG = 1024  # as beanstalkd
DEFAULT_ADDR = "0.0.0.0"
DEFAULT_PORT = "11300"
# beanstalkd flags that take a value (see its optparse); -h and -v exit without listening.
_VALUE_FLAGS = frozenset("plzsfub")
_EXIT_FLAGS = frozenset("hv")


class NoListen(Exception):
    """The flags ask for help or the version: the server will not listen."""


def listen_address(flags: Sequence[str]) -> tuple[str, str]:
    """Return the ``(addr, port)`` that beanstalkd would listen on for these flags.

    Parses like beanstalkd's ``optparse``: grouped flags (``-Vl ADDR``), values attached
    (``-p4444``) or in the next argument, and parsing stops at the first non-flag.
    Raises ``NoListen`` for ``-h`` and ``-v``.
    """
    addr, port = DEFAULT_ADDR, DEFAULT_PORT
    args = list(flags)
    i = 0
    while i < len(args) and args[i].startswith("-") and len(args[i]) > 1:
        arg = args[i][1:]
        i += 1
        j = 0
        while j < len(arg):
            c = arg[j]
            j += 1
            if c in _EXIT_FLAGS:
                raise NoListen(c)
            if c in _VALUE_FLAGS:
                if j < len(arg):
                    value, j = arg[j:], len(arg)
                elif i < len(args):
                    value, i = args[i], i + 1
                else:
                    return addr, port  # the server reports the missing value
                if c == "l":
                    addr = value
                elif c == "p":
                    port = value
    return addr, port


def bind_listener(addr: str, port: str) -> socket.socket:
    """Bind and listen on ``addr``/``port`` (or ``unix:PATH``) with beanstalkd's socket options."""
    if addr.startswith("unix:"):
        path = addr[len("unix:") :]
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket, as beanstalkd replaces it
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        return sock
    last_error: OSError | None = None
    infos = socket.getaddrinfo(
        addr, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    raise last_error or OSError(f"cannot resolve {addr}:{port}")


def exec_server(server: Sequence[str], flags: Sequence[str]) -> None:
    """Bind the address in ``flags``, then exec ``server + flags`` with the socket as fd 3."""
    argv = [*server, *flags]
    env = dict(os.environ)
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    try:
        sock = bind_listener(*listen_address(flags))
    except NoListen:
        pass
    except OSError as exc:
        print(f"spawn_wrapper: cannot pre-bind ({exc}); starting the server as is", file=sys.stderr)
    else:
        fd = sock.detach()
        if fd != SD_LISTEN_FDS_START:
            os.dup2(fd, SD_LISTEN_FDS_START, inheritable=True)
            os.close(fd)
        else:
            os.set_inheritable(fd, True)
        env["LISTEN_FDS"] = "1"
        env["LISTEN_PID"] = str(os.getpid())
    os.execvpe(argv[0], argv, env)


def listening(addr: str, port: int | str | None = None) -> bool:
    """Whether a socket listens on ``addr``:``port`` (or ``unix:PATH``), read from ``/proc/net``.

    Never connects, so it does not disturb a server's connection counters. For TCP, ``addr`` may
    be ``""`` to match any local address. Linux only.
    """
    if addr.startswith("unix:"):
        path = addr[len("unix:") :]
        accepting = 0x00010000  # __SO_ACCEPTCON
        with open("/proc/net/unix", encoding="ascii", errors="replace") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & accepting:
                    return True
        return False
    want_port = f"{int(port or DEFAULT_PORT):04X}"
    wanted: set[str] = {"00000000", "0" * 32}  # a wildcard listener matches any address
    if addr:
        for family, _, _, _, sockaddr in socket.getaddrinfo(addr, None, 0, socket.SOCK_STREAM):
            packed = socket.inet_pton(family, str(sockaddr[0]))
            if family == socket.AF_INET:
                wanted.add(packed[::-1].hex().upper())
            else:  # /proc/net/tcp6 prints each 32-bit word in host (little-endian) order
                words = [packed[k : k + 4][::-1] for k in range(0, 16, 4)]
                wanted.add(b"".join(words).hex().upper())
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    host, _, hex_port = local.partition(":")
                    if state == "0A" and hex_port == want_port and (not addr or host in wanted):
                        return True
        except FileNotFoundError:
            continue
    return False


def main(argv: Sequence[str]) -> None:
    """Split ``SERVER... -- FLAGS...`` and exec the server; exit 2 on a usage error."""
    args = list(argv)
    if "--" not in args or args.index("--") == 0:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    cut = args.index("--")
    exec_server(args[:cut], args[cut + 1 :])


if __name__ == "__main__":
    main(sys.argv[1:])
