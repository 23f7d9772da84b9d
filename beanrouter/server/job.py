"""Job: one beanstalkd job, its state and its counters (beanstalkd's ``job.c`` + ``Jobrec``).

Invariants:
- ``id`` never changes and is never reused; ``tube`` never changes.
- A job is in exactly one place, given by ``state``: its tube's ready heap (READY), its tube's
  delay heaps (DELAYED), its tube's buried FIFO (BURIED) or its reserver's reserved set
  (RESERVED). A deleted job is INVALID.
- Ordering (``<``) is beanstalkd's ``job_pri_less``: lower (pri, id) first. The ready heaps hold
  Job objects directly (no per-job key tuple), which is why ``pri`` must not change while a job is
  in a ready heap: the engine only changes it on reserved jobs.

Memory: ten slots, 112 bytes per object as ``sys.getsizeof`` counts and as CPython's allocator
gives it out (its size classes are multiples of 16: thirteen slots took 144). The fields read on
the hot paths have a slot each; the cold ones (the binlog file, the delay, the bury stamp and the
five u32 ``stats-job`` counters) share one int, ``packed``, read through properties, so a fresh
job costs no int object for any of them (``packed`` is 0, or with a binlog the very int object of
its file's index, shared by every job in that file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .conn import Conn
    from .tube import Tube

__all__ = [
    "BURIED",
    "COUNTS_SHIFT",
    "DELAYED",
    "INVALID",
    "P_BURY",
    "P_KICK",
    "P_RELEASE",
    "P_RESERVE",
    "P_TIMEOUT",
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

# Job.packed: file (u32) | delay (u32) << 32 | bury_seq (u64) << 64 | counts (160 bits) << 128.
_DELAY_SHIFT: Final = 32
_BURY_SHIFT: Final = 64
COUNTS_SHIFT: Final = 128
_U64: Final = (1 << 64) - 1
_NOT_FILE: Final = ~_U32
_NOT_DELAY: Final = ~(_U32 << _DELAY_SHIFT)
_NOT_BURY: Final = ~(_U64 << _BURY_SHIFT)
_BELOW_COUNTS: Final = (1 << COUNTS_SHIFT) - 1
# One more of a counter, added to Job.packed (the engine's increments, without a property).
P_RESERVE: Final = RESERVE_ONE << COUNTS_SHIFT
P_TIMEOUT: Final = TIMEOUT_ONE << COUNTS_SHIFT
P_RELEASE: Final = RELEASE_ONE << COUNTS_SHIFT
P_BURY: Final = BURY_ONE << COUNTS_SHIFT
P_KICK: Final = KICK_ONE << COUNTS_SHIFT


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
        packed: ``file``, ``delay``, ``bury_seq`` and ``counts`` in one int (see ``P_RESERVE``
            and the like to add to a counter); those four are properties over it.
    """

    __slots__ = (
        "body",
        "created_at",
        "deadline_at",
        "id",
        "packed",
        "pri",
        "reserver",
        "state",
        "ttr",
        "tube",
    )

    id: int
    pri: int
    ttr: int
    body: bytes
    tube: Tube
    state: int
    created_at: int
    deadline_at: int
    reserver: Conn | None
    packed: int

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
        self.ttr = ttr
        self.body = body
        self.tube = tube
        self.state = INVALID
        self.created_at = created_at
        self.deadline_at = 0
        self.reserver = None
        self.packed = delay << _DELAY_SHIFT if delay else 0

    @property
    def delay(self) -> int:
        """The delay of the last put or release, in whole seconds."""
        return (self.packed >> _DELAY_SHIFT) & _U32

    @delay.setter
    def delay(self, value: int) -> None:
        self.packed = (self.packed & _NOT_DELAY) | (value << _DELAY_SHIFT)

    @property
    def file(self) -> int:
        """Index of the binlog file holding the job's latest full record; 0 without a binlog."""
        return self.packed & _U32

    @file.setter
    def file(self, value: int) -> None:
        packed = (self.packed & _NOT_FILE) | value
        # Nothing else set (the usual case): keep the file's own index object, which every job
        # in that file shares, rather than a new int per job.
        self.packed = value if packed == value else packed

    @property
    def bury_seq(self) -> int:
        """Stamp of the job's entry in its tube's buried FIFO (valid while BURIED)."""
        return (self.packed >> _BURY_SHIFT) & _U64

    @bury_seq.setter
    def bury_seq(self, value: int) -> None:
        self.packed = (self.packed & _NOT_BURY) | (value << _BURY_SHIFT)

    @property
    def counts(self) -> int:
        """The five stats-job counters, 32 bits each (``RESERVE_ONE`` ... ``KICK_ONE``)."""
        return self.packed >> COUNTS_SHIFT

    @counts.setter
    def counts(self, value: int) -> None:
        self.packed = (self.packed & _BELOW_COUNTS) | (value << COUNTS_SHIFT)

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
        return (self.packed >> COUNTS_SHIFT) & _U32

    @property
    def timeouts(self) -> int:
        """How many times the job's TTR ran out."""
        return (self.packed >> (COUNTS_SHIFT + 32)) & _U32

    @property
    def releases(self) -> int:
        """How many times the job was released."""
        return (self.packed >> (COUNTS_SHIFT + 64)) & _U32

    @property
    def buries(self) -> int:
        """How many times the job was buried."""
        return (self.packed >> (COUNTS_SHIFT + 96)) & _U32

    @property
    def kicks(self) -> int:
        """How many times the job was kicked."""
        return (self.packed >> (COUNTS_SHIFT + 128)) & _U32
