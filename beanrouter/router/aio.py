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
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..core.cluster import Cluster, Metrics
from ..core.reserve import LINGER
from ..core.rounds import Op
from ..core.session import Session
from ..protocol import Kicked, LocalProtocolError, Reserved, StatValue, Use
from .aio_driver import AsyncDriver
from .config import ClusterConfig, config_from_servers, load_config
from .errors import RouterError, ShardUnavailable, error_for_reply, invalid_argument, reply_mapping
from .job import DEFAULT_PRIORITY, DEFAULT_TTR
from .router import (
    as_body,
    bury_result,
    check_overrides,
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

__all__ = ["AsyncJob", "AsyncRouter"]

T = TypeVar("T")


class AsyncJob:
    """A job handed out by ``AsyncRouter.reserve``/``peek*`` (``Job``'s methods, as coroutines).

    Attributes:
        id: the global job id.
        body: the body (``bytes``).
        tube: the tube the job is in.
        priority: its priority when it was handed out.
        reserved: True when this router holds it reserved.
    """

    __slots__ = ("_router", "body", "id", "priority", "reserved", "tube")

    def __init__(
        self, router: AsyncRouter, id: int, body: bytes, tube: str, priority: int, reserved: bool
    ) -> None:
        self._router = router
        self.id = id
        self.body = body
        self.tube = tube
        self.priority = priority
        self.reserved = reserved

    def __repr__(self) -> str:
        return f"AsyncJob(id={self.id}, tube={self.tube!r}, body={self.body[:40]!r})"

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


class AsyncRouter:
    """A cluster of beanstalkd shards with the API of one beanstalkd client, for asyncio.

    Args: as ``Router``'s.
    """

    def __init__(
        self,
        servers: Sequence[str | Mapping[str, Any]] | str | ClusterConfig,
        *,
        failover: int | None = None,
        connect_timeout: float | None = None,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        config = servers if isinstance(servers, ClusterConfig) else config_from_servers(servers)
        check_overrides(connect_timeout, timeout, failover)
        self.config = config
        self._clock = clock
        self._cluster = Cluster(config, clock=clock, rng=rng, failover=failover)
        self._session = Session(self._cluster, linger=LINGER)
        self._driver = AsyncDriver(
            self._session,
            connect_timeout=config.connect_timeout if connect_timeout is None else connect_timeout,
            timeout=config.timeout if timeout is None else timeout,
            clock=clock,
        )
        self._closed = False
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
        due = self._session.next_timer()
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

    @property
    def metrics(self) -> Metrics:
        """The routing core's counters."""
        return self._cluster.metrics

    @property
    def shards(self) -> tuple[str, ...]:
        """Shard names in configuration order."""
        return tuple(self._cluster.shards)

    def preference(self, tube: str) -> tuple[str, ...]:
        """The tube's shards: its ring owner, then the successors it fails over to."""
        return self._cluster.preference(tube)

    def shard_for(self, tube: str) -> str:
        """The shard that puts to ``tube`` go to now (``ShardUnavailable`` if all are down)."""
        try:
            Use(tube)
        except LocalProtocolError as exc:
            raise invalid_argument(exc, "shard_for") from exc
        target = self._cluster.put_target(tube)
        if target is None:
            raise ShardUnavailable(
                f"no shard of tube {tube!r} is up", self._cluster.down_causes(tube)
            )
        return target.name

    async def use(self, tube: str) -> str:
        """Use ``tube`` for puts (and peeks and kicks). Returns the tube name."""
        await self._run(self._session.use(tube))
        return tube

    def using(self) -> str:
        """The tube puts go to."""
        return self._session.using

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

    def watching(self) -> list[str]:
        """The watched tubes, in the order beanstalkd lists them."""
        return list(self._session.watching)

    def _job(self, job_id: int, body: bytes) -> AsyncJob:
        held = self._session.held[job_id]
        return AsyncJob(self, job_id, body, held.tube, held.priority, True)

    async def reserve(self, timeout: float | None = None) -> AsyncJob | None:
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
