"""Recovery: what comes back after a crash, and how damage is judged (torn tail vs. not).

The model test runs random commands against an engine whose journal is the Wal, with tiny files
so rotation, compaction and gc happen all the time, "crashes" at random batch ends (the Wal is
dropped without closing, as kill -9 would), reopens the directory in a fresh engine and compares
every job with a shadow copy of what was logged up to the last flush.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from beanrouter.server.binlog import format as fmt
from beanrouter.server.binlog.recover import RecoveryError, load, read_binlog
from beanrouter.server.binlog.wal import Wal
from beanrouter.server.engine import NS, Conn, Engine, Job, OutOfSpace
from beanrouter.server.job import BURIED, BURY_ONE, DELAYED, READY, RESERVED
from beanrouter.server.procinfo import ProcInfo
from tests.binlog.client import to_format_1

T0 = 1_700_000_000 * NS


class FakeClock:
    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


Snapshot = tuple[Any, ...]


def snapshot(engine: Engine, j: Job) -> Snapshot:
    """What a record of ``j`` says, as recovery should restore it."""
    return (
        j.tube.name,
        j.pri,
        j.delay,
        j.ttr,
        READY if j.state == RESERVED else j.state,
        j.body,
        engine.created_at(j),
        j.deadline_at if j.state == DELAYED else 0,
        j.counts,
        j.bury_seq if j.state == BURIED else 0,
    )


class ShadowWal(Wal):
    """A Wal that also keeps, independently, what each flushed record says."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.engine: Engine | None = None
        self.logged: dict[int, Snapshot] = {}
        self._pending: list[tuple[int, Snapshot | None]] = []

    def _note(self, job: Job, gone: bool = False) -> None:
        assert self.engine is not None
        self._pending.append((job.id, None if gone else snapshot(self.engine, job)))

    def put(self, job: Job) -> bool:
        ok = super().put(job)
        if ok:
            self._note(job)
        return ok

    def update(self, job: Job) -> None:
        super().update(job)
        self._note(job)

    def delete(self, job: Job) -> None:
        super().delete(job)
        self._note(job, gone=True)

    def rewrite(self, job: Job) -> int:
        size = super().rewrite(job)
        if size:
            self._note(job)
        return size

    def flush(self) -> None:
        super().flush()
        for job_id, snap in self._pending:
            if snap is None:
                del self.logged[job_id]
            else:
                self.logged[job_id] = snap
        self._pending.clear()


def reopen(directory: Path, clock: FakeClock, file_size: int, old: Wal | None) -> ShadowWal:
    if old is not None:  # kill -9: open descriptors just vanish, buffers are lost
        for f in old.files:
            if f.fd >= 0:
                os.close(f.fd)
                f.fd = -1
    engine = Engine(clock=clock, procinfo=ProcInfo.fixed())
    wal = ShadowWal(str(directory), file_size=file_size, fsync=False, log=lambda m: None)
    wal.engine = engine
    load(engine, wal)
    for j in engine.jobs():  # what the files say (the replay's extra bury is not logged)
        snap = snapshot(engine, j)
        if j.state == BURIED:
            snap = (*snap[:8], snap[8] - BURY_ONE, snap[9])
        wal.logged[j.id] = snap
    return wal


def expected_after_restart(logged: dict[int, Snapshot], now: int) -> dict[int, Snapshot]:
    out = {}
    for job_id, s in logged.items():
        tube, pri, delay, ttr, state, body, created, deadline, counts, _ = s
        if state == DELAYED and deadline <= now:
            state, deadline = READY, 0
        if state == BURIED:
            counts += BURY_ONE  # beanstalkd's replay buries again
        out[job_id] = (tube, pri, delay, ttr, state, body, created, deadline, counts, 0)
    return out


def actual(engine: Engine) -> dict[int, Snapshot]:
    return {j.id: (*snapshot(engine, j)[:9], 0) for j in engine.jobs()}


