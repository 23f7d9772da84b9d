"""Each way a killed ``beanrouter rebalance`` can leave a move, written into the journal by hand
against real shards, and what the next run does about it (docs/rebalance.md, *Crash safety*)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from beanrouter.core.rebalance import BURIED_HOLD, JournalEntry

from .conftest import Env


def top_id(cluster: Env, shard: str) -> int:
    with cluster.client(shard, "probe-top") as c:
        job_id = c.put(b"")
        c.delete(job_id)
    return job_id


def write_journal(path: Path, entry: JournalEntry) -> None:
    text = entry.begin_line() + (entry.put_line() if entry.new is not None else "")
    path.write_text(text)


def entry_for(
    cluster: Env, tube: str, job_id: int, body: bytes, state: str, pri: int
) -> JournalEntry:
    return JournalEntry(
        "s1", job_id, tube, "s0", state, pri, hashlib.sha256(body).hexdigest(),
        floor=top_id(cluster, "s0"),
    )  # fmt: skip


def bodies(cluster: Env, shard: str, tube: str) -> list[tuple[bytes, str]]:
    return sorted((j.body, j.state) for j in cluster.jobs(shard, tube))


def test_begun_put_never_sent(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        job_id = c.put(b"one")
    journal = cluster.tmp / "j"
    write_journal(journal, entry_for(cluster, tube, job_id, b"one", "ready", 2**31))
    code, report = cluster.run_json("--config", str(cluster.config()), journal=str(journal))
    assert code == 0, report
    (rec,) = report["recovered"]
    assert rec["action"] == "nothing" and "had not landed" in rec["message"]
    assert bodies(cluster, "s0", tube) == [(b"one", "ready")]
    assert bodies(cluster, "s1", tube) == []


def test_put_landed_answer_lost(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        job_id = c.put(b"two")
    entry = entry_for(cluster, tube, job_id, b"two", "ready", 2**16)  # (greenstalk's default)
    with cluster.client("s0", tube) as c:  # the copy the killed run put, then others' jobs
        c.put(b"two")
        c.put(b"unrelated")
    journal = cluster.tmp / "j"
    write_journal(journal, entry)
    code, report = cluster.run_json("--config", str(cluster.config()), journal=str(journal))
    assert code == 0, report
    assert report["recovered"][0]["action"] == "delete_source"
    assert report["moved_total"] == 0
    assert bodies(cluster, "s0", tube) == [(b"two", "ready"), (b"unrelated", "ready")]
    assert bodies(cluster, "s1", tube) == []


def test_copy_acknowledged_original_not_deleted(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        job_id = c.put(b"three", delay=100)
    entry = entry_for(cluster, tube, job_id, b"three", "delayed", 5)
    with cluster.client("s0", tube) as c:
        entry.new = c.put(b"three", delay=100, priority=5)
    journal = cluster.tmp / "j"
    write_journal(journal, entry)
    code, report = cluster.run_json("--config", str(cluster.config()), journal=str(journal))
    assert code == 0, report
    assert report["recovered"][0]["action"] == "delete_source"
    assert bodies(cluster, "s0", tube) == [(b"three", "delayed")]
    assert bodies(cluster, "s1", tube) == []


def test_buried_copy_not_yet_buried(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        job_id = c.put(b"four", priority=8)
        c.bury(c.reserve_job(job_id), priority=8)
    entry = entry_for(cluster, tube, job_id, b"four", "buried", 8)
    with cluster.client("s0", tube) as c:
        entry.new = c.put(b"four", priority=8, delay=BURIED_HOLD)
    journal = cluster.tmp / "j"
    write_journal(journal, entry)
    code, report = cluster.run_json("--config", str(cluster.config()), journal=str(journal))
    assert code == 0, report
    assert report["recovered"][0]["action"] == "delete_source_bury_copy"
    assert bodies(cluster, "s0", tube) == [(b"four", "buried")]
    assert cluster.jobs("s0", tube)[0].pri == 8
    assert bodies(cluster, "s1", tube) == []


def test_original_held_by_a_consumer(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    holder = cluster.client("s1", tube)
    try:
        job_id = holder.put(b"five")
        entry = entry_for(cluster, tube, job_id, b"five", "ready", 2**31)
        with cluster.client("s0", tube) as c:
            entry.new = c.put(b"five")
        holder.reserve_job(job_id)
        journal = cluster.tmp / "j"
        write_journal(journal, entry)
        code, report = cluster.run_json("--config", str(cluster.config()), journal=str(journal))
        assert code == 1, report
        assert report["recovered"][0]["action"] == "duplicate_held"
        assert report["duplicates"] == 1
        assert "both live" in report["recovered"][0]["message"]
        # the held original is left alone; the copy stands for nothing less than the job
        assert bodies(cluster, "s0", tube) == [(b"five", "ready")]
    finally:
        holder.close()


def test_id_taken_by_another_job_is_not_deleted(cluster: Env) -> None:
    """A shard restarted without binlog gives ids again: the journal's original is recognised by
    its tube and body, never by id alone."""
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        job_id = c.put(b"a different job")
    entry = entry_for(cluster, tube, job_id, b"the journal's job", "ready", 2**31)
    with cluster.client("s0", tube) as c:
        entry.new = c.put(b"the journal's job")
    journal = cluster.tmp / "j"
    write_journal(journal, entry)
    code, report = cluster.run_json("--config", str(cluster.config()), journal=str(journal))
    assert code == 0, report
    assert report["recovered"][0]["action"] == "nothing"
    assert bodies(cluster, "s0", tube) == [
        (b"a different job", "ready"),
        (b"the journal's job", "ready"),
    ]


def test_open_move_kept_while_its_owner_is_unreachable(cluster: Env) -> None:
    from beanrouter.core.rebalance import pending_entries
    from tests.ports import free_port

    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        job_id = c.put(b"six")
    entry = JournalEntry("s1", job_id, tube, "dead", "ready", 1, hashlib.sha256(b"six").hexdigest())
    journal = cluster.tmp / "j"
    write_journal(journal, entry)
    config = str(cluster.config(extra=(f"127.0.0.1:{free_port()} dead id=9",)))
    code, report = cluster.run_json("--config", config, journal=str(journal))
    assert code == 3, report
    assert report["recovered"][0]["action"] == "kept"
    # the original is not moved again while its earlier move is open
    assert bodies(cluster, "s1", tube) == [(b"six", "ready")]
    if report["left"]:
        assert report["left"][0]["reasons"] == {"open-move": 1}
    (kept,) = pending_entries(journal.read_text().splitlines())
    assert (kept.source, kept.job, kept.target) == ("s1", job_id, "dead")
