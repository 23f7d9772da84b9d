"""What ``Router`` and ``AsyncRouter`` share: their construction over the routing core, the
queries that need no shard, and the mapping of the core's protocol replies to return values and
the router's exceptions. Each shell adds only how it runs the core's operations (blocking sockets,
or asyncio).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.cluster import Cluster, Metrics
from ..core.config import ClusterConfig
from ..core.errors import (
    Buried,
    ConfigError,
    DeadlineSoon,
    InvalidArgument,
    ShardUnavailable,
    error_for_reply,
    invalid_argument,
    reply_mapping,
)
from ..core.reserve import LINGER
from ..core.session import Session
from ..protocol import Buried as BuriedReply
from ..protocol import (
    Found,
    Inserted,
    Kicked,
    LocalProtocolError,
    Ok,
    Reply,
    Reserved,
    StatValue,
    Use,
    Watching,
    Word,
    parse_list,
)
from .config import config_from_servers
from .job import DEFAULT_PRIORITY

__all__ = ["Facade"]


class Facade:
    """The state and the shard-free queries of a router (``Router``, ``AsyncRouter``).

    Args:
        servers: server lines ``"host:port[:weight] [name] [id=N]"`` or mappings, or a
            ``ClusterConfig``.
        failover: overrides the configuration's ``failover``.
        connect_timeout: overrides the configuration's ``connect_timeout`` (seconds).
        timeout: overrides the configuration's reply ``timeout`` (seconds).
        clock: monotonic clock (for tests).
        rng: random source in [0, 1) for probe jitter (for tests).
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
        self._connect_timeout = (
            config.connect_timeout if connect_timeout is None else connect_timeout
        )
        self._timeout = config.timeout if timeout is None else timeout
        self._closed = False
        self._open()

    def _open(self) -> None:
        """The shell's own set-up (its driver, locks and timers), once the core is built."""
        raise NotImplementedError

    @property
    def metrics(self) -> Metrics:
        """The routing core's counters (``beanrouter.core.Metrics``)."""
        return self._cluster.metrics

    @property
    def shards(self) -> tuple[str, ...]:
        """Shard names in configuration order."""
        return tuple(self._cluster.shards)

    def preference(self, tube: str) -> tuple[str, ...]:
        """The tube's shards: its ring owner, then the successors it fails over to."""
        return self._cluster.preference(tube)

    def shard_for(self, tube: str) -> str:
        """The shard that puts to ``tube`` go to now (the first available in its preference).

        Raises:
            ShardUnavailable: every shard of the tube is marked down.
        """
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

    def using(self) -> str:
        """The tube puts go to."""
        return self._session.using

    def watching(self) -> list[str]:
        """The watched tubes, in the order beanstalkd lists them."""
        return list(self._session.watching)

    def _held(self, job_id: int) -> tuple[str | None, int | None]:
        """``(tube, priority)`` of a job this router holds (None, None: not read yet, see
        ``reserve.hold``)."""
        held = self._session.held[job_id]
        if not held.ttr:
            return None, None
        return held.tube, held.priority


def check_overrides(
    connect_timeout: float | None, timeout: float | None, failover: int | None
) -> None:
    """Validate the constructor's overrides like the configuration's fields (``ConfigError``)."""
    for field, value in (("connect_timeout", connect_timeout), ("timeout", timeout)):
        # As in the configuration: 0 would mean "wait forever" to the socket layer.
        if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
            raise ConfigError(f"must be a number of seconds > 0, got {value!r}", field=field)
    if failover is not None and (
        isinstance(failover, bool) or not isinstance(failover, int) or failover < 0
    ):
        raise ConfigError(f"must be an integer >= 0, got {failover!r}", field="failover")


def as_body(body: bytes | str) -> bytes:
    """A job body: ``str`` as UTF-8, ``bytes``-like as is.

    Raises:
        InvalidArgument: anything else.
    """
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise InvalidArgument(f"put: the body must be bytes or str, not {type(body).__name__}")


def put_result(reply: Reply, tube: str) -> int:
    """The global id of an ``INSERTED`` reply, or the put's error."""
    if type(reply) is Inserted:
        return reply.id
    if isinstance(reply, BuriedReply):
        raise Buried(f"put to tube {tube!r}: BURIED", reply.id)
    raise error_for_reply(reply, f"put to tube {tube!r}")


def word_result(reply: Reply, word: str, what: str) -> None:
    if not (isinstance(reply, Word) and reply.word == word):
        raise error_for_reply(reply, what)


def release_result(reply: Reply, job_id: int) -> None:
    if isinstance(reply, BuriedReply):
        raise Buried(f"release {job_id}: BURIED", job_id)
    word_result(reply, "RELEASED", f"release {job_id}")


def bury_result(reply: Reply, job_id: int) -> None:
    if not isinstance(reply, BuriedReply):
        raise error_for_reply(reply, f"bury {job_id}")


def reserve_result(reply: Reply) -> int | None:
    """The global id of a reserved job; None on TIMED_OUT; raises DeadlineSoon."""
    if isinstance(reply, Reserved):
        return reply.id
    if isinstance(reply, Word) and reply.word == "TIMED_OUT":
        return None
    if isinstance(reply, Word) and reply.word == "DEADLINE_SOON":
        raise DeadlineSoon("reserve: DEADLINE_SOON (a held job is near its deadline)")
    raise error_for_reply(reply, "reserve")


def stats_job_result(reply: Reply, job_id: int) -> dict[str, StatValue]:
    stats = reply_mapping(reply, f"stats-job {job_id}")
    stats["id"] = job_id
    return stats


def kicked_result(reply: Reply, what: str) -> int:
    if not isinstance(reply, Kicked) or reply.count is None:
        raise error_for_reply(reply, what)
    return reply.count


def list_result(reply: Reply, what: str) -> list[str]:
    if not isinstance(reply, Ok):
        raise error_for_reply(reply, what)
    return [str(name) for name in parse_list(reply.body)]


def watching_result(reply: Reply, what: str) -> int:
    if not isinstance(reply, Watching):
        raise error_for_reply(reply, what)
    return reply.count


def peek_job_fields(
    reply: Reply, stats: Mapping[str, StatValue] | None, tube: str, what: str
) -> tuple[int, bytes, str, int] | None:
    """``(id, body, tube, priority)`` of a ``FOUND`` reply (None for NOT_FOUND)."""
    if isinstance(reply, Found):
        pri = stats.get("pri") if stats is not None else None
        name = stats.get("tube", tube) if stats is not None else tube
        return reply.id, reply.body, str(name), pri if isinstance(pri, int) else DEFAULT_PRIORITY
    if isinstance(reply, Word) and reply.word == "NOT_FOUND":
        return None
    raise error_for_reply(reply, what)
