"""Crash tests: real server processes killed with SIGKILL at random moments, then restarted.

Every cycle: restart on the same directory; check that every acknowledged job is there with its
body and that no deleted job came back (the ready count must match exactly); delete about half
of the jobs; then pipeline puts as fast as the server takes them while a timer kills the server
with SIGKILL at a random moment. A put whose ``INSERTED`` was read is acknowledged; a put that
was sent but not answered may or may not have been logged: if its job is there after the
restart (its id is known: ids are consecutive on one connection), its body must be right.
A life killed before its first reply may have started its ids after a gap: ids a killed life took
but never logged are not reused (a file header made in that life keeps the next id), so the puts
of such a life are looked for in a window as wide as the ids that may have been skipped.

Small files (``-s 65536``) make the server rotate, compact and delete files all the time, so the
kills land in those paths too. Bounded: about 12 s for the 20 cycles of ``-f 0`` on a 2-core
machine.
"""

from __future__ import annotations

import random
import re
import threading
from pathlib import Path

import pytest

from .client import Client, Closed, ServerProcess, put

pytestmark = pytest.mark.crash

INSERTED = re.compile(rb"INSERTED (\d+)")
WINDOW = 500  # puts in flight
BATCH = 50  # puts per write


class Ledger:
    """What the client knows: acknowledged jobs, and the tail of unanswered puts."""

    def __init__(self) -> None:
        self.jobs: dict[int, bytes] = {}
        self.unanswered: list[bytes] = []  # bodies of puts sent after the last acknowledged one
        self.last_id = 0
        self.skipped = 0  # ids after last_id that killed lives may have taken and not logged
        self.acked = 0
        self.lost = 0

    def verify(self, c: Client) -> None:
        # Puts that were in flight at the kill: logged or not, but never garbled, and in order
        # (put k of the life has id start + k, start somewhere in the first ``skipped + 1``).
        unanswered = self.unanswered
        first = self.last_id + 1
        window = range(first, first + len(unanswered) + self.skipped)
        c.send(b"".join(b"peek %d\r\n" % i for i in window))
        index = {body: k for k, body in enumerate(unanswered)}
        starts = set()
        last_k = -1
        for job_id in window:
            line, got = c.reply()
            if not line.startswith(b"FOUND"):
                assert line == b"NOT_FOUND", line
                continue
            assert got is not None and got in index, (job_id, got[:40] if got else got)
            k = index[got]
            starts.add(job_id - k)
            self.jobs[job_id] = got
            self.last_id = job_id
            last_k = k
        assert len(starts) <= 1, (sorted(starts), first)
        # Those ids are taken now: a next life whose puts all go unanswered (killed before its
        # first reply, as on a busy machine) must be looked for after them.
        if starts:
            self.skipped = len(unanswered) - 1 - last_k
        else:
            self.skipped += len(unanswered)
        self.unanswered = []
        ids = list(self.jobs)
        c.send(b"".join(b"peek %d\r\n" % i for i in ids))
        for job_id in ids:
            line, found = c.reply()
            if not line.startswith(b"FOUND"):
                self.lost += 1
                continue
            assert line == b"FOUND %d %d" % (job_id, len(self.jobs[job_id])), line
            assert found == self.jobs[job_id], job_id
        assert self.lost == 0, f"{self.lost} acknowledged jobs lost"
        assert c.stat("current-jobs-ready") == len(self.jobs)  # no deleted job came back

    def delete_some(self, c: Client, rng: random.Random) -> None:
        doomed = [i for i in self.jobs if rng.random() < 0.5]
        c.send(b"".join(b"delete %d\r\n" % i for i in doomed))
        for job_id in doomed:
            line, _ = c.reply()
            assert line == b"DELETED", (job_id, line)
            del self.jobs[job_id]

    def produce(self, c: Client, rng: random.Random, cycle: int, srv: ServerProcess) -> None:
        """Pipeline puts until the server dies (a timer kills it at a random moment)."""
        kill_after = rng.uniform(0.02, 0.25)
        threading.Timer(kill_after, srv.kill).start()
        sent: list[bytes] = []
        answered = 0
        first = True
        try:
            while True:
                if len(sent) - answered < WINDOW:
                    bodies = [
                        b"c%d-%d-%s" % (cycle, len(sent) + k, rng.randbytes(rng.randrange(80)))
                        for k in range(BATCH)
                    ]
                    sent += bodies
                    c.send(b"".join(put(b) for b in bodies))
                while answered < len(sent) and (len(sent) - answered >= WINDOW or c.buf):
                    line, _ = c.reply()
                    m = INSERTED.fullmatch(line)
                    assert m is not None, line
                    job_id = int(m.group(1))
                    # ids are consecutive on one connection (the first may skip ids that
                    # unanswered puts took before the last crash)
                    assert job_id == self.last_id + 1 or (
                        first and self.last_id < job_id <= self.last_id + 1 + self.skipped
                    ), (
                        job_id,
                        self.last_id,
                    )
                    first = False
                    self.jobs[job_id] = sent[answered]
                    self.last_id = job_id
                    self.skipped = 0
                    self.acked += 1
                    answered += 1
        except Closed:
            pass
        self.unanswered = sent[answered:]


def run_cycles(tmp_path: Path, cycles: int, flags: tuple[str, ...], seed: int) -> Ledger:
    rng = random.Random(seed)
    directory = tmp_path / "binlog"
    directory.mkdir()
    ledger = Ledger()
    for cycle in range(cycles):
        srv = ServerProcess(directory, *flags)
        try:
            c = srv.client()
            try:
                ledger.verify(c)
                ledger.delete_some(c, rng)
                ledger.produce(c, rng, cycle, srv)
            finally:
                c.close()
        finally:
            srv.kill()
        assert ledger.unanswered or ledger.acked, srv.output()
    srv = ServerProcess(directory, *flags)
    try:
        c = srv.client()
        ledger.verify(c)
        c.close()
        assert srv.stop() == 0
    finally:
        srv.kill()
    return ledger


def test_kill9_with_f0_loses_no_acknowledged_job(tmp_path: Path) -> None:
    ledger = run_cycles(tmp_path, 20, ("-f", "0", "-s", "65536"), seed=1)
    assert ledger.lost == 0 and ledger.acked > 1000


def test_kill9_with_default_f50_loses_no_acknowledged_job(tmp_path: Path) -> None:
    # A process crash loses nothing even without fsync: every record is written to the kernel
    # before its reply. What -f 50 risks is a machine crash (see the benchmark's loss window).
    ledger = run_cycles(tmp_path, 6, (), seed=2)
    assert ledger.lost == 0 and ledger.acked > 1000
