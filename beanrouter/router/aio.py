"""``AsyncRouter``: the router library for asyncio programs (same names as ``Router``, coroutines).

```python
async with AsyncRouter(["127.0.0.1:11301", "127.0.0.1:11302"]) as r:
    await r.use("emails")
    await r.put(b"hello")
    await r.watch("emails")
    job = await r.reserve(timeout=5)
    if job is not None:
        await job.delete()
```

The same routing core as ``Router`` (``beanrouter.core``), run by ``AsyncDriver`` over asyncio
streams; the same reply mapping (``router.py``'s ``*_result`` functions) and exceptions.
Cancelling a task blocked in ``reserve`` gives back anything reserved for it. An ``AsyncRouter``
is one client: run its calls one at a time (from one task at a time); use one per concurrent
consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import RouterError, error_for_reply, invalid_argument, reply_mapping
from ..core.rounds import Op
from ..protocol import Kicked, LocalProtocolError, Reserved, StatValue
from .aio_driver import AsyncDriver
from .config import load_config
from .facade import (
    Facade,
    as_body,
    bury_result,
    kicked_result,
    list_result,
    peek_job_fields,
    put_result,
    release_result,
    reserve_result,
    stats_job_result,
    watching_result,
    word_result,
)
from .job import DEFAULT_PRIORITY, DEFAULT_TTR, JobFields

__all__ = ["AsyncJob", "AsyncRouter"]

T = TypeVar("T")


class AsyncJob(JobFields["AsyncRouter"]):
    """A job handed out by ``AsyncRouter.reserve``/``peek*`` (``Job``'s methods, as coroutines;
    attributes: ``JobFields``)."""

    __slots__ = ()

    async def delete(self) -> None:
        """Delete the job."""
        await self._router.delete(self.id)
        self.reserved = False

    async def release(self, priority: int | None = None, delay: int = 0) -> None:
        """Release the reserved job (``priority`` defaults to its priority)."""
        await self._router.release(self.id, self.priority if priority is None else priority, delay)
        self.reserved = False

    async def bury(self, priority: int | None = None) -> None:
        """Bury the reserved job (``priority`` defaults to its priority)."""
        await self._router.bury(self.id, self.priority if priority is None else priority)
        self.reserved = False

    async def touch(self) -> None:
        """Restart the reserved job's TTR."""
        await self._router.touch(self.id)

    async def kick(self) -> None:
        """Kick the job if it is buried or delayed."""
        await self._router.kick_job(self.id)

    async def stats(self) -> dict[str, StatValue]:
        """The job's ``stats-job`` mapping (``id`` is the global id)."""
        return await self._router.stats_job(self.id)


