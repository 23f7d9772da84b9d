"""The binlog through real server processes: damage at start-up, orderly stop, bounded disk."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from beanrouter.server.binlog import format as fmt

from .client import REPO_ROOT, Client, ServerProcess, put


def data_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("beanrouter-binlog.*[0-9]"), key=lambda p: int(p.suffix[1:]))


def live_jobs(c: Client) -> int:
    return sum(c.stat(f"current-jobs-{state}") for state in ("ready", "delayed", "buried"))


def fill(srv: ServerProcess, n: int, body: bytes = b"job") -> Client:
    c = srv.client()
    c.send(b"".join(put(body + b"%d" % i) for i in range(n)))
    for i in range(n):
        assert c.reply() == (b"INSERTED %d" % (i + 1), None)
    return c


def test_torn_tail_is_cut_logged_and_the_server_starts(tmp_path: Path) -> None:
    d = tmp_path / "b"
    d.mkdir()
    srv = ServerProcess(d)
    fill(srv, 20).close()
    srv.kill()
    newest = data_files(d)[-1]
    records = [r[0] for r in fmt.RecordReader(newest.read_bytes())]
    last = records[-1]
    with newest.open("r+b") as f:  # tear the last record: half of it is gone
        f.truncate(last + 30)
    srv = ServerProcess(d)
    try:
        c = srv.client()
        assert c.call(b"peek 19\r\n") == (b"FOUND 19 5", b"job18")
        assert c.call(b"peek 20\r\n") == (b"NOT_FOUND", None)
        assert c.call(put(b"next")) == (b"INSERTED 20", None)  # the torn one was never logged
        c.close()
        out = srv.output()
        assert f"{newest}: offset {last}: record cut short" in out and "torn write" in out
    finally:
        srv.kill()


def test_damage_in_the_middle_refuses_to_start_then_salvage(tmp_path: Path) -> None:
    d = tmp_path / "b"
    d.mkdir()
    srv = ServerProcess(d)
    fill(srv, 20).close()
    srv.kill()
    path = data_files(d)[0]
    fifth = [r[0] for r in fmt.RecordReader(path.read_bytes())][4]
    data = bytearray(path.read_bytes())
    data[fifth + 20] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError) as info:
        ServerProcess(d)
    message = str(info.value)
    assert "server exited 1" in message
    assert f"{path}: offset {fifth}: record checksum mismatch" in message
    assert "--salvage" in message
    srv = ServerProcess(d, "--salvage")
    try:
        c = srv.client()
        assert c.call(b"peek 5\r\n") == (b"NOT_FOUND", None)  # the damaged record's job
        assert c.call(b"peek 6\r\n") == (b"FOUND 6 4", b"job5")
        assert c.stat("current-jobs-ready") == 19
        c.close()
        assert "skipping" in srv.output()
    finally:
        srv.kill()
    assert (d / f"{path.name}.damaged").exists()
    srv = ServerProcess(d)  # clean now, no --salvage needed
    try:
        assert srv.client().stat("current-jobs-ready") == 19
    finally:
        srv.kill()


def test_orderly_stop_cuts_files_and_drops_spares(tmp_path: Path) -> None:
    d = tmp_path / "b"
    d.mkdir()
    srv = ServerProcess(d, "-s", "8192")
    fill(srv, 300).close()  # 300 owed deletes: spare files
    assert srv.stop() == 0
    files = data_files(d)
    reader_ends = []
    for p in files:
        reader = fmt.RecordReader(p.read_bytes())
        list(reader)
        reader_ends.append((reader.end, p.stat().st_size, reader.error))
    assert all(end == size and err is None for end, size, err in reader_ends), reader_ends
    srv = ServerProcess(d, "-s", "8192")
    try:
        assert srv.client().stat("current-jobs-ready") == 300
    finally:
        srv.kill()


def test_verbose_start_reports_the_replay(tmp_path: Path) -> None:
    d = tmp_path / "b"
    d.mkdir()
    srv = ServerProcess(d)
    fill(srv, 3).close()
    srv.kill()
    srv = ServerProcess(d, "-V")
    try:
        srv.client().close()
        assert re.search(r"binlog .*: 3 jobs from 3 records in 1 files", srv.output())
    finally:
        srv.kill()


@pytest.mark.crash
def test_disk_stays_bounded_under_put_delete_release_with_delay(tmp_path: Path) -> None:
    """A long steady workload: O(live jobs) on disk, not O(history)."""
    d = tmp_path / "b"
    d.mkdir()
    file_size = 65536
    rng = random.Random(3)
    srv = ServerProcess(d, "-s", str(file_size), "-f", "0")
    try:
        c = srv.client()
        pinned = 0
        biggest = 0
        peak_live = 0  # sampled with the disk size: how many depends on the machine's speed
        history = 0  # bytes of every record ever logged
        room = fmt.job_record_size(b"default", b"x" * 150) + fmt.STATE_SIZE
        rnd = 0
        # At least 1,500 rounds, and until the history is 15 times the live jobs' room: how
        # many jobs are live (released with a delay of 1 s) grows with the machine's speed.
        while rnd < 1500 or (history < 15 * peak_live * room and rnd < 8000):
            rnd += 1
            n = 40
            body = b"x" * rng.randrange(50, 150)
            c.send(b"".join(put(body, pri=rng.randrange(100)) for _ in range(n)))
            history += n * fmt.job_record_size(b"default", body)
            for _ in range(n):
                assert c.reply()[0].startswith(b"INSERTED")
            c.send(b"reserve-with-timeout 0\r\n" * (n + 20))  # a little faster than puts
            got = [c.reply()[0] for _ in range(n + 20)]
            commands = []
            for line in got:
                if not line.startswith(b"RESERVED"):
                    continue
                job_id = int(line.split()[1])
                r = rng.random()
                if r < 0.002:
                    commands.append(b"bury %d 0\r\n" % job_id)  # long-lived: pins its file
                    pinned += 1
                elif r < 0.25:
                    commands.append(b"release %d 0 1\r\n" % job_id)  # logged, back in 1 s
                else:
                    commands.append(b"delete %d\r\n" % job_id)
            c.send(b"".join(commands))
            history += len(commands) * fmt.STATE_SIZE
            for _ in commands:
                assert c.reply()[0] in (b"BURIED", b"RELEASED", b"DELETED")
            if rnd % 20 == 0:
                size = sum(p.stat().st_size for p in data_files(d))
                biggest = max(biggest, size)
                peak_live = max(peak_live, live_jobs(c))
        written = c.stat("binlog-records-written")
        peak_live = max(peak_live, live_jobs(c))
        migrated = c.stat("binlog-records-migrated")
        c.close()
    finally:
        srv.kill()
    # history: 160k records or more, over 15 MB. On disk: the compaction policy keeps the files
    # within about 3x the live jobs' room (a JOB record and its owed delete) plus the two
    # newest files; one more 1x for its lag (moves are capped per batch, files go oldest
    # first, after an fsync). Live jobs: 2-7 thousand (by the machine's speed), mostly
    # delayed, 1-2 MB on disk.
    assert written > 100_000
    assert biggest <= 6 * file_size + 4 * peak_live * room, (biggest, peak_live, pinned)
    assert biggest * 3 < history, (biggest, history)
    assert migrated > 0  # the buried jobs' files were compacted away


def run_server(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beanrouter", "server", "-l", "127.0.0.1", "-p", "0", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def test_missing_directory_exits_10(tmp_path: Path) -> None:
    done = run_server("-b", str(tmp_path / "nope"))
    assert done.returncode == 10
    assert f"{tmp_path / 'nope'}: not a directory" in done.stderr


def test_a_beanstalkd_binlog_is_refused(tmp_path: Path) -> None:
    (tmp_path / "binlog.1").write_bytes((7).to_bytes(4, "little") + bytes(100))
    done = run_server("-b", str(tmp_path))
    assert done.returncode == 1
    assert "binlog.1: a beanstalkd binlog (its format 7), not a beanrouter one" in done.stderr
