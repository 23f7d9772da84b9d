"""The harness itself: reply framing and normalisation (no beanstalkd server involved)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from .harness import (
    HOST,
    SHARDED_SKIPS,
    Entry,
    IdMap,
    inserted,
    job_reply,
    normalise,
    reserved,
    stats_reply,
)
from .wire import PeerClosed, ReplyTimeout, Session

Serve = Callable[[list[bytes]], int]


@pytest.fixture
def fake_server() -> Iterator[Serve]:
    """Start one-connection servers that send the given chunks, then wait for the client."""
    listeners: list[socket.socket] = []

    def start(chunks: list[bytes]) -> int:
        listener = socket.create_server((HOST, 0))
        listeners.append(listener)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                for chunk in chunks:
                    conn.sendall(chunk)
                    time.sleep(0.02)
                conn.recv(1)  # until the client closes or half-closes

        threading.Thread(target=serve, daemon=True).start()
        port: int = listener.getsockname()[1]
        return port

    yield start
    for listener in listeners:
        listener.close()


def test_reply_framing_across_chunks(fake_server: Serve) -> None:
    port = fake_server(
        [b"INSERTED 1\r\nRESERVED 1 4\r\na\r", b"\nb\r\nOK 3", b"\r\n---\r", b"\nDEL"]
    )
    with Session(HOST, port, timeout=1.0) as s:
        assert s.reply() == b"INSERTED 1\r\n"
        assert s.reply() == b"RESERVED 1 4\r\na\r\nb\r\n"
        assert s.reply() == b"OK 3\r\n---\r\n"
        with pytest.raises(ReplyTimeout) as exc:
            s.reply(timeout=0.3)
        assert exc.value.partial == b"DEL"


def test_reply_peer_closed(fake_server: Serve) -> None:
    port = fake_server([b"FOUND 2 10\r\nshort"])
    with Session(HOST, port, timeout=1.0) as s:
        s.shutdown_write()  # lets the fake server finish and close
        with pytest.raises(PeerClosed) as exc:
            s.reply()
        assert exc.value.partial == b"FOUND 2 10\r\nshort"


def test_normalise_blanks_volatile_stats_and_recounts() -> None:
    raw = stats_reply(cmd_stats=1).replace(b"pid: X\n", b"pid: 12345\n")
    raw = raw.replace(b"uptime: X\n", b"uptime: 7\n").replace(b"version: X\n", b'version: "1.12"\n')
    body = raw.split(b"\r\n", 1)[1][:-2]
    raw = b"OK %d\r\n%s\r\n" % (len(body), body)
    assert raw != stats_reply(cmd_stats=1)
    assert normalise(raw) == stats_reply(cmd_stats=1)


def test_normalise_leaves_other_replies_alone() -> None:
    job = b"OK 22\r\n---\nid: 5\nage: 3\nx: y\n\r\n"
    assert normalise(job) == job
    assert normalise(job, loose_job_times=True) == b"OK 22\r\n---\nid: 5\nage: X\nx: y\n\r\n"
    # a wrong count is left for the comparison to catch
    assert normalise(job.replace(b"22", b"21"), loose_job_times=True) == job.replace(b"22", b"21")
    assert normalise(b"OK 3\r\nabc\r\n") == b"OK 3\r\nabc\r\n"
    assert normalise(b"INSERTED 1\r\n") == b"INSERTED 1\r\n"


def test_id_map_follows_the_reference_in_order_of_first_appearance() -> None:
    g1, g2 = (2 << 48) | 1, 1
    reference = [
        Entry(0, "a", b"", (inserted(1), inserted(2))),
        Entry(1, "a", b"", (job_reply(id=2),)),
    ]
    ids = IdMap(reference)
    assert ids.incoming(inserted(g1)) == inserted(1)
    assert ids.incoming(reserved(g2, b"x")) == reserved(2, b"x")
    assert ids.incoming(job_reply(id=g2)) == job_reply(id=2)  # OK count recomputed
    assert ids.incoming(b"OK 5\r\n---\n\r\n") == b"OK 5\r\n---\n\r\n"
    # commands carry the cluster's ids; put bodies are left alone, even split across sends
    sent = ids.outgoing("a", b"delete 1\r\nput 0 0 1 10\r\ndelete 1\r\n")
    assert sent == b"delete %d\r\nput 0 0 1 10\r\ndelete 1\r\n" % g1
    assert ids.outgoing("a", b"\r\nbury 2 5\r\npeek 3\r\nstats-job 1") == (
        b"\r\nbury %d 5\r\npeek 3\r\nstats-job 1" % g2
    )
    assert ids.outgoing("a", b"\r\n") == b"\r\n"  # a line split across sends: as it came
    # an id beyond the reference's stays as it is
    assert ids.incoming(inserted(7)) == inserted(7)


def test_sharded_skips_name_real_cases() -> None:
    from . import (
        test_jobs,
        test_lines,
        test_put,
        test_reserve,
        test_restart,
        test_stats,
        test_tubes,
    )

    names = {
        c.name
        for module in (test_lines, test_put, test_tubes, test_jobs, test_reserve, test_stats)
        for c in module.CASES
    }
    names |= {f"restart-{name}" for name in test_restart.CASES}
    assert set(SHARDED_SKIPS) <= names
