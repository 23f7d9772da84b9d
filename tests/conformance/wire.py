"""Raw-socket beanstalkd client session for conformance tests: exact bytes in, whole replies out.

This module is an independent oracle: it frames replies itself and shares no code with
``beanrouter.protocol``, so a bug in the codec cannot hide behind the same bug here.

Framing invariant: a reply is one line ending ``\\r\\n``; a ``RESERVED <id> <n>``,
``FOUND <id> <n>`` or ``OK <n>`` line is followed by exactly ``n`` bytes of data and ``\\r\\n``.
"""

from __future__ import annotations

import re
import socket
import time
from types import TracebackType

#: A reply line announcing a body; group 1 is the body length.
BODY_LINE = re.compile(rb"(?:RESERVED [0-9]+ |FOUND [0-9]+ |OK )([0-9]+)\r\n")

DEFAULT_TIMEOUT = 2.0


class SessionError(Exception):
    """A reply could not be read completely; ``partial`` holds the bytes read so far."""

    def __init__(self, message: str, partial: bytes) -> None:
        super().__init__(f"{message} (partial reply: {partial!r})")
        self.partial = partial


class ReplyTimeout(SessionError):
    """No complete reply arrived in time."""


class PeerClosed(SessionError):
    """The server closed the connection before a complete reply arrived."""


class Session:
    """One client connection to a beanstalkd-compatible server.

    Args:
        host: server address.
        port: server TCP port.
        timeout: default seconds to wait for a reply.
    """

    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        self._eof = False

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send ``data`` exactly, in one ``sendall``.

        Args:
            data: raw bytes, including any ``\\r\\n``.
        """
        self._sock.sendall(data)

    def send_chunked(self, data: bytes, size: int = 1, pause: float = 0.0) -> None:
        """Send ``data`` in pieces of ``size`` bytes, one ``send`` call each.

        Args:
            data: raw bytes.
            size: bytes per piece; 1 splits at every byte.
            pause: seconds to sleep after each piece (0 still yields the CPU).
        """
        for start in range(0, len(data), size):
            self._sock.sendall(data[start : start + size])
            time.sleep(pause)

    def shutdown_write(self) -> None:
        """Half-close: tell the server we will send nothing more, keep reading."""
        self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()

    # -- receiving -------------------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False on EOF. Raises TimeoutError at the deadline."""
        if self._eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self._sock.settimeout(left)
        try:
            chunk = self._sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _take(self, n: int) -> bytes:
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def reply(self, timeout: float | None = None) -> bytes:
        """Read one complete reply: its line and, for body replies, the body and its ``\\r\\n``.

        Args:
            timeout: seconds to wait; defaults to the session timeout.

        Raises:
            ReplyTimeout: nothing complete arrived in time.
            PeerClosed: the server closed the connection first.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while b"\r\n" not in self._buf:
                if not self._fill(deadline):
                    raise PeerClosed("connection closed", self._take(len(self._buf)))
            line_end = self._buf.index(b"\r\n") + 2
            match = BODY_LINE.fullmatch(self._buf[:line_end])
            total = line_end + (int(match.group(1)) + 2 if match else 0)
            while len(self._buf) < total:
                if not self._fill(deadline):
                    raise PeerClosed("connection closed", self._take(len(self._buf)))
        except TimeoutError:
            raise ReplyTimeout("timed out", self._buf) from None
        return self._take(total)

    def expect_closed(self, timeout: float | None = None) -> None:
        """Assert the server closes the connection without sending anything more.

        Args:
            timeout: seconds to wait for the close.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            raise AssertionError(f"connection still open; unread: {self._buf!r}") from None
        assert self._buf == b"", f"unexpected bytes before close: {self._buf!r}"

    def read_available(self, wait: float) -> tuple[bytes, bool]:
        """Collect whatever arrives within ``wait`` seconds.

        Args:
            wait: seconds to listen.

        Returns:
            The bytes received (also consumed) and whether the server closed the connection.
        """
        deadline = time.monotonic() + wait
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            pass
        return self._take(len(self._buf)), self._eof
