"""The seam between the proxy's asyncio frame and the routing core.

The frame (``app.py``) owns sockets, parsing, counting and signals; the core owns everything about
where a command goes and what the cluster answers. The frame talks to the core only through these
two protocols. One ``Backend`` per proxy process holds the shared cluster state; each client
connection gets one ``ClientSession`` from it.

The frame guarantees, per session:
- ``execute``, ``execute_batch`` and ``start_batch`` are called in the client's order, never
  concurrently, never with ``Quit`` (the frame handles it), and never after ``close``;
  ``execute_batch`` and ``start_batch`` get the commands the client has pipelined (already
  parsed);
- ``burn_id`` is called (instead of ``execute``) where beanstalkd uses up a job id without
  storing a job: a put whose body is not followed by ``\\r\\n`` (``EXPECTED_CRLF``), or
  whose client goes away before the body is complete;
- ``close`` is called exactly once, when the client quits, is gone, or the proxy stops; a blocked
  ``execute`` (a reserve) is cancelled first, so ``close`` never runs alongside ``execute``.

Before ``execute`` is called the frame has already counted the command in ``ProxyStats``
(``cmd-*``, current-producers/workers/waiting), exactly when beanstalkd counts it, so a ``stats``
reply built while executing includes itself; ``execute_batch`` has the frame count each command
it takes (``counted``) just before running it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core.config import ClusterConfig
    from ..protocol import Command, StatValue
    from .stats import ProxyStats

__all__ = ["Backend", "BackendFactory", "ClientSession", "Introspective"]


class ClientSession(Protocol):
    """One client connection's view of the cluster: used tube, watch list, reservations."""

    async def execute(self, command: Command) -> bytes:
        """The complete reply bytes for one parsed client command.

        Never raises for shard trouble: that maps to beanstalkd reply words (``INTERNAL_ERROR``,
        ``OUT_OF_MEMORY``…). May block for a long time (``reserve``). Cancelling the task that
        runs it must be safe and gives back anything it reserved on the client's behalf.
        ``ProxyStats.draining`` set means puts answer ``DRAINING``.
        """
        ...

    async def execute_batch(
        self, commands: Sequence[Command], counted: Callable[[Command], None]
    ) -> list[bytes]:
        """The reply bytes of a leading run of ``commands`` (at least the first), in order.

        The session decides how many run together (one write to a shard for all of them, where
        the routing core allows it) and calls ``counted(command)`` for each one it takes, before
        running it. A blocking reserve (``reserve``, ``reserve-with-timeout`` > 0) is the last
        one it takes, run as ``reserve-with-timeout 0``: when that answers ``TIMED_OUT`` the
        frame runs the wait itself with ``execute``. Errors as for ``execute``.
        """
        ...

    def start_batch(
        self,
        commands: Sequence[Command],
        counted: Callable[[Command], None],
        answer: Callable[[bytes | None], None],
        done: Callable[[bool], None],
        idle: Callable[[], None] | None = None,
    ) -> bool:
        """``execute_batch`` run from callbacks, without a task, when the session can (the
        proxy's fast path). False: nothing was done or counted, and ``execute_batch`` is to run
        them. Else ``answer(reply)`` is called for each command the session takes, in order, as
        soon as its reply is known (None: a blocking reserve whose first look timed out; the
        frame runs its wait), ``idle()`` whenever the session starts to wait for a shard, and
        ``done(aborted)`` once at the end (any of them possibly before this returns). The frame
        runs nothing else on the session until ``done``. A blocking reserve may be taken as it
        is and wait at the shard: ``half_close`` ends such a wait as a half-closed client's,
        ``abort`` ends the batch at once (``done(True)``: the commands not answered are not).
        """
        ...

    def extend_batch(self, commands: Sequence[Command], counted: Callable[[Command], None]) -> int:
        """While a ``start_batch`` batch is out and every command given to it was taken: how
        many of the leading ``commands`` (what the client sent since) join it, when the session
        can (a streamed run: they go to its shard at once, which keeps the order), each counted
        with ``counted`` first. Their replies come through that batch's ``answer``, after those
        of the commands before them, and its ``done`` after them all. 0: none joined (the frame
        offers them again once the batch is done)."""
        ...

    def pause_replies(self) -> None:
        """The client's output is above its high-water mark while a ``start_batch`` batch is
        out: the session may stop reading what its shards send for it (never for a command
        whose reply has a deadline), until ``resume_replies`` or the batch's end."""
        ...

    def resume_replies(self) -> None:
        """The client reads its replies again (see ``pause_replies``)."""
        ...

    def half_close(self) -> None:
        """The client half-closed while a ``start_batch`` batch is out (see there)."""
        ...

    def abort(self) -> None:
        """The client is gone while a ``start_batch`` batch is out (see there)."""
        ...

    async def burn_id(self) -> None:
        """A put on this session ended in ``EXPECTED_CRLF`` (or its client left in the middle of
        its body): beanstalkd used up one job id.

        The frame has already answered the client. Mirroring the burn on the shard that would
        have taken the put keeps a one-shard cluster's ids byte-identical to beanstalkd's; the
        core may also do nothing. Must not raise.
        """
        ...

    async def close(self) -> None:
        """The client quit or is gone: give back every job reserved on its behalf, now.

        Must not raise.
        """
        ...


class Backend(Protocol):
    """The shared cluster state of one proxy process (links to shards, health, placement)."""

    def session(self, counters: ProxyStats) -> ClientSession:
        """A new session for a client that just connected. ``counters`` is the process's own
        ``ProxyStats`` (the proxy's part of ``stats``, the drain flag and the metrics registry)."""
        ...

    async def reload(self, config: ClusterConfig) -> None:
        """Switch to a new, already validated configuration (SIGHUP). Must not strand jobs."""
        ...

    def shard_health(self) -> list[tuple[str, bool]]:
        """``(shard name, up)`` for every configured shard, in configuration order."""
        ...

    def route(self, tube: str) -> dict[str, object]:
        """A JSON-serialisable explanation of where ``tube`` goes (for ``/route?tube=NAME``)."""
        ...

    async def aclose(self) -> None:
        """The proxy is stopping; every session has been closed already."""
        ...


@runtime_checkable
class Introspective(Protocol):
    """What a backend may also tell the console (``proxy/console``); optional."""

    def clients_by_tube(self) -> dict[str, dict[str, StatValue]]:
        """Per tube some client uses or watches: ``current-using``, ``current-watching``,
        ``current-waiting`` of the proxy's clients, counted in one pass over them."""
        ...

    def shard_errors(self) -> dict[str, str]:
        """The last error the backend saw on each shard ("" for none)."""
        ...


class BackendFactory(Protocol):
    """``beanrouter.proxy.backend.make_backend``: builds the backend for a configuration.

    Called once per proxy process, inside its running event loop."""

    def __call__(self, config: ClusterConfig) -> Backend: ...
