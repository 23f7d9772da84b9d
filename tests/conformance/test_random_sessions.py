"""Random differential sessions: seeded scripts of many commands on several connections, run on
the real beanstalkd and then replayed on each implementation, reply by reply.

The scripted cases pin down what the spec says; these look for what nobody thought to script:
the interplay of tubes, states, counters and malformed lines over a few hundred steps. A script
is generated from a seed while it runs on beanstalkd (job ids to name come from its replies);
the replay sends the same bytes, with beanstalkd's job ids translated to the implementation's
(first named, first mapped). Nothing in a script depends on time: delays and pauses are 0 or
300 s, TTRs 60 s or more, every reserve has timeout 0; the fields that tell time (``age``,
``time-left``, ``pause-time-left``, ``uptime``, ...) are left out of the comparison, and so is
what names the process (``pid``, ``id``, ``hostname``, ``version``, ...). A sharded cluster's
``list-tubes`` is compared as a set (its order is documented in docs/compatibility.md).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from .harness import BEANROUTER, BEANSTALKD, CLUSTER1, CLUSTER3, SHARDED, Server, ServerPool
from .wire import PeerClosed, ReplyTimeout, Session

SEEDS = range(12)
STEPS = 200
CONNECTIONS = 3

TUBES = (b"default", b"a", b"b", b"c")
PRIORITIES = (0, 1, 5, 100, 2**32 - 1)
BODIES = (b"x", b"hello", b"", b"a\r\nb", b"\x00\xff" * 40)
FOREIGN_IDS = (0, 1, 7, 99_999, 2**63, 2**64 - 1, 2**64)
"""Ids that may or may not name a job (the last is out of range: BAD_FORMAT)."""
MALFORMED = (
    b"put 1 2\r\n", b"put a b c d\r\n", b"delete\r\n", b"delete x\r\n", b"frob\r\n",
    b"use " + b"z" * 201 + b"\r\n", b"watch -bad\r\n",
    b"release 1\r\n", b"kick -1\r\n", b"pause-tube a\r\n", b"peek 01\r\n", b"delete +1\r\n",
    b"stats-tube\r\n", b"ignore\r\n", b"use\r\n", b"bury 1 2 3\r\n", b" delete 1\r\n",
    b"delete 1 \r\n", b"reserve-with-timeout 0 \r\n", b"touch\r\n", b"stats-job x\r\n",
    b"kick-job\r\n", b"use a b\r\n", b"put 0 0 1\r\n", b"pause-tube a -1\r\n",
    b"list-tubes x\r\n", b"stats 1\r\n", b"reserve 0\r\n", b"peek-ready 1\r\n",
)  # fmt: skip
"""Lines each answered with exactly one reply (nothing that swallows the next line as a body)."""

_ID_REPLY = re.compile(rb"^(INSERTED|RESERVED|FOUND|BURIED) ([0-9]+)")
_ID_COMMAND = re.compile(
    rb"^(delete|release|bury|touch|kick-job|peek|stats-job|reserve-job) ([0-9]+)"
)
_VOLATILE = frozenset(
    b"pid uptime version rusage-utime rusage-stime id hostname os platform draining"
    b" binlog-oldest-index binlog-current-index binlog-max-size binlog-records-written"
    b" binlog-records-migrated age time-left file pause-time-left".split()
)


def generate(rng: random.Random, ids: list[int], held: list[int]) -> bytes:
    """One command line (and body) for the script; ``ids``: the job ids beanstalkd named,
    ``held``: those it reserved on this connection (most job commands name one of them)."""

    def some_id() -> int:
        r = rng.random()
        if held and r < 0.5:
            return rng.choice(held)
        return rng.choice(ids) if ids and r < 0.9 else rng.choice(FOREIGN_IDS)

    def tube() -> bytes:
        return rng.choice(TUBES)

    def delay() -> int:
        return rng.choice((0, 0, 300))

    def put() -> bytes:
        body = rng.choice(BODIES)
        pri, delay, ttr = rng.choice(PRIORITIES), rng.choice((0, 0, 0, 300)), rng.choice((60, 120))
        return b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body)

    makers: list[tuple[int, Callable[[], bytes]]] = [
        (8, put),
        (3, lambda: b"use %s\r\n" % tube()),
        (3, lambda: b"watch %s\r\n" % tube()),
        (2, lambda: b"ignore %s\r\n" % tube()),
        (6, lambda: b"reserve-with-timeout 0\r\n"),
        (2, lambda: b"reserve-job %d\r\n" % some_id()),
        (4, lambda: b"delete %d\r\n" % some_id()),
        (3, lambda: b"release %d %d %d\r\n" % (some_id(), rng.choice(PRIORITIES), delay())),
        (3, lambda: b"bury %d %d\r\n" % (some_id(), rng.choice(PRIORITIES))),
        (2, lambda: b"touch %d\r\n" % some_id()),
        (2, lambda: b"kick %d\r\n" % rng.choice((0, 1, 2, 100))),
        (2, lambda: b"kick-job %d\r\n" % some_id()),
        (2, lambda: b"peek %d\r\n" % some_id()),
        (2, lambda: rng.choice((b"peek-ready\r\n", b"peek-delayed\r\n", b"peek-buried\r\n"))),
        (2, lambda: b"stats-job %d\r\n" % some_id()),
        (2, lambda: b"stats-tube %s\r\n" % tube()),
        (1, lambda: b"list-tubes\r\n"),
        (1, lambda: b"list-tube-used\r\n"),
        (1, lambda: b"list-tubes-watched\r\n"),
        (1, lambda: b"pause-tube %s %d\r\n" % (tube(), delay())),
        (1, lambda: b"stats\r\n"),
        (2, lambda: rng.choice(MALFORMED)),
    ]  # fmt: skip
    make = rng.choices([m for _, m in makers], [w for w, _ in makers])[0]
    return make()


@dataclass
class Ids:
    """A server's job ids in order of first appearance in its replies."""

    order: dict[int, int] = field(default_factory=dict)
    """id -> its rank (0 for the first named)."""

    def rank(self, job_id: int) -> int:
        return self.order.setdefault(job_id, len(self.order))