def buried_order(engine: Engine) -> dict[str, list[int]]:
    out = {}
    for t in engine.tubes():
        live = [j.id for seq, j in t.buried if j.state == BURIED and j.bury_seq == seq]
        if live:
            out[t.name] = live
    return out


def logged_buried_order(logged: dict[int, Snapshot]) -> dict[str, list[int]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for job_id, s in logged.items():
        if s[4] == BURIED:
            out.setdefault(s[0], []).append((s[9], job_id))
    return {tube: [i for _, i in sorted(v)] for tube, v in out.items()}


@pytest.mark.parametrize("seed", range(12))
def test_random_workload_with_crashes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    file_size = rng.choice([4096, 16384, 65536])
    clock = FakeClock()
    wal = reopen(tmp_path, clock, file_size, None)
    max_id = 0
    for _life in range(6):
        engine = wal.engine
        assert engine is not None
        conns: list[Conn] = [engine.connect() for _ in range(3)]
        for _batch in range(rng.randrange(5, 25)):
            for _ in range(rng.randrange(1, 20)):
                c = rng.choice(conns)
                jobs = engine.jobs()
                op = rng.random()
                try:
                    if op < 0.3 or not jobs:
                        engine.use(c, rng.choice(["default", "a", "b"]))
                        body = os.urandom(rng.choice([0, 1, 10, 300, 3000]))
                        delay = rng.choice([0, 0, 0, 5, 1000])
                        max_id = max(max_id, engine.put(c, rng.randrange(2000), delay, 60, body))
                    elif op < 0.45:
                        engine.watch(c, rng.choice(["default", "a", "b"]))
                        engine.reserve(c, 0)
                    elif op < 0.65:
                        j = rng.choice(jobs)
                        engine.delete(j.reserver or c, j.id)
                    elif op < 0.75 and c.reserved:
                        jid = rng.choice(list(c.reserved))
                        engine.release(c, jid, rng.randrange(100), rng.choice([0, 0, 30]))
                    elif op < 0.83 and c.reserved:
                        engine.bury(c, rng.choice(list(c.reserved)), rng.randrange(100))
                    elif op < 0.92:
                        engine.kick_job(c, rng.choice(jobs).id)
                    else:
                        engine.kick(c, rng.randrange(1, 4))
                except OutOfSpace:  # pragma: no cover - the disk is not full here
                    raise
            wal.compact(wal.batch_records)
            wal.flush()
            if rng.random() < 0.5:
                wal.sync()
            clock.t += rng.randrange(0, 3 * NS)
        logged = dict(wal.logged)
        # the crash: a few more commands whose records never reach the disk
        for _ in range(rng.randrange(3)):
            engine.put(conns[0], 1, 0, 60, b"lost")
        clock.t += rng.randrange(0, 20 * NS)
        wal = reopen(tmp_path, clock, file_size, wal)
        engine = wal.engine
        assert engine is not None
        assert actual(engine) == expected_after_restart(logged, clock.t)
        assert buried_order(engine) == logged_buried_order(logged)
        assert engine.next_id > max_id  # ids are never reused
        max_id = engine.next_id - 1


def test_restore_state_and_stats(tmp_path: Path) -> None:
    clock = FakeClock()
    wal = reopen(tmp_path, clock, 1 << 20, None)
    engine = wal.engine
    assert engine is not None
    c = engine.connect()
    engine.use(c, "t")
    a = engine.put(c, 3, 0, 60, b"a")
    b = engine.put(c, 4, 30, 60, b"b")
    engine.watch(c, "t")
    assert engine.reserve(c, 0) is engine.peek(a)
    engine.bury(c, a, 7)
    wal.sync()
    clock.t += 10 * NS
    wal = reopen(tmp_path, clock, 1 << 20, wal)
    engine = wal.engine
    assert engine is not None
    st = engine.stats_job(a)
    assert st is not None and (st["state"], st["pri"], st["buries"], st["file"]) == (
        "buried",
        7,
        2,
        1,
    )
    st = engine.stats_job(b)
    assert st is not None and (st["state"], st["time-left"], st["age"]) == ("delayed", 20, 10)
    assert engine.list_tubes() == ["default", "t"]
    assert engine.binlog_stats["binlog-oldest-index"] == 1
    assert engine.binlog_stats["binlog-current-index"] == 2


# -- damage ----------------------------------------------------------------------------------


def make_log(directory: Path, jobs: int = 10, file_size: int = 1 << 20) -> list[int]:
    clock = FakeClock()
    wal = reopen(directory, clock, file_size, None)
    engine = wal.engine
    assert engine is not None
    c = engine.connect()
    ids = [engine.put(c, 0, 0, 60, b"body %d" % i) for i in range(jobs)]
    wal.sync()
    for f in wal.files:
        if f.fd >= 0:
            os.close(f.fd)
    return ids


def data_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("beanrouter-binlog.*[0-9]"), key=lambda p: int(p.suffix[1:]))


