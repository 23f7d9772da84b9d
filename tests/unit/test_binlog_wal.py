"""Wal: reserved space, rotation, disk full, compaction and gc, on a real directory, fake clock.

Each test drives the engine (the Wal is its journal) the way the server does: commands, then
``flush``/``sync`` between batches. ``check`` verifies the Wal's invariants after every step.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from beanrouter.server.binlog import format as fmt
from beanrouter.server.binlog.recover import load
from beanrouter.server.binlog.wal import Wal, default_allocate
from beanrouter.server.engine import NS, Conn, Engine, OutOfSpace
from beanrouter.server.job import BURIED, DELAYED, READY, RESERVED
from beanrouter.server.procinfo import ProcInfo

T0 = 1_700_000_000 * NS
D = fmt.STATE_SIZE


class FakeClock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> int:
        return self.t


class DiskFull:
    """An ``allocate`` that fails (ENOSPC) while ``full`` is set; counts the files made."""

    def __init__(self) -> None:
        self.full = False
        self.made = 0

    def __call__(self, fd: int, size: int) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        default_allocate(fd, size)
        self.made += 1


def open_log(
    directory: Path,
    *,
    file_size: int = 4096,
    allocate: Callable[[int, int], None] = default_allocate,
    syncs: list[int] | None = None,
) -> tuple[Engine, Wal]:
    engine = Engine(clock=FakeClock(), procinfo=ProcInfo.fixed())
    sync_file = (lambda fd: syncs.append(fd)) if syncs is not None else os.fdatasync
    wal = Wal(
        str(directory),
        file_size=file_size,
        fsync=syncs is not None,
        allocate=allocate,
        sync_file=sync_file,
        log=lambda message: None,
    )
    load(engine, wal)
    return engine, wal


def check(engine: Engine, wal: Wal) -> None:
    """The Wal's invariants (see wal.py)."""
    files = wal.files
    assert wal.cur is files[wal._cur_i]
    assert [f.index for f in files] == sorted(f.index for f in files)
    jobs = engine.jobs()
    assert wal.owed == len(jobs)
    after = files[wal._cur_i :]
    slots = sum(max(f.free, 0) // D for f in after)
    assert slots >= wal.owed, (slots, wal.owed)
    by_index = {f.index: f for f in files}
    refs: dict[int, int] = {}
    for j in jobs:
        assert j.file in by_index, (j, j.file)
        refs[j.file] = refs.get(j.file, 0) + 1
        assert j.id in by_index[j.file].ids
    for f in files:
        assert f.refs == refs.get(f.index, 0), f
    alive = sum(fmt.job_record_size(j.tube.name.encode(), j.body) for j in jobs)
    assert wal.alive == alive
    on_disk = sorted(p for p in os.listdir(wal.directory) if "binlog." in p)
    assert on_disk == sorted(f"beanrouter-binlog.{f.index}" for f in files)
    assert wal.disk == sum(f.size for f in files)


def files_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("beanrouter-binlog.*"))


def test_fresh_directory(tmp_path: Path) -> None:
    engine, wal = open_log(tmp_path)
    assert [f.index for f in wal.files] == [1]
    assert engine.binlog_stats == {
        "binlog-oldest-index": 1,
        "binlog-current-index": 1,
        "binlog-records-migrated": 0,
        "binlog-records-written": 0,
        "binlog-max-size": 4096,
    }
    check(engine, wal)


def test_records_are_buffered_and_flushed_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, wal = open_log(tmp_path, file_size=1 << 20)
    c = engine.connect()
    writes: list[int] = []
    real = os.pwrite

    def pwrite(fd: int, data: bytes, at: int) -> int:
        writes.append(len(data))
        return real(fd, data, at)

    monkeypatch.setattr(os, "pwrite", pwrite)
    for i in range(50):
        engine.put(c, 0, 0, 60, b"job %d" % i)
    assert wal.has_buffered and writes == []
    wal.flush()
    assert writes == [sum(fmt.job_record_size(b"default", b"job %d" % i) for i in range(50))]
    assert engine.binlog_stats["binlog-records-written"] == 50
    assert not wal.has_buffered
    check(engine, wal)