def normalise(reply: bytes, command: bytes, ids: Ids, sharded: bool) -> bytes:
    """``reply`` with job ids replaced by their rank and the fields that vary left out."""
    m = _ID_REPLY.match(reply)
    if m is not None:
        return b"%s #%d%s" % (m.group(1), ids.rank(int(m.group(2))), reply[m.end() :])
    if not reply.startswith(b"OK "):
        return reply
    body = reply.split(b"\r\n", 1)[1]
    lines = body.split(b"\n")
    out: list[bytes] = []
    for line in lines:
        key, sep, value = line.partition(b": ")
        if sep and key in _VOLATILE:
            if key == b"id" and command.startswith(b"stats-job"):
                out.append(b"id: #%d" % ids.rank(int(value)))
            continue
        out.append(line)
    if command.startswith(b"list-tubes\r") and sharded:
        out = sorted(line for line in out if line.startswith(b"- "))
    return b"OK\n" + b"\n".join(out)


def translate(command: bytes, ref: Ids, impl: Ids) -> bytes:
    """``command`` with a job id beanstalkd named replaced by the implementation's id of the
    same rank (an id neither named is sent as it is)."""
    m = _ID_COMMAND.match(command)
    if m is None:
        return command
    rank = ref.order.get(int(m.group(2)))
    mine = next((i for i, r in impl.order.items() if r == rank), None)
    if rank is None or mine is None:
        return command
    return b"%s %d%s" % (m.group(1), mine, command[m.end() :])


def connect_one(server: Server) -> Session:
    """A session the server has answered once (accepted: ``current-connections`` then agrees
    everywhere before the script goes on)."""
    session = server.connect()
    session.send(b"list-tube-used\r\n")
    assert session.reply() == b"USING default\r\n"
    return session


def read(session: Session) -> bytes:
    try:
        return session.reply(timeout=5.0)
    except PeerClosed:
        return b"<closed>"
    except ReplyTimeout:
        return b"<timeout>"


QUIT = b"quit\r\n"
BATCH = 0.15
"""The share of steps that send two to four commands in one write (a pipelining client)."""


WAKE = 0.05
"""The share of steps where a connection blocks in ``reserve-with-timeout`` and another puts a
job into a tube it watches (a cluster answers the wait from whichever shard takes the put)."""
WAIT = b"reserve-with-timeout 1\r\n"


@dataclass
class Step:
    conn: int
    commands: tuple[bytes, ...]
    replies: tuple[bytes, ...]
    waker: int = -1
    """For a wake step: the connection that sends ``commands[1:]`` while ``conn`` waits in
    ``commands[0]`` (``replies`` in the same order: the wait's reply first)."""


