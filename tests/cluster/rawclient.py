"""A raw-protocol beanstalkd client: one blocking socket and the project's codec, nothing else.

It plays the "client in another language" against the proxy (and reads shards' stats): it knows
nothing about shards, rings or global ids, and sees only beanstalkd replies. Every socket
operation has a timeout, so a caller never blocks longer than ``timeout`` (plus the reserve's own
wait).
"""

from __future__ import annotations

import socket

from beanrouter.protocol import (
    CLOSED,
    NEED_DATA,
    Delete,
    Ignore,
    Inserted,
    Ok,
    Put,
    Reply,
    ReplyReader,
    Reserved,
    ReserveWithTimeout,
    Stats,
    StatsJob,
    StatValue,
    Use,
    Using,
    Watch,
    Watching,
    Word,
    parse_mapping,
)
from beanrouter.protocol import Command as _Command


class RawError(Exception):
    """The server answered something other than what the command expects."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(repr(reply))
        self.reply = reply


class RawClient:
    def __init__(self, host: str, port: int, *, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._reader = ReplyReader()
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, command: _Command, *, wait: float = 0.0) -> Reply:
        """Send ``command`` and read its reply, waiting up to ``timeout + wait`` seconds.

        Raises ``OSError`` (a ``TimeoutError`` when no reply came in time, ``ConnectionError``
        when the server closed): the connection is then unusable.
        """
        self._sock.sendall(command.encode())
        self._sock.settimeout(self.timeout + wait)
        try:
            while True:
                event = self._reader.next_event()
                if event is NEED_DATA:
                    data = self._sock.recv(65536)
                    self._reader.receive_data(data)
                    continue
                if event is CLOSED:
                    raise ConnectionResetError("server closed the connection")
                assert isinstance(event, Reply)
                return event
        finally:
            self._sock.settimeout(self.timeout)

    def put(self, body: bytes, *, priority: int = 1024, delay: int = 0, ttr: int = 120) -> int:
        reply = self.call(Put(priority, delay, ttr, body))
        if not isinstance(reply, Inserted):
            raise RawError(reply)
        return reply.id

    def use(self, tube: str) -> None:
        reply = self.call(Use(tube))
        if not isinstance(reply, Using):
            raise RawError(reply)

    def watch(self, tube: str) -> int:
        reply = self.call(Watch(tube))
        if not isinstance(reply, Watching):
            raise RawError(reply)
        return reply.count

    def ignore(self, tube: str) -> int:
        reply = self.call(Ignore(tube))
        if not isinstance(reply, Watching):
            raise RawError(reply)
        return reply.count

    def reserve(self, timeout: int) -> Reserved | None:
        """``reserve-with-timeout``: the job, or None on TIMED_OUT / DEADLINE_SOON."""
        reply = self.call(ReserveWithTimeout(timeout), wait=timeout)
        if isinstance(reply, Reserved):
            return reply
        if isinstance(reply, Word) and reply.word in ("TIMED_OUT", "DEADLINE_SOON"):
            return None
        raise RawError(reply)

    def delete(self, job_id: int) -> bool:
        """True when deleted, False on NOT_FOUND (the reservation was lost)."""
        reply = self.call(Delete(job_id))
        if isinstance(reply, Word) and reply.word in ("DELETED", "NOT_FOUND"):
            return reply.word == "DELETED"
        raise RawError(reply)

    def stats_job(self, job_id: int) -> dict[str, StatValue] | None:
        reply = self.call(StatsJob(job_id))
        if isinstance(reply, Ok):
            return parse_mapping(reply.body)
        if isinstance(reply, Word) and reply.word == "NOT_FOUND":
            return None
        raise RawError(reply)

    def stats(self) -> dict[str, StatValue]:
        reply = self.call(Stats())
        if not isinstance(reply, Ok):
            raise RawError(reply)
        return parse_mapping(reply.body)
