"""The unseen-counter ledger shared by the workers of ``beanrouter proxy --workers N``.

A worker's core records the ``reserves``/``releases``/``timeouts`` its own handling caused on a
shard and no client saw (``Cluster.unseen``: a cancelled wait's reserve, a prefetched job given
back), and takes them off that job's ``stats-job``. With one process the ledger is a bounded dict.
With several workers the job may next be reserved through another worker, whose ``stats-job``
must take them off too. So the supervisor creates one ledger (``create``: a file it unlinks at
once, so nothing is left behind even if it is killed), passes its descriptor to every worker it
starts, restarted ones included, and names it in ``$BEANROUTER_UNSEEN_FD``; each worker maps it
(``SharedUnseen``).

The file is a fixed table: a 64-byte header (magic, layout, a sequence counter), then
``BUCKETS`` buckets of ``WAYS`` entries of 32 bytes (global id; the sequence number of its last
change, 0 for an empty entry; the three counts): 2 MiB. A job's bucket is a hash of its id; when a
bucket is full its least recently changed entry gives way, so the ledger keeps about the most
recent ``BUCKETS * WAYS`` jobs, as the dict keeps the ``MAX_UNSEEN`` most recent. Changes take an
exclusive ``lockf`` on the file and reads a shared one, so two workers noting the same job add
up, and nobody reads half an entry. Notes are rare (at most a few per cross-shard delivery);
reads come with each ``stats-job``. A worker that cannot use the descriptor logs why and keeps a
ledger of its own.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
from typing import Final

from ..core.cluster import BoundedUnseen, UnseenLedger

__all__ = ["UNSEEN_ENV", "SharedUnseen", "create", "ledger_from_env"]

log = logging.getLogger("beanrouter.proxy")

UNSEEN_ENV: Final = "BEANROUTER_UNSEEN_FD"
"""The shared ledger's descriptor, in a worker's environment (set by ``workers.run_workers``)."""
MAGIC: Final = b"BRUNSEEN"
BUCKETS: Final = 16_384
WAYS: Final = 4
_HEADER: Final = struct.Struct("<8sIIQ")  # magic, buckets, ways, sequence
_HEADER_SIZE: Final = 64
_ENTRY: Final = struct.Struct("<QQIII4x")  # id, sequence (0: empty), reserves, releases, timeouts
_SEQ_AT: Final = 16
_MASK: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15


def _size(buckets: int, ways: int) -> int:
    return _HEADER_SIZE + buckets * ways * _ENTRY.size


def create(directory: str | None = None, buckets: int = BUCKETS, ways: int = WAYS) -> int:
    """A new, empty ledger (in ``/dev/shm`` when there is one), already unlinked: returns its
    descriptor, which the caller closes."""
    if directory is None and os.path.isdir("/dev/shm"):
        directory = "/dev/shm"
    import tempfile  # here: it costs start-up time (shutil, random)

    fd, path = tempfile.mkstemp(prefix="beanrouter-unseen-", dir=directory)
    try:
        os.unlink(path)
        os.ftruncate(fd, _size(buckets, ways))
        os.pwrite(fd, _HEADER.pack(MAGIC, buckets, ways, 0), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


class SharedUnseen:
    """A ledger that several processes map (``UnseenLedger``), from a descriptor that it owns
    once built (``close`` closes it); one that is not a ledger raises ``ValueError`` or
    ``OSError`` and stays the caller's."""

    def __init__(self, fd: int) -> None:
        head = os.pread(fd, _HEADER.size, 0)
        if len(head) < _HEADER.size:
            raise ValueError("not a beanrouter unseen-counter ledger (too short)")
        magic, buckets, ways, _ = _HEADER.unpack(head)
        if magic != MAGIC or buckets < 1 or ways < 1:
            raise ValueError("not a beanrouter unseen-counter ledger")
        if os.fstat(fd).st_size < _size(buckets, ways):
            raise ValueError("the unseen-counter ledger is truncated")
        self._map = mmap.mmap(fd, _size(buckets, ways))
        self._fd = fd
        self._buckets: int = buckets
        self._ways: int = ways

    def _bucket(self, job_id: int) -> int:
        """The offset of ``job_id``'s bucket."""
        mixed = (job_id * _GOLDEN) & _MASK
        index = (mixed >> 32) % self._buckets
        return _HEADER_SIZE + index * self._ways * _ENTRY.size

    def get(self, job_id: int) -> tuple[int, int, int] | None:
        base = self._bucket(job_id)
        fcntl.lockf(self._fd, fcntl.LOCK_SH)
        try:
            for way in range(self._ways):
                k, s, r, rel, t = _ENTRY.unpack_from(self._map, base + way * _ENTRY.size)
                if not s:
                    break  # (a bucket fills in order and no entry is emptied: none further on)
                if k == job_id:
                    return (r, rel, t)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        return None

    def add(self, job_id: int, reserves: int, releases: int, timeouts: int) -> None:
        base = self._bucket(job_id)
        m = self._map
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            (seq,) = struct.unpack_from("<Q", m, _SEQ_AT)
            seq += 1
            struct.pack_into("<Q", m, _SEQ_AT, seq)
            # The job's entry, else the bucket's first empty one (a bucket fills in order and
            # no entry is emptied), else its least recently changed one.
            victim, oldest, counts = base, -1, (0, 0, 0)
            for way in range(self._ways):
                at = base + way * _ENTRY.size
                k, s, r, rel, t = _ENTRY.unpack_from(m, at)
                if not s:
                    victim = at
                    break
                if k == job_id:
                    victim, counts = at, (r, rel, t)
                    break
                if oldest < 0 or s < oldest:
                    victim, oldest = at, s
            r, rel, t = counts
            _ENTRY.pack_into(
                m,
                victim,
                job_id,
                seq,
                min(r + reserves, 0xFFFFFFFF),
                min(rel + releases, 0xFFFFFFFF),
                min(t + timeouts, 0xFFFFFFFF),
            )
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1


def ledger_from_env() -> UnseenLedger:
    """The ledger a proxy process uses: the workers' shared one named by ``UNSEEN_ENV``, or a
    bounded dict of its own (one process, or a descriptor that cannot be used)."""
    value = os.environ.pop(UNSEEN_ENV, None)
    if value:
        try:
            return SharedUnseen(int(value))
        except (OSError, ValueError) as exc:
            log.warning("the workers' unseen-counter ledger (fd %s) cannot be used (%s): this "
                        "worker keeps its own", value, exc)  # fmt: skip
    return BoundedUnseen()