class AsyncRouter(Facade):
    """A cluster of beanstalkd shards with the API of one beanstalkd client, for asyncio.

    Args: as ``Router``'s.
    """

    def _open(self) -> None:
        self._driver = AsyncDriver(self._session, self._connect_timeout, self._timeout, self._clock)
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, path: str | Path, **overrides: Any) -> AsyncRouter:
        """A router for the cluster described by the YAML file at ``path``."""
        return cls(load_config(path), **overrides)

    async def __aenter__(self) -> AsyncRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection: each shard puts the jobs this router held back to ready."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._driver.close()

    async def _run(self, op: Op[T]) -> T:
        if self._closed:
            op.close()
            raise RouterError("the router is closed")
        async with self._lock:  # the timer's maintenance and a call never overlap
            try:
                due = self._session.next_timer()
                if due is not None and due <= self._clock():
                    await self._driver.run(self._session.maintain())
                return await self._driver.run(op)
            except LocalProtocolError as exc:  # the codec refused an argument
                raise invalid_argument(exc, getattr(op, "__name__", None)) from exc
            finally:
                self._arm_timer()

    def _arm_timer(self) -> None:
        """Give back a prefetched job on time even if no call comes (see core.reserve)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self._session.next_timer()
        if due is None or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, due - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed:
            task = asyncio.ensure_future(self._maintain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _maintain(self) -> None:
        if self._lock.locked() or self._closed:
            return  # the running call does it (and re-arms the timer) as it ends
        async with self._lock:
            due = self._session.next_timer()
            if due is not None and due <= self._clock() and not self._closed:
                with contextlib.suppress(RouterError):
                    await self._driver.run(self._session.maintain())
            self._arm_timer()

    async def use(self, tube: str) -> str:
        """Use ``tube`` for puts (and peeks and kicks). Returns the tube name."""
        await self._run(self._session.use(tube))
        return tube

    async def put(
        self,
        body: bytes | str,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int = DEFAULT_TTR,
    ) -> int:
        """Put a job into the used tube; returns its global id (see ``Router.put``)."""
        reply = await self._run(self._session.put(priority, delay, ttr, as_body(body)))
        return put_result(reply, self._session.using)

    async def watch(self, tube: str) -> int:
        """Add ``tube`` to the watch list; returns the number of watched tubes."""
        return watching_result(await self._run(self._session.watch(tube)), f"watch {tube}")

    async def ignore(self, tube: str) -> int:
        """Remove ``tube`` from the watch list (``NotIgnored`` for the only one)."""
        return watching_result(await self._run(self._session.ignore(tube)), f"ignore {tube}")

    def _job(self, job_id: int, body: bytes) -> AsyncJob:
        return AsyncJob(self, job_id, body, *self._held(job_id), True)

    # ASYNC109: public API mirroring beanstalkc's reserve(timeout=...); the timeout is beanstalkd's
    # reserve-with-timeout (a protocol value: None when no job came), not a Python cancel scope.
    async def reserve(self, timeout: float | None = None) -> AsyncJob | None:  # noqa: ASYNC109
        """Reserve the most urgent ready job of the watched tubes across all shards (see
        ``Router.reserve``). Cancelling the task gives back anything reserved for it."""
        reply = await self._run(self._session.reserve(timeout))
        job_id = reserve_result(reply)
        if job_id is None:
            return None
        assert isinstance(reply, Reserved)
        return self._job(job_id, reply.body)

    async def reserve_job(self, job_id: int) -> AsyncJob:
        """Reserve the job ``job_id`` whatever its state (``NotFound`` otherwise)."""
        reply = await self._run(self._session.reserve_job(job_id))
        if not isinstance(reply, Reserved):
            raise error_for_reply(reply, f"reserve-job {job_id}")
        return self._job(reply.id, reply.body)

    async def delete(self, job_id: int) -> None:
        """Delete a job (see ``Router.delete``)."""
        reply = await self._run(self._session.delete(job_id))
        word_result(reply, "DELETED", f"delete {job_id}")

    async def release(self, job_id: int, priority: int | None = None, delay: int = 0) -> None:
        """Release a job this router holds (see ``Router.release``)."""
        release_result(await self._run(self._session.release(job_id, priority, delay)), job_id)

    async def bury(self, job_id: int, priority: int | None = None) -> None:
        """Bury a job this router holds (see ``Router.bury``)."""
        bury_result(await self._run(self._session.bury(job_id, priority)), job_id)

    async def touch(self, job_id: int) -> None:
        """Restart the TTR of a job this router holds."""
        word_result(await self._run(self._session.touch(job_id)), "TOUCHED", f"touch {job_id}")

    async def stats_job(self, job_id: int) -> dict[str, StatValue]:
        """The job's ``stats-job`` mapping, with ``id`` the global id."""
        return stats_job_result(await self._run(self._session.stats_job(job_id)), job_id)

    async def kick_job(self, job_id: int) -> None:
        """Kick a buried or delayed job to ready (``NotFound`` otherwise)."""
        reply = await self._run(self._session.kick_job(job_id))
        if not isinstance(reply, Kicked):
            raise error_for_reply(reply, f"kick-job {job_id}")

    async def peek(self, job_id: int) -> AsyncJob | None:
        """The job ``job_id`` in any state, or None."""
        reply, stats = await self._run(self._session.peek_with_stats(job_id))
        found = peek_job_fields(reply, stats, "", f"peek {job_id}")
        return None if found is None else AsyncJob(self, *found, False)

    async def _peek_state(self, state: str) -> AsyncJob | None:
        reply, stats = await self._run(self._session.peek_state(state))
        found = peek_job_fields(reply, stats, self._session.using, f"peek-{state}")
        if found is None:
            return None
        job_id, body, tube, pri = found
        if stats is None:
            mapping = await self.stats_job(job_id)
            p = mapping.get("pri")
            pri = p if isinstance(p, int) else pri
        return AsyncJob(self, job_id, body, tube, pri, False)

    async def peek_ready(self) -> AsyncJob | None:
        """The most urgent ready job of the used tube (across its shards), or None."""
        return await self._peek_state("ready")

    async def peek_delayed(self) -> AsyncJob | None:
        """The delayed job of the used tube that becomes ready first, or None."""
        return await self._peek_state("delayed")

    async def peek_buried(self) -> AsyncJob | None:
        """A buried job of the used tube (the owner shard's oldest first), or None."""
        return await self._peek_state("buried")

    async def kick(self, bound: int) -> int:
        """Kick up to ``bound`` jobs of the used tube; returns the number kicked."""
        return kicked_result(await self._run(self._session.kick(bound)), "kick")

    async def tubes(self) -> list[str]:
        """Every tube that exists on any reachable shard."""
        return list_result(await self._run(self._session.list_tubes()), "list-tubes")

    async def stats(self) -> dict[str, StatValue]:
        """The cluster's ``stats`` (see ``Router.stats``)."""
        return reply_mapping(await self._run(self._session.stats()), "stats")

    async def stats_tube(self, tube: str) -> dict[str, StatValue]:
        """The tube's ``stats-tube`` summed over its shards (``NotFound`` if none has it)."""
        reply = await self._run(self._session.stats_tube(tube))
        return reply_mapping(reply, f"stats-tube {tube}")

    async def pause_tube(self, tube: str, delay: int) -> None:
        """Pause ``tube`` for ``delay`` seconds on every shard where it exists."""
        reply = await self._run(self._session.pause_tube(tube, delay))
        word_result(reply, "PAUSED", f"pause-tube {tube}")
