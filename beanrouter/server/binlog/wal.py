"""Wal: the binlog directory while the server runs: files, reserved space, writes, sync, compaction.

``Wal`` is the engine's ``Journal``: the engine reports puts, state changes and deletes, the Wal
encodes a record for each at once (format.py) and buffers it; the asyncio shell calls ``flush``
(one ``os.pwrite`` per file per batch), ``sync`` (flush, then fsync) and ``compact`` between
batches (see ``commit.py``). Only the start-up (``recover.py``) reads files.

Files are ``beanrouter-binlog.N`` (``file_name``) with N rising (format-1 files, named
``binlog.N``, are taken over at start-up too, until the start-up's conversion deletes them).
``files[0]`` is the oldest, ``cur`` is being written, the files after ``cur`` are spares made
ahead of need. A file is made at its full size at once
(``allocate``: ``posix_fallocate`` unless a test injects a failing one), so writes never need
new disk space: the only call that can meet a full disk is making a file, which happens when
room is reserved, before the engine changes anything. When a file is left for the next one it is
flushed, fsynced (unless ``-F``), cut to its used length and closed, so only the newest file with
records can have a torn tail after a crash.

Invariants:
- Room for deletes: after every write the engine asked room for, the files from ``cur`` on can
  hold one STATE record (the size of a delete) for each live job (``owed``), counting only
  records that fit whole in a file. So ``delete`` always has room, even on a full disk.
- A job's ``file`` is the index of the file holding its newest JOB record; that file's ``refs``
  counts it and its ``ids`` list contains the job's id (``ids`` may also hold stale ids).
- A file is deleted only when it is the oldest, nothing refers to it, it is not being written,
  and every record that superseded its records is on disk: ``gc`` runs right after an fsync
  (or after a flush with ``-F``). Deleting the oldest first keeps replay correct: a STATE record
  whose JOB record is gone is ignored, which is right only if no older JOB record survives.
- ``alive`` is the size of every live job's newest JOB record; compaction (beanstalkd's policy,
  see ``compact``) keeps the files within about three times ``alive + owed * STATE_SIZE`` (or
  three files) by rewriting live jobs of the oldest files into ``cur``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..job import INVALID, Job
from . import format as fmt
from .format import job_record, state_record

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = [
    "FILE_PREFIX",
    "LEGACY_PREFIX",
    "Allocate",
    "Wal",
    "WalError",
    "WalFile",
    "default_allocate",
    "file_name",
]

D: Final = fmt.STATE_SIZE
FILE_SIZE_UNIT: Final = 4096
"""``-s`` is rounded up to a multiple of this, at least one (as beanstalkd does; binlog-max-size
still shows the value given)."""
MAX_MOVES: Final = 4096
"""Compaction moves at most this many jobs per batch (bounds the pause it adds)."""

Allocate = Callable[[int, int], None]
"""``allocate(fd, size)``: make ``size`` bytes of the open, empty file real on disk; raises
OSError (ENOSPC) when the disk is full."""


def default_allocate(fd: int, size: int) -> None:
    """``posix_fallocate``: blocks are reserved now, so later writes cannot hit ENOSPC."""
    os.posix_fallocate(fd, 0, size)


FILE_PREFIX: Final = "beanrouter-binlog."
"""Our files' names: ``beanrouter-binlog.N``. Not beanstalkd's ``binlog.N``: beanstalkd, started
on the directory, takes every ``binlog.N`` for its own, cannot read it, and deletes it at its
next clean-up (docs/server.md); it leaves files of other names alone."""
LEGACY_PREFIX: Final = "binlog."
"""The names of format-1 files (written before format 2; converted at start-up)."""


def file_name(index: int) -> str:
    """``beanrouter-binlog.<index>``: the name of our file N."""
    return f"{FILE_PREFIX}{index}"


class WalError(OSError):
    """Writing or syncing the binlog failed: acknowledged jobs may not be on disk. The server
    stops rather than acknowledge jobs it cannot log."""


class WalFile:
    """One binlog file's bookkeeping."""

    __slots__ = (
        "buf",
        "fd",
        "finishing",
        "ids",
        "index",
        "path",
        "refs",
        "size",
        "used",
        "written",
    )

    def __init__(self, index: int, path: str, fd: int, size: int, used: int) -> None:
        self.index = index
        self.path = path
        self.fd = fd  # -1 once closed
        self.size = size  # bytes the file takes on disk (allocated, or its length once closed)
        self.used = used  # header + records, including those still buffered
        self.written = used  # bytes handed to the OS
        self.buf: list[bytes] = []  # records not yet written
        self.refs = 0
        self.ids: list[int] = []
        self.finishing = False  # left for a later file: close it at the next flush

    @property
    def free(self) -> int:
        return self.size - self.used

    def __repr__(self) -> str:
        return f"<WalFile {self.index} used={self.used}/{self.size} refs={self.refs}>"