def test_fsync_only_when_asked_and_only_when_something_was_written(tmp_path: Path) -> None:
    syncs: list[int] = []
    engine, wal = open_log(tmp_path, syncs=syncs)
    syncs.clear()
    wal.sync()
    assert syncs == []
    engine.put(engine.connect(), 0, 0, 60, b"x")
    wal.flush()
    assert syncs == []
    wal.sync()
    assert syncs == [wal.cur.fd]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("given", "made"), [(0, 4096), (10, 4096), (4096, 4096), (5000, 8192), (8193, 12288)]
)
def test_file_size_is_rounded_up_to_4096_but_reported_as_given(
    tmp_path: Path, given: int, made: int
) -> None:
    """As beanstalkd: ``-s 5000`` makes 8192-byte files and binlog-max-size shows 5000."""
    engine, wal = open_log(tmp_path, file_size=given)
    assert wal.file_size == made
    assert engine.binlog_stats["binlog-max-size"] == given
    assert wal.cur is not None and os.path.getsize(wal.cur.path) == made


def test_rotation_and_gc(tmp_path: Path) -> None:
    engine, wal = open_log(tmp_path, file_size=4096)
    c = engine.connect()
    ids = [engine.put(c, 0, 0, 60, b"x" * 200) for _ in range(60)]
    wal.sync()
    check(engine, wal)
    assert wal.current_index > 3
    oldest = engine.binlog_stats["binlog-oldest-index"]
    for job_id in ids[:30]:
        assert engine.delete(c, job_id)
    wal.sync()
    check(engine, wal)
    assert engine.binlog_stats["binlog-oldest-index"] > oldest
    for job_id in ids[30:]:
        engine.delete(c, job_id)
    wal.sync()
    check(engine, wal)
    assert wal.files[0].index >= wal.current_index - 1


def test_gc_waits_for_the_sync(tmp_path: Path) -> None:
    engine, wal = open_log(tmp_path, file_size=4096)
    c = engine.connect()
    ids = [engine.put(c, 0, 0, 60, b"x" * 300) for _ in range(30)]
    wal.sync()
    before = len(wal.files)
    for job_id in ids:
        engine.delete(c, job_id)
    wal.flush()  # written, not synced: the old files must stay
    assert len(wal.files) == before
    wal.sync()
    assert len(wal.files) < before
    check(engine, wal)


def test_big_job_gets_a_file_of_its_own(tmp_path: Path) -> None:
    engine, wal = open_log(tmp_path, file_size=4096)
    c = engine.connect()
    big = os.urandom(20000)
    job_id = engine.put(c, 0, 0, 60, big)
    wal.sync()
    check(engine, wal)
    assert max(f.size for f in wal.files) >= 20000
    engine.delete(c, job_id)
    wal.sync()
    check(engine, wal)


def test_close_cuts_the_current_file_and_drops_spares(tmp_path: Path) -> None:
    engine, wal = open_log(tmp_path, file_size=4096)
    c = engine.connect()
    for _ in range(100):  # 100 owed deletes: spare files are made ahead
        engine.put(c, 0, 0, 60, b"")
    wal.sync()
    assert len(wal.files) > wal._cur_i + 1
    cur = wal.cur
    assert cur is not None
    wal.close()
    indexes = sorted(int(p.name.split(".")[1]) for p in tmp_path.glob("beanrouter-binlog.*"))
    assert indexes[-1] == cur.index
    assert os.path.getsize(cur.path) == cur.used


# -- disk full --------------------------------------------------------------------------------


def test_disk_full_refuses_puts_keeps_deletes_working(tmp_path: Path) -> None:
    disk = DiskFull()
    engine, wal = open_log(tmp_path, file_size=4096, allocate=disk)
    c = engine.connect()
    ids = []
    disk.full = True

    def fill() -> None:
        for _ in range(1000):
            ids.append(engine.put(c, 0, 0, 60, b"x" * 100))
            check(engine, wal)

    with pytest.raises(OutOfSpace):
        fill()
    assert 10 < len(ids) < 1000  # the current file filled up
    refused = engine.next_id - 1
    assert engine.peek(refused) is None  # the id is used up, nothing else happened
    with pytest.raises(OutOfSpace):
        engine.put(c, 0, 0, 60, b"x" * 100)  # the same put again: still no room
    check(engine, wal)
    # every job can still be deleted: its delete's room was reserved at put
    for job_id in ids:
        assert engine.delete(c, job_id)
        check(engine, wal)
    wal.sync()
    check(engine, wal)
    disk.full = False
    assert engine.put(c, 0, 0, 60, b"again") == refused + 2
    wal.sync()
    check(engine, wal)


