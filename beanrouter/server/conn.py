"""Conn: one client session's state as the engine sees it, and the answers a blocked reserve gets.

The engine owns every field (``on_wake`` is the shell's hook); ``timers.py`` owns ``timer_at`` and
``timer_seq``. No I/O: the socket side of a connection lives in app.py.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias

from .timers import NEVER

if TYPE_CHECKING:
    from .job import Job
    from .tube import Tube

__all__ = ["DEADLINE_SOON", "TIMED_OUT", "WAIT", "Conn", "ReserveOutcome", "WakeResult"]


class ReserveOutcome(enum.Enum):
    """A reserve's answer when it is not a job."""

    DEADLINE_SOON = "DEADLINE_SOON"
    TIMED_OUT = "TIMED_OUT"
    WAIT = "WAIT"  # only returned by reserve(); never passed to on_wake

    def __repr__(self) -> str:
        return self.value


DEADLINE_SOON: Final = ReserveOutcome.DEADLINE_SOON
TIMED_OUT: Final = ReserveOutcome.TIMED_OUT
WAIT: Final = ReserveOutcome.WAIT

WakeResult: TypeAlias = "Job | ReserveOutcome"


def _ignore_wake(result: WakeResult) -> None:
    pass


class Conn:
    """One client session's state (beanstalkd's ``Conn`` minus the socket).

    Attributes:
        use: the used Tube.
        watch: the watched tubes, in beanstalkd's ms order (list-tubes-watched).
        reserved: jobs reserved by this conn, by id, in reservation order.
        waiting: blocked in reserve / reserve-with-timeout.
        half_closed: the peer shut its write side (see ``Engine.half_close``).
        on_wake: called with a Job, DEADLINE_SOON or TIMED_OUT when a blocked reserve is answered.
        producer, worker: has issued a put / a reserve (stats current-producers/workers).
    """

    __slots__ = (
        "closed",
        "half_closed",
        "on_wake",
        "producer",
        "reserved",
        "soonest",
        "timer_at",
        "timer_seq",
        "use",
        "wait_deadline",
        "waiting",
        "watch",
        "worker",
    )

    def __init__(self, tube: Tube) -> None:
        self.use = tube
        self.watch: list[Tube] = [tube]
        self.reserved: dict[int, Job] = {}
        self.soonest: Job | None = None  # cached reserved job with the earliest deadline
        self.producer = False
        self.worker = False
        self.waiting = False
        self.wait_deadline = NEVER  # absolute ns a waiting reserve-with-timeout gives up
        self.half_closed = False
        self.closed = False
        self.on_wake: Callable[[WakeResult], None] = _ignore_wake
        self.timer_at = NEVER  # time of this conn's live timer-heap entry
        self.timer_seq = 0  # its sequence number (0: none)

    def __repr__(self) -> str:
        return f"<Conn use={self.use.name!r} reserved={len(self.reserved)} waiting={self.waiting}>"