class Client:
    """The script's connections to one server; ``quit`` closes one and opens its successor."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sessions = [connect_one(server) for _ in range(CONNECTIONS)]

    def run(self, conn: int, commands: Sequence[bytes]) -> tuple[bytes, ...]:
        session = self.sessions[conn]
        if commands == (QUIT,):
            session.send(QUIT)
            closed = read(session)
            session.close()
            time.sleep(0.05)  # the server (and a cluster's shards) release what it held
            self.sessions[conn] = connect_one(self.server)
            return (closed,)
        session.send(b"".join(commands))
        return tuple(read(session) for _ in commands)

    def wake(self, conn: int, waker: int, commands: Sequence[bytes]) -> tuple[bytes, ...]:
        """``conn`` waits in a reserve while ``waker`` sends ``commands`` (its reply first)."""
        self.sessions[conn].send(WAIT)
        time.sleep(0.02)  # (usually) in the wait before the put comes
        self.sessions[waker].send(b"".join(commands))
        woken = tuple(read(self.sessions[waker]) for _ in commands)
        return (read(self.sessions[conn]), *woken)

    def close(self) -> None:
        for s in self.sessions:
            s.close()


def record(server: Server, seed: int) -> list[Step]:
    """Generate and run the script of ``seed`` on ``server``."""
    rng = random.Random(seed)
    client = Client(server)
    ids = Ids()
    named: list[int] = []
    held: list[list[int]] = [[] for _ in range(CONNECTIONS)]
    watching: list[set[bytes]] = [{b"default"} for _ in range(CONNECTIONS)]
    script: list[Step] = []
    try:
        for _ in range(STEPS):
            conn = rng.randrange(CONNECTIONS)
            waker = -1
            r = rng.random()
            if r < 0.01:
                commands: tuple[bytes, ...] = (QUIT,)
                held[conn] = []
                watching[conn] = {b"default"}
                replies = client.run(conn, commands)
            elif r < 0.01 + WAKE:
                waker = (conn + rng.randrange(1, CONNECTIONS)) % CONNECTIONS
                body = rng.choice(BODIES)
                wake = (
                    b"use %s\r\n" % rng.choice(sorted(watching[conn])),
                    b"put %d 0 60 %d\r\n%s\r\n" % (rng.choice(PRIORITIES), len(body), body),
                )
                commands = (WAIT, *wake)
                replies = client.wake(conn, waker, wake)
            else:
                n = rng.randint(2, 4) if rng.random() < BATCH else 1
                commands = tuple(generate(rng, named, held[conn]) for _ in range(n))
                replies = client.run(conn, commands)
            for i, (command, reply) in enumerate(zip(commands, replies, strict=True)):
                sender = waker if waker >= 0 and i else conn
                tube = command.split(b" ", 1)[-1].rstrip(b"\r\n")
                if reply.startswith(b"WATCHING") and command.startswith(b"watch "):
                    watching[sender].add(tube)
                elif reply.startswith(b"WATCHING") and command.startswith(b"ignore "):
                    watching[sender].discard(tube)
                m = _ID_REPLY.match(reply)
                if m is not None and int(m.group(2)) not in ids.order:
                    ids.rank(int(m.group(2)))
                    named.append(int(m.group(2)))
                if m is not None and m.group(1) == b"RESERVED":
                    held[sender].append(int(m.group(2)))
                elif reply in (b"DELETED\r\n", b"RELEASED\r\n", b"BURIED\r\n"):
                    job = _ID_COMMAND.match(command)
                    if job is not None and int(job.group(2)) in held[sender]:
                        held[sender].remove(int(job.group(2)))
            script.append(Step(conn, commands, replies, waker))
            if any(r.startswith(b"<") for r in replies) and commands != (QUIT,):
                break
    finally:
        client.close()
    return script


_REFERENCE: dict[int, list[Step]] = {}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("impl", [BEANROUTER, CLUSTER1, CLUSTER3])
def test_random_session(server_pool: ServerPool, impl: str, seed: int) -> None:
    if seed not in _REFERENCE:
        reference = server_pool.take(BEANSTALKD)
        try:
            _REFERENCE[seed] = record(reference, seed)
        finally:
            reference.stop()
    script = _REFERENCE[seed]
    server = server_pool.take(impl)
    client: Client | None = None
    try:
        client = Client(server)
        ref_ids, impl_ids = Ids(), Ids()
        sharded = impl in SHARDED
        history: list[str] = []
        for i, step in enumerate(script):
            if step.waker >= 0:
                got = client.wake(step.conn, step.waker, step.commands[1:])
            else:
                commands = tuple(translate(c, ref_ids, impl_ids) for c in step.commands)
                got = client.run(step.conn, commands)
            for command, expected, reply in zip(step.commands, step.replies, got, strict=True):
                want = normalise(expected, command, ref_ids, sharded)
                have = normalise(reply, command, impl_ids, sharded)
                history.append(f"[{step.conn}] {command[:60]!r} -> {expected[:60]!r}")
                assert have == want, (
                    f"seed {seed}, step {i}, connection {step.conn}: {command[:80]!r}\n"
                    f"beanstalkd: {expected!r}\n{impl}: {reply!r}\nlast steps:\n"
                    + "\n".join(history[-10:])
                )
    finally:
        if client is not None:
            client.close()
        server.stop()