def test_disk_full_state_changes(tmp_path: Path) -> None:
    disk = DiskFull()
    engine, wal = open_log(tmp_path, file_size=4096, allocate=disk)
    c = engine.connect()
    a = engine.put(c, 0, 0, 60, b"a")
    b = engine.put(c, 0, 100, 60, b"b")
    assert engine.reserve(c, 0) is engine.peek(a)
    disk.full = True
    while True:  # fill the room left with puts
        try:
            engine.put(c, 5, 0, 60, b"x" * 50)
        except OutOfSpace:
            break
    # use up what room is left for updates; the refused one changes nothing
    job = engine.peek(a)
    assert job is not None
    for _ in range(1000):
        pri = job.pri
        try:
            engine.bury(c, a, pri + 1)
        except OutOfSpace:
            assert job.state == RESERVED and job.reserver is c and job.pri == pri
            break
        assert job.state == BURIED
        try:
            engine.kick_job(c, a)
        except OutOfSpace:
            assert job.state == BURIED
            assert engine.delete(c, a)  # deletes still work
            break
        assert engine.reserve_job(c, a) is job
    else:
        raise AssertionError("the room never ran out")
    with pytest.raises(OutOfSpace):
        engine.kick_job(c, b)
    assert engine.peek(b).state == DELAYED  # type: ignore[union-attr]
    engine.use(c, "default")
    assert engine.kick(c, 10) == 0  # the delayed job cannot be logged as kicked
    if job.state == RESERVED:
        with pytest.raises(OutOfSpace):
            engine.release(c, a, 3, 10)
        assert job.state == RESERVED
        assert engine.release(c, a, 3, 0)  # not logged: always fine
    check(engine, wal)
    for j in engine.jobs():
        assert engine.delete(c, j.id)
    wal.sync()
    check(engine, wal)


# -- compaction -------------------------------------------------------------------------------


def test_compaction_moves_pinned_jobs_and_bounds_the_files(tmp_path: Path) -> None:
    engine, wal = open_log(tmp_path, file_size=8192)
    c = engine.connect()
    pinned = []
    biggest = 0
    for i in range(3000):
        job_id = engine.put(c, 0, 0, 60, b"p" * 100)
        if i % 150 == 0:
            pinned.append(job_id)  # a long-lived job in every few files
        else:
            assert engine.delete(c, job_id)
        wal.compact(wal.batch_records)
        wal.sync()
        biggest = max(biggest, files_size(tmp_path))
        if i % 97 == 0:
            check(engine, wal)
    check(engine, wal)
    assert engine.binlog_stats["binlog-records-migrated"] > 0
    # about three files' worth, however long the run: not 3000 jobs' worth (~600 KB)
    assert biggest <= 4 * 8192, biggest
    assert {j.id for j in engine.jobs()} == set(pinned)


def test_no_compaction_while_the_live_jobs_fill_the_files(tmp_path: Path) -> None:
    engine, wal = open_log(tmp_path, file_size=4096)
    c = engine.connect()
    for _ in range(200):
        engine.put(c, 0, 0, 60, b"q" * 100)
        wal.compact(wal.batch_records)
        wal.sync()
    check(engine, wal)
    assert engine.binlog_stats["binlog-records-migrated"] == 0


@pytest.mark.parametrize("state", [READY, BURIED, DELAYED, RESERVED])
def test_a_migrated_job_keeps_its_state(tmp_path: Path, state: int) -> None:
    engine, wal = open_log(tmp_path, file_size=4096)
    c: Conn = engine.connect()
    job_id = engine.put(c, 9, 100 if state == DELAYED else 0, 60, b"keep me")
    if state in (BURIED, RESERVED):
        engine.reserve(c, 0)
    if state == BURIED:
        engine.bury(c, job_id, 4)
    for _ in range(300):  # churn: the job's file becomes the oldest and gets compacted
        engine.delete(c, engine.put(c, 0, 0, 60, b"z" * 100))
        wal.compact(wal.batch_records)
        wal.sync()
    check(engine, wal)
    job = engine.peek(job_id)
    assert job is not None and job.file > 1 and job.state == state
    engine2, _ = open_log_again(tmp_path, wal)
    again = engine2.peek(job_id)
    assert again is not None and again.body == b"keep me"
    assert again.state == (READY if state == RESERVED else state)
    assert again.pri == (4 if state == BURIED else 9)


def open_log_again(directory: Path, old: Wal) -> tuple[Engine, Wal]:
    """Simulate kill -9: drop ``old`` without closing it (buffers were flushed), reopen."""
    for f in old.files:
        if f.fd >= 0:
            os.close(f.fd)
            f.fd = -1
    return open_log(directory, file_size=old.max_size)
