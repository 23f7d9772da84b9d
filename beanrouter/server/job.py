"""Job: one beanstalkd job, its state and its counters (beanstalkd's ``job.c`` + ``Jobrec``).

Invariants:
- ``id`` never changes and is never reused; ``tube`` never changes.
- A job is in exactly one place, given by ``state``: its tube's ready heap (READY), its tube's
  delay heaps (DELAYED), its tube's buried FIFO (BURIED) or its reserver's reserved set
  (RESERVED). A deleted job is INVALID.
- Ordering (``<``) is beanstalkd's ``job_pri_less``: lower (pri, id) first. The ready heaps hold
  Job objects directly (no per-job key tuple), which is why ``pri`` must not change while a job is
  in a ready heap: the engine only changes it on reserved jobs.

Memory: thirteen slots (136 bytes per object as ``sys.getsizeof`` counts). The five u32 counters
share one int (``counts``, 32 bits each) so a fresh job costs no counter objects at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .conn import Conn
    from .tube import Tube

__all__ = [
    "BURIED",
    "DELAYED",
    "INVALID",
    "READY",
    "RESERVED",
    "STATE_NAMES",
    "Job",
]

# Same numbering as beanstalkd's Jobrec.state, so a journal can store it as is.
INVALID: Final = 0
READY: Final = 1
RESERVED: Final = 2
BURIED: Final = 3
DELAYED: Final = 4

STATE_NAMES: Final = ("invalid", "ready", "reserved", "buried", "delayed")


# Bit offsets of the counters packed in Job.counts.
RESERVE_ONE: Final = 1
TIMEOUT_ONE: Final = 1 << 32
RELEASE_ONE: Final = 1 << 64
BURY_ONE: Final = 1 << 96
KICK_ONE: Final = 1 << 128
_U32: Final = 0xFFFFFFFF


class Job:
    """One job. Times are absolute nanoseconds except ``created_at`` (see below).

    Attributes:
        id: the job id (u64, from 1).
        pri: priority (u32); lower is more urgent.
        delay: the delay of the last put/release, in whole seconds (shown by stats-job).
        ttr: time to run in whole seconds (at least 1).
        body: the job data, without the trailing CRLF.
        tube: the Tube the job lives in.
        state: READY, RESERVED, BURIED, DELAYED or INVALID.
        created_at: creation time in ns relative to the engine's ``epoch`` (relative keeps the int
            small: 32 bytes instead of 48). Use ``Engine.created_at(job)`` for the absolute value.
        deadline_at: absolute ns when a DELAYED job becomes ready or a RESERVED job's TTR ends;
            meaningless in other states (as in beanstalkd).
        counts: the five stats-job counters packed 32 bits each; read them through the
            properties ``reserves``, ``timeouts``, ``releases``, ``buries``, ``kicks``.
        reserver: the Conn holding the job while RESERVED, else None.
        bury_seq: stamp of the job's current entry in its tube's buried FIFO (valid while BURIED);
            the binlog keeps it so a restart restores the FIFO order.
        file: index of the binlog file holding the job's latest full record (stats-job ``file``);
            0 without a binlog.
    """

    __slots__ = (
        "body",
        "bury_seq",
        "counts",
        "created_at",
        "deadline_at",
        "delay",
        "file",
        "id",
        "pri",
        "reserver",
        "state",
        "ttr",
        "tube",
    )

    id: int
    pri: int
    delay: int
    ttr: int
    body: bytes
    tube: Tube
    state: int
    created_at: int
    deadline_at: int
    counts: int
    reserver: Conn | None
    bury_seq: int
    file: int

    def __init__(
        self,
        job_id: int,
        pri: int,
        delay: int,
        ttr: int,
        body: bytes,
        tube: Tube,
        created_at: int,
    ) -> None:
        self.id = job_id
        self.pri = pri
        self.delay = delay
        self.ttr = ttr
        self.body = body
        self.tube = tube
        self.state = INVALID
        self.created_at = created_at
        self.deadline_at = 0
        self.counts = 0
        self.reserver = None
        self.bury_seq = 0
        self.file = 0

    def __lt__(self, other: Job) -> bool:
        a = self.pri
        b = other.pri
        return a < b or (a == b and self.id < other.id)

    def __repr__(self) -> str:
        return f"<Job {self.id} {STATE_NAMES[self.state]} pri={self.pri}>"

    @property
    def state_name(self) -> str:
        """``ready``, ``reserved``, ``buried``, ``delayed`` (or ``invalid`` once deleted)."""
        return STATE_NAMES[self.state]

    @property
    def reserves(self) -> int:
        """How many times the job was reserved (reserve, reserve-with-timeout, reserve-job)."""
        return self.counts & _U32

    @property
    def timeouts(self) -> int:
        """How many times the job's TTR ran out."""
        return (self.counts >> 32) & _U32

    @property
    def releases(self) -> int:
        """How many times the job was released."""
        return (self.counts >> 64) & _U32

    @property
    def buries(self) -> int:
        """How many times the job was buried."""
        return (self.counts >> 96) & _U32

    @property
    def kicks(self) -> int:
        """How many times the job was kicked."""
        return (self.counts >> 128) & _U32
