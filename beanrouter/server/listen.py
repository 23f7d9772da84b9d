"""The listening socket, made before anything heavy is imported.

Harnesses that spawn a beanstalkd (greenstalk's, for one) connect about 0.1 s after starting it.
Binding first means such a connection lands in the kernel's backlog while the rest of the server
is still being imported. Also honours systemd socket activation (``LISTEN_PID``/``LISTEN_FDS``,
first fd 3) as Debian's beanstalkd does, in which case ``-l``/``-p`` are ignored.
The socket is made with the C module ``_socket`` and listening before ``socket`` (which imports
``enum``, ``selectors`` and more: about a third of an idle interpreter's start-up again) is
imported to wrap it: on a loaded machine that import alone can take longer than the 0.1 s.

Standard library ``_socket``, ``os`` and ``stat`` only (``os`` imports ``stat`` itself).
"""

from __future__ import annotations

import _socket
import os
import stat

TYPE_CHECKING = False  # typing costs start-up time too; type checkers take this name as true
if TYPE_CHECKING:
    import socket

SD_LISTEN_FDS_START = 3
BACKLOG = 1024
NOTIFY_ENV = "NOTIFY_SOCKET"


class ListenError(Exception):
    """The address cannot be listened on; the message says why."""


def inherited_socket() -> socket.socket | None:
    """The socket passed by systemd-style activation, if any (the variables are then unset)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count < 1:
        return None
    import socket

    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    sock.setblocking(False)
    return sock


def bind(addr: str, port: int | str, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening socket on ``addr``:``port``, or on ``unix:PATH``. A ``port``
    given as text goes to getaddrinfo as is (service names work), as in beanstalkd.

    ``reuse_port`` sets SO_REUSEPORT (TCP only), so several processes can listen on one port
    and the kernel spreads connections between them (``beanrouter proxy --workers``)."""
    try:
        if addr.startswith("unix:"):
            raw = _bind_unix(addr[5:])
        else:
            raw = _bind_inet(addr, port, reuse_port)
    except OSError as exc:  # socket.gaierror included (a port that is no number or service)
        raise ListenError(f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from None
    import socket  # only now: connections already wait in the backlog

    sock = socket.socket(fileno=raw.detach())
    sock.setblocking(False)
    return sock


def _bind_unix(path: str) -> _socket.socket:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket from an earlier run, as beanstalkd does
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_inet(addr: str, port: int | str, reuse_port: bool = False) -> _socket.socket:
    # An ASCII name goes to getaddrinfo as bytes, as is: given a str, Python would encode it with
    # the idna codec, whose import (unicodedata, stringprep) costs start-up time, and which
    # refuses names such as ``a..b`` with a UnicodeError before the resolver has said a word
    # (beanstalkd passes the name as is and reports the resolver's error, as we then do).
    host = (addr.encode("ascii") if addr.isascii() else addr) if addr else None
    try:
        infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM, 0, _socket.AI_PASSIVE)
    except UnicodeError as exc:  # a non-ASCII name the idna codec refuses
        raise OSError(f"bad host name {addr!r}: {exc}") from None
    error: OSError | None = None
    for family, kind, proto, _name, sockaddr in infos:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"no address for {addr}")


def describe(sock: socket.socket) -> str:
    """The listening address as beanstalkd's ``-V`` prints it: ``ADDR:PORT``, or the path."""
    name = sock.getsockname()
    if isinstance(name, str):
        return name
    if sock.family == _socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    return f"{name[0]}:{name[1]}"


def sd_notify(address: str, state: str) -> None:
    """Send ``state`` to the service manager's ``$NOTIFY_SOCKET`` (systemd ``Type=notify``);
    trouble is ignored, as ``sd_notify(3)`` callers do. ``@NAME`` is an abstract socket."""
    path = "\0" + address[1:] if address.startswith("@") else address
    try:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            conn.sendto(state.encode(), path)
        finally:
            conn.close()
    except OSError:
        pass
