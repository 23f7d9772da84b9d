"""One blocking socket to one shard, spoken through the codec's ``ReplyReader``.

Failures are classified by what the shard may have seen, because failover depends on it:
``ConnectFailed`` (nothing was sent), ``SendFailed`` (the command never reached the shard whole,
so it was not executed) and ``ReplyLost`` (the command was sent and its reply did not arrive: its
effect is unknown). Every failure closes the connection: a connection whose reply state is unknown
is never reused, since the next reply read from it could answer an earlier command.

Invariants: ``used`` and ``watched`` mirror the shard's view of this connection (``use``/``watch``
commands are only sent through ``Router`` methods that update them in the same step). ``pending``
counts the replies owed (raised before a send, lowered as each reply is read) and ``reserving``
is set while a reserve command's outcome is not settled: a connection with either is in an
unknown state after an exception escaped mid-request (``KeyboardInterrupt``, a signal handler's
exception), and ``reusable()`` refuses it, so its owner closes it instead of reading a stale
reply as the answer to a new command.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time

from ..protocol import NEED_DATA, ProtocolError, Reply, ReplyReader

__all__ = ["ConnectFailed", "Connection", "ConnectionFailure", "ReplyLost", "SendFailed"]

_RECV_SIZE = 65536


class ConnectionFailure(OSError):
    """Base of the connection failures below."""


class ConnectFailed(ConnectionFailure):
    """The TCP connection could not be made (refused, reset, timed out): nothing was sent."""


class SendFailed(ConnectionFailure):
    """Sending failed: the command did not reach the shard whole, so the shard did not run it."""


class ReplyLost(ConnectionFailure):
    """The command was sent but no (complete, valid) reply came: its effect is unknown.

    ``timed_out`` tells a timeout from a closed or broken connection.
    """

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class Connection:
    """A connection to one shard.

    Args:
        shard: the shard's name (for bookkeeping and messages).
        sock: a connected socket.
        timeout: seconds to wait for a reply.
    """

    __slots__ = (
        "_poller",
        "closed",
        "held",
        "pending",
        "reader",
        "reserving",
        "shard",
        "sock",
        "timeout",
        "used",
        "watched",
    )

    def __init__(self, shard: str, sock: socket.socket, timeout: float) -> None:
        self.shard = shard
        self.sock = sock
        self.timeout = timeout
        self.reader = ReplyReader()
        self.used = "default"
        self.watched: list[str] = ["default"]
        self.held = 0
        """Jobs reserved through this connection and not yet resolved (the router's count)."""
        self.closed = False
        self.pending = 0
        """Replies owed by the shard for commands sent on this connection."""
        self.reserving = False
        """A reserve command was sent and the job it may have reserved is not yet settled
        (handed out, given back, or known not to exist)."""
        # Blocking socket with kernel timeouts (SO_RCVTIMEO/SO_SNDTIMEO): one system call per
        # send or receive (Python's own timeout mode adds a poll() before each).
        sock.settimeout(None)
        sec, usec = int(timeout), int((timeout % 1) * 1e6)
        if sec == 0 and usec == 0:
            usec = 1  # a zero SO_RCVTIMEO/SO_SNDTIMEO means "wait forever"
        tv = struct.pack("ll", sec, usec)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)

    @classmethod
    def open(
        cls, shard: str, host: str, port: int, connect_timeout: float, timeout: float
    ) -> Connection:
        """Connect to ``host:port``.

        Raises:
            ConnectFailed: the connection could not be made.
        """
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return cls(shard, sock, timeout)
        except OSError as exc:
            sock.close()
            raise ConnectFailed(f"cannot set up connection to {host}:{port}: {exc}") from exc

    def fileno(self) -> int:
        return self.sock.fileno()

    def stale(self) -> bool:
        """True when an idle connection was closed or broken by the shard (checked without waiting).

        An idle connection has nothing to read, so anything readable (end of stream, a reset, or
        stray bytes) means it cannot be used.
        """
        if self.closed:
            return True
        try:
            return bool(self._poller.poll(0))
        except (OSError, ValueError):
            return True

    def reusable(self) -> bool:
        """True when a new command may be sent: open, no reply owed, no reserve unsettled, and
        not closed or broken by the shard (checked without waiting)."""
        return self.pending == 0 and not self.reserving and not self.stale()

    def send(self, data: bytes, replies: int = 1) -> None:
        """Send ``data`` whole: commands that produce ``replies`` replies.

        Raises:
            SendFailed: and the connection is closed.
        """
        # Counted before sending: an exception in the middle of sendall leaves part of a
        # command on the wire, and the connection must not be reused either.
        self.pending += replies
        try:
            self.sock.sendall(data)
        except OSError as exc:  # includes SO_SNDTIMEO expiring (BlockingIOError)
            self.close()
            raise SendFailed(f"send to {self.shard} failed: {exc}") from exc

    def next_reply(self) -> Reply | None:
        """The next complete reply already received, or None.

        Raises:
            ReplyLost: the shard closed the connection or sent something unparsable.
        """
        try:
            event = self.reader.next_event()
        except ProtocolError as exc:
            self.close()
            raise ReplyLost(f"bad reply from {self.shard}: {exc}") from exc
        if isinstance(event, Reply):
            self.pending -= 1
            return event
        if event is NEED_DATA:
            return None
        self.close()
        raise ReplyLost(f"{self.shard} closed the connection")

    def pump(self) -> None:
        """Receive what is available (call when the socket is readable).

        Raises:
            ReplyLost: the connection broke.
        """
        try:
            data = self.sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return  # readable but nothing came: a spurious wake-up
        except OSError as exc:
            self.close()
            raise ReplyLost(f"receive from {self.shard} failed: {exc}") from exc
        self.reader.receive_data(data)

    def read(self, deadline: float | None = None) -> Reply:
        """Wait for the next reply (until ``deadline`` on the monotonic clock, else ``timeout``).

        Raises:
            ReplyLost: timeout, closed or broken connection; the connection is closed.
        """
        reader = self.reader
        try:
            event = reader.next_event()
            while event is NEED_DATA:
                # Each receive waits at most `timeout` (SO_RCVTIMEO); the deadline bounds the sum.
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError
                reader.receive_data(self.sock.recv(_RECV_SIZE))
                event = reader.next_event()
                if deadline is None:
                    deadline = time.monotonic() + self.timeout
        except (BlockingIOError, TimeoutError) as exc:  # SO_RCVTIMEO expired
            self.close()
            raise ReplyLost(f"no reply from {self.shard} in time", timed_out=True) from exc
        except OSError as exc:
            self.close()
            raise ReplyLost(f"receive from {self.shard} failed: {exc}") from exc
        except ProtocolError as exc:
            self.close()
            raise ReplyLost(f"bad reply from {self.shard}: {exc}") from exc
        if isinstance(event, Reply):
            self.pending -= 1
            return event
        self.close()
        raise ReplyLost(f"{self.shard} closed the connection")

    def read_next(self) -> Reply:
        """``read()`` for the one reply owed on a connection with nothing else pending.

        Receives first instead of asking the reader (which holds nothing: every earlier reply
        was read). Raises as ``read()``.
        """
        try:
            self.reader.receive_data(self.sock.recv(_RECV_SIZE))
        except BlockingIOError as exc:  # SO_RCVTIMEO expired
            self.close()
            raise ReplyLost(f"no reply from {self.shard} in time", timed_out=True) from exc
        except OSError as exc:
            self.close()
            raise ReplyLost(f"receive from {self.shard} failed: {exc}") from exc
        reply = self.next_reply()
        return reply if reply is not None else self.read()  # a partial reply: wait for the rest

    def request(self, data: bytes, count: int = 1) -> list[Reply]:
        """Send ``data`` (``count`` pipelined commands) and read their ``count`` replies.

        Raises:
            SendFailed: nothing was executed.
            ReplyLost: the effect of the commands is unknown.
        """
        self.send(data, count)
        deadline = time.monotonic() + self.timeout
        return [self.read(deadline) for _ in range(count)]

    def close(self) -> None:
        """Close the socket (the shard puts any job reserved through it back to ready)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.close()