def record_offsets(path: Path) -> list[int]:
    return [r[0] for r in fmt.RecordReader(path.read_bytes())]


@pytest.mark.parametrize("keep", [1, 13, 40, 79, 90])
def test_torn_tail_is_cut_and_reported(tmp_path: Path, keep: int) -> None:
    make_log(tmp_path)
    path = data_files(tmp_path)[0]
    last = record_offsets(path)[-1]
    data = path.read_bytes()
    path.write_bytes(data[: last + keep] + bytes(5000))  # a torn write, then preallocated zeros
    messages: list[str] = []
    found = read_binlog(str(tmp_path), log=messages.append)
    assert [j[0] for j in found.jobs] == list(range(1, 10))
    assert len(messages) == 1
    assert f"{path}: offset {last}:" in messages[0] and "torn write" in messages[0]
    assert path.stat().st_size == last  # cut there, so the next start is clean
    again: list[str] = []
    assert len(read_binlog(str(tmp_path), log=again.append).jobs) == 9
    assert again == []


def test_garbage_tail_is_a_torn_write(tmp_path: Path) -> None:
    make_log(tmp_path)
    path = data_files(tmp_path)[0]
    with path.open("ab") as f:
        f.write(os.urandom(300))
    messages: list[str] = []
    found = read_binlog(str(tmp_path), log=messages.append)
    assert len(found.jobs) == 10 and "torn write" in messages[0]


def test_damage_in_the_middle_stops_start_up(tmp_path: Path) -> None:
    make_log(tmp_path)
    path = data_files(tmp_path)[0]
    third = record_offsets(path)[2]
    data = bytearray(path.read_bytes())
    data[third + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RecoveryError) as info:
        read_binlog(str(tmp_path))
    message = str(info.value)
    assert f"{path}: offset {third}: record checksum mismatch" in message
    assert "valid records follow" in message and "--salvage" in message
    assert path.read_bytes() == bytes(data)  # nothing was changed


