"""``Job``: a job handed out by the router, with beanstalkc's methods (pure: it only calls back).

A ``Job`` knows its global id and asks its owner (the ``Router``) to act on it; the router sends
each command to the connection that holds the job (or to the shard the id names).
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

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
    """

    __slots__ = ("_router", "body", "id", "priority", "reserved", "tube")

    def __init__(
        self, router: OwnerT, id: int, body: bytes, tube: str, priority: int, reserved: bool
    ) -> None:
        self._router = router
        self.id = id
        self.body = body
        self.tube = tube
        self.priority = priority
        self.reserved = reserved

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id}, tube={self.tube!r}, body={self.body[:40]!r})"


class Job(JobFields[JobOwner]):
    """A job handed out by ``Router.reserve``/``peek*`` (attributes: ``JobFields``)."""

    __slots__ = ()

    def delete(self) -> None:
        """Delete the job."""
        self._router.delete(self.id)
        self.reserved = False

    def release(self, priority: int | None = None, delay: int = 0) -> None:
        """Release the reserved job (``priority`` defaults to its priority)."""
        self._router.release(self.id, self.priority if priority is None else priority, delay)
        self.reserved = False

    def bury(self, priority: int | None = None) -> None:
        """Bury the reserved job (``priority`` defaults to its priority)."""
        self._router.bury(self.id, self.priority if priority is None else priority)
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