class Wal:
    """The binlog of one server (see the module docstring).

    Args:
        directory: the ``-b`` directory (already locked).
        file_size: ``-s``: the size of each file.
        fsync: whether to fsync at all (False with ``-F``).
        allocate: makes a new file's space real; tests inject a failing one.
        sync_file: the fsync call (``os.fdatasync``); tests inject one that records calls.
        clock: wall clock in ns (file headers).
        log: where warnings go (stderr).
    """

    def __init__(
        self,
        directory: str,
        *,
        file_size: int,
        fsync: bool = True,
        allocate: Allocate = default_allocate,
        sync_file: Callable[[int], None] = os.fdatasync,
        clock: Callable[[], int] = time.time_ns,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = directory
        self.max_size = file_size
        self.file_size = max(1, -(-file_size // FILE_SIZE_UNIT)) * FILE_SIZE_UNIT
        self.fsync = fsync
        self.allocate = allocate
        self.sync_file = sync_file
        self.clock = clock
        self.log = log if log is not None else _stderr
        self.files: list[WalFile] = []
        self._by_index: dict[int, WalFile] = {}
        self._cur_i = 0
        self.cur: WalFile | None = None
        self._next_index = 1
        self._spare = 0  # delete-sized slots in the files after cur
        self.owed = 0  # live jobs, each owed room for its delete record
        self.alive = 0
        self.disk = 0
        self._dirty: list[WalFile] = []
        self.batch_records = 0  # records buffered since the last flush
        self.unsynced = False  # bytes handed to the OS since the last fsync
        self.records_written = 0
        self.records_migrated = 0
        self._engine: Engine | None = None
        self._epoch = 0
        self._stats: dict[str, int] = {}
        self._space_warned = False

    # -- set-up -----------------------------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        """Become ``engine``'s journal and keep its binlog-* stats."""
        self._engine = engine
        self._epoch = engine.epoch
        self._stats = engine.binlog_stats
        engine.journal = self
        self._update_stats()

    def adopt(
        self, index: int, size: int, refs: int, ids: list[int], alive: int, path: str = ""
    ) -> None:
        """Take over an existing (closed) file found at start-up, oldest first (``path``: its
        name if not ``file_name(index)``, a format-1 file's)."""
        path = path or os.path.join(self.directory, file_name(index))
        f = WalFile(index, path, -1, size, size)
        f.refs = refs
        f.ids = ids
        self.files.append(f)
        self._by_index[index] = f
        self.disk += size
        self.alive += alive
        self._next_index = max(self._next_index, index + 1)

    def start(self, next_index: int, owed: int) -> None:
        """Open a fresh file to write (beanstalkd also never appends to an old one) and make
        room for ``owed`` deletes.

        Raises:
            WalError: the file could not be made or the room not reserved (disk full).
        """
        self._next_index = max(self._next_index, next_index)
        f = self._new_file(self.file_size)
        if f is None:
            raise WalError(f"cannot create a binlog file in {self.directory}")
        self._cur_i = len(self.files) - 1
        self.cur = f
        self.owed = owed
        if not self._ensure(0, owed):
            raise WalError(f"no disk space in {self.directory} to reserve the binlog")
        if self.fsync:  # what was read must be on disk before files it supersedes go
            try:
                for old in self.files[: self._cur_i]:
                    _fsync_path(old.path)
            except OSError as exc:
                raise WalError(f"cannot fsync the binlog: {exc}") from exc
        self.gc()
        self._update_stats()

    # -- Journal (called by the engine) -----------------------------------------------------------

    def _job_record(self, job: Job) -> bytes:
        """The full JOB record of ``job`` as it is now."""
        return job_record(
            job.tube.name.encode(),
            job.body,
            job.id,
            job.pri,
            job.delay,
            job.ttr,
            job.state,
            self._epoch + job.created_at,
            job.deadline_at,
            job.bury_seq,
            job.counts,
        )

    def put(self, job: Job) -> bool:
        """Log a new job; False (and nothing logged) when its room cannot be reserved."""
        rec = self._job_record(job)
        size = len(rec)
        owed = self.owed + 1
        f = self.cur
        assert f is not None, "Wal.start was not called"
        free = f.size - f.used
        if free < size or (free - size) // D + self._spare < owed:
            if not self._ensure(size, owed):
                return False
            f = self._place(size, owed)
        self._append(f, rec)
        self.owed = owed
        job.file = f.index
        f.refs += 1
        f.ids.append(job.id)
        self.alive += size
        return True

    def reserve_update(self) -> bool:
        """Room for one STATE record now, keeping the room owed to deletes."""
        f = self.cur
        assert f is not None, "Wal.start was not called"
        free = f.size - f.used
        if free >= D and (free - D) // D + self._spare >= self.owed:
            return True
        return self._ensure(D, self.owed)

    def update(self, job: Job) -> None:
        """Log ``job``'s new state (room was reserved by ``reserve_update``)."""
        rec = self._state(job, job.state)
        f = self.cur
        assert f is not None, "Wal.start was not called"
        free = f.size - f.used
        if free < D or (free - D) // D + self._spare < self.owed:
            f = self._place(D, self.owed)
        self._append(f, rec)

    def delete(self, job: Job) -> None:
        """Log ``job``'s deletion, in the room reserved when it was put."""
        rec = self._state(job, INVALID)
        f = self.cur
        assert f is not None, "Wal.start was not called"
        owed = self.owed - 1
        if f.size - f.used < D:
            f = self._place(D, owed)
        self._append(f, rec)
        self.owed = owed
        home = self._by_index.get(job.file)
        if home is not None:
            home.refs -= 1
            self.alive -= fmt.job_record_size(job.tube.name.encode(), job.body)

    # -- between batches (called by the shell) ----------------------------------------------------

    @property
    def current_index(self) -> int:
        """The index N of the file being written (0 before ``start``)."""
        return self.cur.index if self.cur is not None else 0

    @property
    def has_buffered(self) -> bool:
        """Records (or a file change) wait for ``flush``."""
        return bool(self._dirty)

    def flush(self) -> None:
        """Hand every buffered record to the OS: one write per file touched. Files left for a
        newer one are fsynced (unless -F), cut to their used length and closed here.

        Raises:
            WalError: a write, fsync or truncate failed.
        """
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        self.batch_records = 0
        try:
            for f in dirty:
                if f.buf:
                    data = b"".join(f.buf) if len(f.buf) > 1 else f.buf[0]
                    f.buf = []
                    n = os.pwrite(f.fd, data, f.written)
                    if n != len(data):
                        raise OSError(f"short write to {f.path}: {n} of {len(data)} bytes")
                    f.written += n
                    self.unsynced = True
                if f.finishing:
                    self._finish(f)
        except OSError as exc:
            raise WalError(f"binlog write failed: {exc}") from exc

    def sync(self, *, force: bool = False) -> None:
        """Flush, fsync the file being written (unless -F), then delete files nobody needs.
        ``force``: fsync even with -F (and the directory too, after the deletions): before
        files that are the only copy of jobs go (the start-up's format conversion).

        Raises:
            WalError: a write or fsync failed.
        """
        self.flush()
        cur = self.cur
        if self.unsynced and (self.fsync or force) and cur is not None:
            try:
                self.sync_file(cur.fd)
            except OSError as exc:
                raise WalError(f"binlog fsync failed: {exc}") from exc
        self.unsynced = False
        self.gc(force=force)

    def compact(self, records: int) -> int:
        """beanstalkd's compaction (``walcompact``), run after a batch that wrote ``records``.

        With ``ratio`` = (room of the files - room of the live jobs) / room of the live jobs,
        every file counted at its nominal size and a live job at its JOB record plus its owed
        delete (as beanstalkd counts), while ``ratio >= 2`` it moves ``ratio - 1`` jobs per
        record written (at most ``MAX_MOVES`` per batch) out of the oldest files into ``cur``,
        never from ``cur`` or the file just before it. A file left without jobs goes at the
        next ``gc``. So the files stay within about three times the live jobs' room (or three
        files). Returns the jobs moved.
        """
        engine = self._engine
        last = self._cur_i - 1  # files[:last] may give up jobs
        if engine is None or last < 1 or records <= 0:
            return 0
        live = self.alive + self.owed * D
        if not live:
            return 0
        nominal = sum(max(f.size, self.file_size) for f in self.files)
        ratio = (nominal - live) // live
        if ratio < 2:
            return 0
        moves = min(records * (ratio - 1), MAX_MOVES)
        moved = 0
        k = 0
        files = self.files
        while moved < moves:
            while k < last and files[k].refs <= 0:
                k += 1
            if k >= last:
                break
            src = files[k]
            job = None
            while src.ids:
                candidate = engine.peek(src.ids.pop())
                if candidate is not None and candidate.file == src.index:
                    job = candidate
                    break
            if job is None:  # pragma: no cover - refs and ids disagree
                src.refs = 0
                continue
            if not self.rewrite(job):
                src.ids.append(job.id)
                break  # no room now; try again after a later batch
            moved += 1
        return moved

    def rewrite(self, job: Job) -> int:
        """Write a fresh JOB record of ``job`` (as it is now) into ``cur``, so its older file
        can go (a migration). Returns the record's size, or 0 if there is no room."""
        rec = self._job_record(job)
        size = len(rec)
        if not self._ensure(size, self.owed):
            return 0
        f = self._place(size, self.owed)
        self._append(f, rec)
        old = self._by_index.get(job.file)
        if old is not None:
            old.refs -= 1
        else:
            self.alive += size
        job.file = f.index
        f.refs += 1
        f.ids.append(job.id)
        self.records_migrated += 1
        self._stats["binlog-records-migrated"] = self.records_migrated
        return size

    def gc(self, *, force: bool = False) -> None:
        """Delete the oldest files while nothing refers to them (after a sync: see the module
        docstring); ``force``: fsync the directory after, even with -F."""
        removed = False
        files = self.files
        while self._cur_i > 0:
            f = files[0]
            if f.refs > 0 or f.finishing or f.buf:
                break
            try:
                os.unlink(f.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.log(f"cannot delete {f.path}: {exc.strerror}")
                break
            del files[0]
            del self._by_index[f.index]
            self._cur_i -= 1
            self.disk -= f.size
            removed = True
        if removed:
            if self.fsync or force:
                try:
                    _fsync_path(self.directory)
                except OSError as exc:  # the deletions may come back after a crash: harmless
                    self.log(f"cannot fsync {self.directory}: {exc.strerror}")
            self._update_stats()

    def close(self) -> None:
        """Orderly shutdown: write and sync everything, cut the current file to its used length,
        delete the spare files.

        Raises:
            WalError: a write or fsync failed.
        """
        self.sync()
        for f in self.files[self._cur_i :]:
            if f.fd < 0:
                continue
            try:
                if f is self.cur:
                    self._finish(f)
                else:
                    os.close(f.fd)
                    f.fd = -1
                    os.unlink(f.path)
            except OSError as exc:
                raise WalError(f"closing the binlog failed: {exc}") from exc

    # -- internals --------------------------------------------------------------------------------

    def _state(self, job: Job, state: int) -> bytes:
        return state_record(
            job.id,
            job.pri,
            job.delay,
            job.ttr,
            state,
            self._epoch + job.created_at,
            job.deadline_at,
            job.bury_seq,
            job.counts,
        )

    def _append(self, f: WalFile, rec: bytes) -> None:
        if not f.buf and not f.finishing:
            self._dirty.append(f)
        f.buf.append(rec)
        f.used += len(rec)
        self.batch_records += 1
        self.records_written += 1
        self._stats["binlog-records-written"] = self.records_written

    def _plan(self, size: int, owed: int) -> int | None:
        """Where a record of ``size`` bytes would go (an index into ``files``) such that room
        for ``owed`` deletes remains after it; None if the files cannot do it."""
        files = self.files
        n = len(files)
        i = self._cur_i
        while i < n and files[i].size - files[i].used < size:
            i += 1
        if i == n:
            return None
        slots = (files[i].free - size) // D
        for k in range(i + 1, n):
            slots += files[k].free // D
        return i if slots >= owed else None

    def _ensure(self, size: int, owed: int) -> bool:
        """Make files until a record of ``size`` bytes and ``owed`` deletes fit; False if a file
        cannot be made (the files made so far stay, as spares)."""
        while self._plan(size, owed) is None:
            fits = any(f.free >= size for f in self.files[self._cur_i :])
            want = self.file_size if fits else max(self.file_size, fmt.HEADER_SIZE + size)
            if self._new_file(want) is None:
                return False
            self._spare = sum(f.free // D for f in self.files[self._cur_i + 1 :])
        return True

    def _place(self, size: int, owed: int) -> WalFile:
        """The file a record of ``size`` bytes goes to (room was ensured); leaves files behind
        if it is not ``cur``."""
        i = self._plan(size, owed)
        if i is None:  # pragma: no cover - callers ensure room first
            raise WalError("binlog space accounting is broken: no room for a reserved record")
        if i != self._cur_i:
            for f in self.files[self._cur_i : i]:
                f.finishing = True
                if not f.buf:
                    self._dirty.append(f)
            self._cur_i = i
            self.cur = self.files[i]
            self._spare = sum(f.free // D for f in self.files[i + 1 :])
            self._update_stats()
        return self.files[i]

    def _new_file(self, size: int) -> WalFile | None:
        """Make the next file, allocated to ``size`` bytes, with its header written."""
        index = self._next_index
        path = os.path.join(self.directory, file_name(index))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._warn_space(f"cannot create {path}: {exc.strerror}")
            return None
        try:
            self.allocate(fd, size)
            engine = self._engine
            next_id = engine.next_id if engine is not None else 1
            header = fmt.encode_header(index, next_id, self.clock())
            os.pwrite(fd, header, 0)
            if self.fsync:
                self.sync_file(fd)
                _fsync_path(self.directory)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            self._warn_space(f"cannot allocate {size} bytes for {path}: {exc.strerror or exc}")
            return None
        self._next_index = index + 1
        self._space_warned = False
        f = WalFile(index, path, fd, size, fmt.HEADER_SIZE)
        self.files.append(f)
        self._by_index[index] = f
        self.disk += size
        return f

    def _finish(self, f: WalFile) -> None:
        """fsync (unless -F), cut to the used length and close a file left for a newer one."""
        f.finishing = False
        if f.fd < 0:
            return
        if self.fsync and f.written > fmt.HEADER_SIZE:
            self.sync_file(f.fd)
        os.ftruncate(f.fd, f.used)
        os.close(f.fd)
        f.fd = -1
        self.disk -= f.size - f.used
        f.size = f.used

    def _warn_space(self, message: str) -> None:
        if not self._space_warned:  # once per episode: a full disk would flood the log
            self._space_warned = True
            self.log(f"{message}; put answers OUT_OF_MEMORY until there is room")

    def _update_stats(self) -> None:
        s = self._stats
        if self.files:
            s["binlog-oldest-index"] = self.files[0].index
        if self.cur is not None:
            s["binlog-current-index"] = self.cur.index
        s["binlog-records-migrated"] = self.records_migrated
        s["binlog-records-written"] = self.records_written
        s["binlog-max-size"] = self.max_size


def _fsync_path(path: str) -> None:
    """fsync a directory or closed file by path (makes creations and deletions durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stderr(message: str) -> None:
    print(f"beanrouter server: {message}", file=sys.stderr, flush=True)
