"""``Job``: a job handed out by the router, with beanstalkc's methods (pure: it only calls back).

A ``Job`` knows its global id and asks its owner (the ``Router``) to act on it; the router sends
each command to the connection that holds the job (or to the shard the id names).
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from ..core.errors import NotFound
from ..protocol import StatValue

__all__ = ["DEFAULT_PRIORITY", "DEFAULT_TTR", "Job", "JobFields", "JobOwner"]

OwnerT = TypeVar("OwnerT")

DEFAULT_PRIORITY = 1024
"""Priority of a put when none is given (the API's ``put(body, priority=1024, ...)``), and of a
job whose priority is unknown."""
DEFAULT_TTR = 120
"""Time to run of a put when none is given (beanstalkc's default)."""


class JobOwner(Protocol):
    """What a ``Job`` needs from its router."""

    def delete(self, job_id: int) -> None: ...
    def release(self, job_id: int, priority: int | None = None, delay: int = 0) -> None: ...
    def bury(self, job_id: int, priority: int | None = None) -> None: ...
    def touch(self, job_id: int) -> None: ...
    def kick_job(self, job_id: int) -> None: ...
    def stats_job(self, job_id: int) -> dict[str, StatValue]: ...


class JobFields(Generic[OwnerT]):
    """What ``Job`` and ``AsyncJob`` hold.

    Attributes:
        id: the global job id.
        body: the body (``bytes``).
        tube: the tube the job is in.
        priority: its priority when it was handed out.
        reserved: True when this router holds it reserved.

    ``tube`` and ``priority`` may be unknown when the job is handed out (None: a reserve reads
    no ``stats-job``, see ``reserve.hold``); they are then read once, when first asked for
    (``_learn``).
    """

    __slots__ = ("_priority", "_router", "_tube", "body", "id", "reserved")

    def __init__(
        self,
        router: OwnerT,
        id: int,
        body: bytes,
        tube: str | None,
        priority: int | None,
        reserved: bool,
    ) -> None:
        self._router = router
        self.id = id
        self.body = body
        self._tube = tube
        self._priority = priority
        self.reserved = reserved

    @property
    def tube(self) -> str:
        if self._tube is None:
            self._learn()
        assert self._tube is not None
        return self._tube

    @property
    def priority(self) -> int:
        if self._priority is None:
            self._learn()
        assert self._priority is not None
        return self._priority

    def _learn(self) -> None:
        """Read ``tube`` and ``priority`` (a job handed out without them)."""
        raise NotImplementedError(f"{type(self).__name__} is always handed out with them")

    def __repr__(self) -> str:
        tube = "?" if self._tube is None else self._tube
        return f"{type(self).__name__}(id={self.id}, tube={tube!r}, body={self.body[:40]!r})"


class Job(JobFields[JobOwner]):
    """A job handed out by ``Router.reserve``/``peek*`` (attributes: ``JobFields``)."""

    __slots__ = ()

    def _learn(self) -> None:
        """One ``stats-job``; a job no longer there keeps ``DEFAULT_PRIORITY`` and tube ``""``."""
        try:
            stats = self._router.stats_job(self.id)
        except NotFound:
            stats = {}
        tube, pri = stats.get("tube", ""), stats.get("pri")
        self._tube = str(tube) if self._tube is None else self._tube
        if self._priority is None:
            known = isinstance(pri, int) and not isinstance(pri, bool)
            self._priority = pri if isinstance(pri, int) and known else DEFAULT_PRIORITY

    def delete(self) -> None:
        """Delete the job."""
        self._router.delete(self.id)
        self.reserved = False

    def release(self, priority: int | None = None, delay: int = 0) -> None:
        """Release the reserved job (``priority`` defaults to its priority)."""
        self._router.release(self.id, self._priority if priority is None else priority, delay)
        self.reserved = False

    def bury(self, priority: int | None = None) -> None:
        """Bury the reserved job (``priority`` defaults to its priority)."""
        self._router.bury(self.id, self._priority if priority is None else priority)
        self.reserved = False

    def touch(self) -> None:
        """Restart the reserved job's TTR."""
        self._router.touch(self.id)

    def kick(self) -> None:
        """Kick the job if it is buried or delayed."""
        self._router.kick_job(self.id)

    def stats(self) -> dict[str, StatValue]:
        """The job's ``stats-job`` mapping (``id`` is the global id)."""
        return self._router.stats_job(self.id)