def test_salvage_skips_the_damage_and_rewrites_the_log(tmp_path: Path) -> None:
    make_log(tmp_path)
    path = data_files(tmp_path)[0]
    third = record_offsets(path)[2]
    data = bytearray(path.read_bytes())
    data[third + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    messages: list[str] = []
    engine = Engine(clock=FakeClock(), procinfo=ProcInfo.fixed())
    wal = Wal(str(tmp_path), file_size=1 << 20, fsync=False, log=lambda m: None)
    found = load(engine, wal, salvage=True, log=messages.append)
    assert sorted(j.id for j in engine.jobs()) == [1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert any(f"offset {third}" in m and "skipping" in m for m in messages)
    assert found.salvaged and found.damaged == [str(path)]
    assert (tmp_path / (path.name + ".damaged")).read_bytes() == bytes(data)
    assert not path.exists()  # every job was rewritten; the damaged file left the log
    for f in wal.files:
        if f.fd >= 0:
            os.close(f.fd)
    # the next start is clean, without --salvage
    again = read_binlog(str(tmp_path))
    assert sorted(j[0] for j in again.jobs) == [1, 2, 4, 5, 6, 7, 8, 9, 10]


def test_torn_tail_in_an_older_file_is_damage(tmp_path: Path) -> None:
    make_log(tmp_path, jobs=60, file_size=2048)
    files = data_files(tmp_path)
    assert len(files) > 2
    older = files[0]
    data = older.read_bytes()
    older.write_bytes(data[:-10])
    with pytest.raises(RecoveryError, match=f"{older}: offset .*newer files hold records"):
        read_binlog(str(tmp_path))
    found = read_binlog(str(tmp_path), salvage=True)
    assert len(found.jobs) == 59 and found.salvaged


def test_files_without_records_are_dropped(tmp_path: Path) -> None:
    make_log(tmp_path, jobs=2)
    (tmp_path / "beanrouter-binlog.7").write_bytes(fmt.encode_header(7, 3, 0) + bytes(100))
    (tmp_path / "beanrouter-binlog.8").write_bytes(b"")  # made, header never written
    (tmp_path / "binlog.9").write_bytes(bytes(4096))  # a format-1 spare
    found = read_binlog(str(tmp_path))
    assert len(found.jobs) == 2 and found.next_index == 10 and found.legacy == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beanrouter-binlog.1"]


def test_foreign_files_and_bad_headers(tmp_path: Path) -> None:
    make_log(tmp_path, jobs=2)
    bsd = tmp_path / "binlog.5"
    bsd.write_bytes((7).to_bytes(4, "little") + bytes(100))
    with pytest.raises(RecoveryError, match=r"binlog\.5: a beanstalkd binlog") as info:
        read_binlog(str(tmp_path))
    # beanstalkd was run on our directory: its files are next to ours, which it left alone
    assert "next to beanrouter's own files (beanrouter-binlog.1)" in str(info.value)
    assert "move beanstalkd's binlog.N files elsewhere" in str(info.value)
    assert bsd.exists()
    bsd.unlink()
    first = data_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[90] ^= 1  # header checksum (in the next id)
    first.write_bytes(bytes(data))
    with pytest.raises(RecoveryError, match="offset 0: file header checksum mismatch"):
        read_binlog(str(tmp_path))
    assert len(read_binlog(str(tmp_path), salvage=True).jobs) == 2


def test_ids_are_never_reused_even_when_every_file_is_gone(tmp_path: Path) -> None:
    clock = FakeClock()
    wal = reopen(tmp_path, clock, 4096, None)
    engine = wal.engine
    assert engine is not None
    c = engine.connect()
    for _ in range(5):
        engine.delete(c, engine.put(c, 0, 0, 60, b"x"))
    wal.sync()
    for _ in range(3):  # restarts without any command: only empty files are left
        wal = reopen(tmp_path, clock, 4096, wal)
    engine = wal.engine
    assert engine is not None
    assert engine.put(engine.connect(), 0, 0, 60, b"y") == 6


def test_list_tubes_follow_beanstalkds_replay_order(tmp_path: Path) -> None:
    clock = FakeClock()
    wal = reopen(tmp_path, clock, 1 << 20, None)
    engine = wal.engine
    assert engine is not None
    c = engine.connect()
    ids = {}
    for name in ["t1", "t2", "t3", "t4"]:
        engine.use(c, name)
        ids[name] = engine.put(c, 0, 0, 60, name.encode())
    engine.delete(c, ids["t1"])
    engine.delete(c, ids["t4"])
    wal.sync()
    wal = reopen(tmp_path, clock, 1 << 20, wal)
    assert wal.engine is not None
    # replay: default t1 t2 t3 t4; t1 goes (t4 fills its slot), then t4 goes
    assert wal.engine.list_tubes() == ["default", "t3", "t2"]


# -- format 1 (files named binlog.N) ----------------------------------------------------------


def mixed_log(directory: Path) -> None:
    """A log over several small files: ready, delayed, buried and deleted jobs in two tubes."""
    clock = FakeClock()
    wal = reopen(directory, clock, 4096, None)
    engine = wal.engine
    assert engine is not None
    c = engine.connect()
    for i in range(40):
        engine.use(c, "t" if i % 3 else "default")
        engine.put(c, i, 1000 if i % 7 == 0 else 0, 60, b"job %d " % i + bytes(i * 5))
    for job_id in range(2, 40, 4):
        engine.delete(c, job_id)
    engine.watch(c, "t")
    for _ in range(3):
        job = engine.reserve(c, 0)
        assert isinstance(job, Job)
        engine.bury(c, job.id, 9)
    wal.sync()
    reopen(directory, clock, 4096, wal)  # closes the descriptors, as a kill would


class Recording:
    """``sync_file`` for a Wal: records the descriptors it is asked to fsync."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def __call__(self, fd: int) -> None:
        self.fds.append(fd)


def start(directory: Path, messages: list[str], sync: Recording | None = None) -> Engine:
    """One start of a server with ``-F`` (no fsync) on ``directory``."""
    engine = Engine(clock=FakeClock(), procinfo=ProcInfo.fixed())
    wal = Wal(
        str(directory),
        file_size=4096,
        fsync=False,
        sync_file=sync or Recording(),
        log=messages.append,
    )
    load(engine, wal, log=messages.append)
    for f in wal.files:
        if f.fd >= 0:
            os.close(f.fd)
    return engine


def test_format_1_files_are_read_and_converted_to_format_2(tmp_path: Path) -> None:
    ours, old = tmp_path / "ours", tmp_path / "old"
    ours.mkdir()
    mixed_log(ours)
    old.mkdir()
    for path in ours.iterdir():
        (old / path.name).write_bytes(path.read_bytes())
    names = to_format_1(old)
    assert len(names) > 2
    found = read_binlog(str(old))
    assert len(found.legacy) >= 2  # the files that hold records (the newest is empty)
    assert set(found.legacy) <= {str(old / name) for name in names}
    expected = actual(start(ours, []))  # the same log, read from format-2 files
    messages: list[str] = []
    sync = Recording()
    assert actual(start(old, messages, sync)) == expected
    assert sync.fds  # fsynced before the old files went, although this is -F
    left = list(old.iterdir())
    assert left and all(p.name.startswith("beanrouter-binlog.") for p in left)  # binlog.N gone
    assert all(p.read_bytes().startswith(fmt.MAGIC) for p in left)
    assert any(
        "format-1 binlog files (binlog.1," in m and "the old files are gone" in m for m in messages
    )
    # the next start reads format 2 only, and converts nothing
    assert read_binlog(str(old)).legacy == []
    again: list[str] = []
    engine = start(old, again)
    assert {i: s[:8] for i, s in actual(engine).items()} == {i: s[:8] for i, s in expected.items()}
    assert not again


def test_a_crash_in_the_middle_of_the_conversion_converts_again(tmp_path: Path) -> None:
    """The old files are deleted after the new one is synced; if the deletions do not survive a
    crash, both are there at the next start: the newer copies win and the conversion runs again."""
    mixed_log(tmp_path)
    to_format_1(tmp_path)
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    first = actual(start(tmp_path, []))
    for name, data in saved.items():  # the unlinks did not reach the disk
        (tmp_path / name).write_bytes(data)
    found = read_binlog(str(tmp_path))
    assert found.legacy and len(found.files) == len(saved) + 1
    messages: list[str] = []
    engine = start(tmp_path, messages)
    assert {i: s[:8] for i, s in actual(engine).items()} == {i: s[:8] for i, s in first.items()}
    assert all(p.name.startswith("beanrouter-binlog.") for p in tmp_path.iterdir())
    assert any("the old files are gone" in m for m in messages)


def test_one_number_under_both_names_is_refused(tmp_path: Path) -> None:
    make_log(tmp_path, jobs=2)
    (tmp_path / "binlog.1").write_bytes(fmt.encode_header(1, 1, 0, version=1))
    with pytest.raises(
        RecoveryError,
        match=r"both (beanrouter-)?binlog\.1 and (beanrouter-)?binlog\.1: two files with one",
    ):
        read_binlog(str(tmp_path))
