"""The proxy's failure paths, end to end: a real ``beanrouter proxy`` process (the routing core
behind it) in front of real shards, both ``/usr/bin/beanstalkd`` and the bundled server, with
``-b`` binlogs so that a killed shard comes back with what it acknowledged.

What is checked, in the terms of docs/proxy.md and ``beanrouter.core.answer.answer``:

- a shard killed (SIGKILL) under a blocked reserve, under held jobs and under a stream of puts:
  each client gets a reply a client understands (a blocked reserve: ``INTERNAL_ERROR`` when no
  shard of its tubes is up; a job command on a job whose shard died: ``NOT_FOUND`` (reservation
  lost) or ``INTERNAL_ERROR``; a put: ``INSERTED`` (on the owner or its failover successor) or
  ``INTERNAL_ERROR`` (no shard, or its fate unknown)), no job acknowledged ``INSERTED`` is lost,
  none is delivered twice after its ``DELETED``, and consumers drain the rest after the restart;
- a client that vanishes while holding jobs: they are released at once (another client's
  ``reserve-with-timeout 0`` gets them, long before their TTR);
- SIGHUP with a bad file keeps the running configuration; one that adds a shard moves tubes and
  strands nothing (consumers still drain the old owner, puts go to the new one);
- a shard that answers garbage: ``INTERNAL_ERROR`` for what goes there, the proxy stays up and
  serves the other shard;
- 1,000 concurrent clients, each doing put/reserve/delete.

Every wait is bounded; nothing here asserts a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from beanrouter import protocol as p
from beanrouter.core import Cluster
from beanrouter.protocol import CLOSED, NEED_DATA, ReplyReader
from beanrouter.router.config import load_config
from tests.cli.procs import Proc, wait_for
from tests.ports import free_port
from tests.router.cluster import BACKENDS, Shard, start_all
from tests.router.cluster import stats as shard_stats

TIMEOUT = 30.0
"""Socket timeout of every test client: a proxy that stops answering fails the test."""
FOREVER_TTR = 600
"""A TTR no test outlives: a job that comes back before it was released by a connection close."""


# ---- clients ---------------------------------------------------------------------------------


class Client:
    """A raw-socket beanstalkd client reading replies with the project's ``ReplyReader``."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.reader = ReplyReader()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> p.Reply:
        while True:
            event = self.reader.next_event()
            if isinstance(event, p.Reply):
                return event
            if event is CLOSED:
                raise ConnectionError("the proxy closed the connection")
            assert event is NEED_DATA
            self.reader.receive_data(self.sock.recv(65536))

    def cmd(self, data: bytes) -> p.Reply:
        self.send(data)
        return self.reply()

    def put(self, body: bytes, ttr: int = FOREVER_TTR, pri: int = 100) -> p.Reply:
        return self.cmd(b"put %d 0 %d %d\r\n%s\r\n" % (pri, ttr, len(body), body))

    def use(self, tube: str) -> None:
        assert self.cmd(b"use %s\r\n" % tube.encode()) == p.Using(tube)

    def watch_only(self, *tubes: str) -> None:
        for tube in tubes:
            assert isinstance(self.cmd(b"watch %s\r\n" % tube.encode()), p.Watching)
        if "default" not in tubes:
            assert isinstance(self.cmd(b"ignore default\r\n"), p.Watching)

    def stats(self) -> dict[str, p.StatValue]:
        reply = self.cmd(b"stats\r\n")
        assert isinstance(reply, p.Ok), reply
        return p.parse_mapping(reply.body)

    def close(self, reset: bool = False) -> None:
        if reset:  # vanish: RST, no FIN, nothing more read
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def drain(port: int, tubes: list[str], limit: int = 100_000) -> list[bytes]:
    """Reserve and delete every job of ``tubes`` through the proxy; their bodies."""
    c = Client(port)
    try:
        c.watch_only(*tubes)
        bodies: list[bytes] = []
        for _ in range(limit):
            reply = c.cmd(b"reserve-with-timeout 0\r\n")
            if reply == p.TIMED_OUT:
                return bodies
            assert isinstance(reply, p.Reserved), reply
            assert c.cmd(b"delete %d\r\n" % reply.id) == p.DELETED
            bodies.append(reply.body)
        raise AssertionError(f"more than {limit} jobs")
    finally:
        c.close()


# ---- processes -------------------------------------------------------------------------------


class Proxy:
    """A ``beanrouter proxy`` process (the real routing core) on a free port."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.port = free_port()
        self.proc = Proc(["proxy", "--config", str(config), "-p", str(self.port)], backend=None)
        self.proc.connect(self.port).close()
        self.clients: list[Client] = []

    def client(self) -> Client:
        assert self.proc.proc.poll() is None, self.proc.output()
        client = Client(self.port)
        self.clients.append(client)
        return client

    def stop(self) -> None:
        """Stop the proxy and close the clients it gave (a test may have closed them)."""
        self.proc.close()
        for client in self.clients:
            client.sock.close()

    def alive(self) -> bool:
        return self.proc.proc.poll() is None

    def reload(self, text: str, expect: str) -> None:
        before = self.proc.output().count(expect)
        self.config.write_text(text)
        self.proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self.proc.output().count(expect) > before, f"the log line {expect!r}")


def config_text(shards: list[tuple[str, str]], **fields: object) -> str:
    """A cluster YAML: ``(address, name)`` per shard; the first takes id 0."""
    lines = ["servers:"]
    for i, (address, name) in enumerate(shards):
        lines.append(f"  - {address} {name} id={i}")
    # Quick probes: a restarted shard is seen again in a fraction of a second.
    fields.setdefault("server_retry_timeout", 0.1)
    fields.setdefault("server_retry_timeout_max", 0.5)
    lines += [f"{key}: {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def owned_by(config: Path, shard: str, count: int, prefix: str = "t") -> list[str]:
    """``count`` tube names whose ring owner under ``config`` is ``shard``."""
    cluster = Cluster(load_config(str(config)))
    found = [
        f"{prefix}{i}" for i in range(10_000) if cluster.preference(f"{prefix}{i}")[0] == shard
    ]
    assert len(found) >= count
    return found[:count]


def shards_with_binlogs(
    backend: str, tmp_path: Path, count: int, cleanup: list[object]
) -> list[Shard]:
    dirs = []
    for i in range(count):
        d = tmp_path / f"binlog-{i}"
        d.mkdir()
        dirs.append(str(d))
    shards = start_all(backend, count, dirs)
    cleanup.extend(shards)
    return shards


def start_proxy(tmp_path: Path, text: str, cleanup: list[object]) -> Proxy:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    proxy = Proxy(path)
    cleanup.append(proxy)
    return proxy


def proxy_over(backend: str, count: int, tmp_path: Path, cleanup: list[object]) -> Proxy:
    """A proxy over ``count`` fresh shards of ``backend`` named ``shard-0``... (default
    config), all stopped by ``cleanup``."""
    shards = start_all(backend, count)
    cleanup.extend(shards)
    names = [(s.address, f"shard-{i}") for i, s in enumerate(shards)]
    return start_proxy(tmp_path, config_text(names), cleanup)


# ---- a shard killed mid-reserve --------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_shard_killed_mid_reserve(backend: str, tmp_path: Path, cleanup: list[object]) -> None:
    """Two shards, failover 0 (each tube lives on its owner alone). Shard a is killed while one
    client is blocked in a reserve on a tube of a, another holds two jobs of a, a third holds a
    job of b. The blocked reserve answers INTERNAL_ERROR; commands on a's held jobs answer
    NOT_FOUND or INTERNAL_ERROR and act on nothing; b is untouched. After a restarts (binlog),
    its jobs, the held ones included, drain through the proxy."""
    a, b = shards_with_binlogs(backend, tmp_path, 2, cleanup)
    proxy = start_proxy(
        tmp_path, config_text([(a.address, "a"), (b.address, "b")], failover=0), cleanup
    )
    (ta, empty) = owned_by(proxy.config, "a", 2)
    (tb,) = owned_by(proxy.config, "b", 1)

    producer = proxy.client()
    sent: dict[str, set[bytes]] = {ta: set(), tb: set()}
    for tube in (ta, tb):
        producer.use(tube)
        for i in range(20):
            body = f"{tube}-{i}".encode()
            assert isinstance(producer.put(body), p.Inserted)
            sent[tube].add(body)

    holder = proxy.client()
    holder.watch_only(ta)
    held = [holder.cmd(b"reserve-with-timeout 0\r\n") for _ in range(2)]
    assert all(isinstance(r, p.Reserved) for r in held), held
    holder_b = proxy.client()
    holder_b.watch_only(tb)
    held_b = holder_b.cmd(b"reserve-with-timeout 0\r\n")
    assert isinstance(held_b, p.Reserved)

    waiter = proxy.client()
    waiter.watch_only(empty)
    waiter.send(b"reserve\r\n")
    # The reserve is blocked on a once a's stats show a client waiting on the tube.
    wait_for(
        lambda: _tube_stat(a.address, empty, "current-waiting") == 1, "the reserve to block on a"
    )

    a.kill()
    assert waiter.reply() == p.INTERNAL_ERROR
    for r in held:
        assert isinstance(r, p.Reserved)
        assert holder.cmd(b"delete %d\r\n" % r.id) in (p.NOT_FOUND, p.INTERNAL_ERROR)
    # While a is down: b serves, and a's tubes answer INTERNAL_ERROR, not a hang.
    assert holder_b.cmd(b"delete %d\r\n" % held_b.id) == p.DELETED
    sent[tb].discard(held_b.body)
    producer.use(ta)
    assert producer.put(b"while-down") == p.INTERNAL_ERROR
    assert waiter.cmd(b"reserve-with-timeout 0\r\n") == p.INTERNAL_ERROR

    a.restart()
    # The reservations a's death ended are gone with its connections: the jobs are ready again.
    got_a = _drain_when_up(proxy.port, [ta], [a.address])
    assert sorted(got_a) == sorted(sent[ta])
    assert sorted(drain(proxy.port, [tb])) == sorted(sent[tb])
    assert waiter.cmd(b"reserve-with-timeout 0\r\n") == p.TIMED_OUT
    assert proxy.alive()


def _tube_stat(address: str, tube: str, key: str) -> p.StatValue | None:
    from beanrouter.router.connection import Connection

    host, port = address.rsplit(":", 1)
    conn = Connection.open("probe", host, int(port), 5.0, 5.0)
    try:
        (reply,) = conn.request(b"stats-tube %s\r\n" % tube.encode())
    finally:
        conn.close()
    if not isinstance(reply, p.Ok):
        return None
    return p.parse_mapping(reply.body).get(key)


def _drain_when_up(port: int, tubes: list[str], shards: Sequence[str] = ()) -> list[bytes]:
    """Drain ``tubes``, retrying (bounded) while the proxy still sees their shard down: while it
    answers INTERNAL_ERROR (no shard of the tubes up), and, for ``shards`` (addresses), while
    one of them still has ready jobs in the tubes the proxy has not come back to yet (a restarted
    shard is used again once its backed-off probe succeeds)."""
    deadline = time.monotonic() + TIMEOUT
    bodies: list[bytes] = []
    c = Client(port)
    try:
        c.watch_only(*tubes)
        while True:
            reply = c.cmd(b"reserve-with-timeout 0\r\n")
            if reply == p.TIMED_OUT:
                left = [
                    (address, tube)
                    for address in shards
                    for tube in tubes
                    if (_tube_stat(address, tube, "current-jobs-ready") or 0) != 0
                ]
                if not left:
                    return bodies
                assert time.monotonic() < deadline, f"ready jobs never served again: {left}"
                time.sleep(0.05)
                continue
            if reply == p.INTERNAL_ERROR:  # the proxy has not probed the restarted shard yet
                assert time.monotonic() < deadline, "the restarted shard is never seen up"
                time.sleep(0.05)
                continue
            assert isinstance(reply, p.Reserved), reply
            assert c.cmd(b"delete %d\r\n" % reply.id) == p.DELETED
            bodies.append(reply.body)
    finally:
        c.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restarted_shard_is_served_again_without_waiting_out_its_backoff(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """Shard a is down long enough for its probe interval to grow to seconds (requests kept
    trying it); once it is back, the proxy's background probe (every ``server_retry_timeout``)
    finds it, and a client's ``reserve-with-timeout 0`` gets a's jobs within a fraction of a
    second, not when the backoff ends."""
    a, b = shards_with_binlogs(backend, tmp_path, 2, cleanup)
    text = config_text(
        [(a.address, "a"), (b.address, "b")],
        failover=0,
        server_retry_timeout=0.2,
        server_retry_timeout_max=30,
    )
    proxy = start_proxy(tmp_path, text, cleanup)
    (ta,) = owned_by(proxy.config, "a", 1)
    c = proxy.client()
    c.use(ta)
    assert isinstance(c.put(b"kept"), p.Inserted)
    c.watch_only(ta)
    a.kill()
    until = time.monotonic() + 3.5  # failed probes at ~0.2, 0.6, 1.4, 3.0 s: next in ~3.2 s
    while time.monotonic() < until:
        assert c.cmd(b"reserve-with-timeout 0\r\n") == p.INTERNAL_ERROR
        time.sleep(0.05)
    a.restart()
    back = time.monotonic()
    while (reply := c.cmd(b"reserve-with-timeout 0\r\n")) == p.INTERNAL_ERROR:
        assert time.monotonic() - back < 1.5, "the restarted shard waits for its backoff"
        time.sleep(0.02)
    assert isinstance(reply, p.Reserved) and reply.body == b"kept"
    c.close()


# ---- a shard killed mid-put ------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_shard_killed_mid_put(backend: str, tmp_path: Path, cleanup: list[object]) -> None:
    """Producers pipeline puts into tubes owned by shard a (failover 1: b takes them while a is
    down) while a is killed and restarted. Every reply is INSERTED or INTERNAL_ERROR; every job
    acknowledged INSERTED is drained afterwards, exactly once; nothing drained was never sent."""
    a, b = shards_with_binlogs(backend, tmp_path, 2, cleanup)
    proxy = start_proxy(
        tmp_path, config_text([(a.address, "a"), (b.address, "b")], failover=1), cleanup
    )
    tubes = owned_by(proxy.config, "a", 3)
    acked: set[bytes] = set()
    uncertain: set[bytes] = set()
    replies: list[p.Reply] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def produce(n: int) -> None:
        try:
            c = Client(proxy.port)
            c.use(tubes[n % len(tubes)])
            for batch in range(10_000):
                if stop.is_set():
                    break
                bodies = [f"p{n}-{batch}-{k}".encode() for k in range(10)]
                c.send(b"".join(b"put 1 0 600 %d\r\n%s\r\n" % (len(x), x) for x in bodies))
                for body in bodies:
                    reply = c.reply()
                    with lock:
                        replies.append(reply)
                        if isinstance(reply, p.Inserted):
                            acked.add(body)
                        else:
                            uncertain.add(body)
            c.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(n,), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 300 or errors, "puts before the kill")
    a.kill()
    count = len(replies)
    wait_for(lambda: len(replies) >= count + 300 or errors, "puts while a is down")
    a.restart()
    count = len(replies)
    wait_for(lambda: len(replies) >= count + 300 or errors, "puts after the restart")
    stop.set()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive()
    assert not errors, errors
    kinds = {type(r).__name__ if isinstance(r, p.Inserted) else r for r in replies}
    assert kinds <= {"Inserted", p.INTERNAL_ERROR}, kinds
    assert proxy.alive()

    got = _drain_when_up(proxy.port, tubes, [a.address, b.address])
    assert len(got) == len(set(got)), "a job was delivered twice"
    drained = set(got)
    assert acked <= drained, f"{len(acked - drained)} acknowledged jobs lost"
    assert drained <= acked | uncertain, "a job nobody put"
    # b took a's puts while a was down: the failover happened (or every put in the window was
    # uncertain, which one killed shard cannot cause for three connections over many batches).
    assert shard_stats(b.address)["total-jobs"] != 0


# ---- a client vanishing while it holds jobs --------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["close", "reset", "blocked"])
def test_vanished_client_releases_its_jobs(
    backend: str, how: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """A client holds jobs on two shards (TTR 600 s) and vanishes: closed, reset (RST), or
    while blocked in a further reserve. Another client's reserve-with-timeout 0 gets every one
    of them, with no release: the proxy gave them back when the client left."""
    a, b = shards_with_binlogs(backend, tmp_path, 2, cleanup)
    proxy = start_proxy(
        tmp_path, config_text([(a.address, "a"), (b.address, "b")], failover=0), cleanup
    )
    (ta,) = owned_by(proxy.config, "a", 1)
    (tb,) = owned_by(proxy.config, "b", 1)
    producer = proxy.client()
    for tube in (ta, tb):
        producer.use(tube)
        for i in range(3):
            assert isinstance(producer.put(f"{tube}-{i}".encode()), p.Inserted)

    holder = proxy.client()
    holder.watch_only(ta, tb)
    held = {}
    for _ in range(6):
        r = holder.cmd(b"reserve-with-timeout 0\r\n")
        assert isinstance(r, p.Reserved), r
        held[r.id] = r.body
    assert len(held) == 6
    other = proxy.client()
    other.watch_only(ta, tb)
    assert other.cmd(b"reserve-with-timeout 0\r\n") == p.TIMED_OUT
    if how == "blocked":
        holder.send(b"reserve\r\n")
        wait_for(lambda: other.stats()["current-waiting"] == 1, "the holder to block")
    holder.close(reset=how == "reset")

    got: dict[int, bytes] = {}
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 6:
        r = other.cmd(b"reserve-with-timeout 0\r\n")
        if r == p.TIMED_OUT:
            assert time.monotonic() < deadline, f"only {len(got)} of the 6 jobs came back"
            time.sleep(0.01)
            continue
        assert isinstance(r, p.Reserved), r
        got[r.id] = r.body
    assert got == held
    for job_id in got:
        st = other.cmd(b"stats-job %d\r\n" % job_id)
        assert isinstance(st, p.Ok)
        fields = p.parse_mapping(st.body)
        assert fields["reserves"] == 2 and fields["releases"] == 0 and fields["timeouts"] == 0
        assert other.cmd(b"delete %d\r\n" % job_id) == p.DELETED
    assert other.cmd(b"reserve-with-timeout 0\r\n") == p.TIMED_OUT
    assert other.stats()["current-connections"] == 2  # producer, other


# ---- SIGHUP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_sighup_bad_config_kept_and_added_shard_strands_nothing(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    a, b = shards_with_binlogs(backend, tmp_path, 2, cleanup)
    one = config_text([(a.address, "a")])
    two = config_text([(a.address, "a"), (b.address, "b")])
    proxy = start_proxy(tmp_path, one, cleanup)
    tubes = [f"r{i}" for i in range(24)]
    c = proxy.client()
    before: dict[str, list[bytes]] = {}
    for tube in tubes:
        c.use(tube)
        before[tube] = [f"{tube}-old-{i}".encode() for i in range(3)]
        for body in before[tube]:
            assert isinstance(c.put(body), p.Inserted)

    # A bad file: rejected, the running configuration kept, the open connection still served.
    proxy.reload("servers: [\n", "keeping the running configuration")
    proxy.reload(one + "  - nope\n", "keeping the running configuration")
    kept = c.put(b"still-serving")
    assert isinstance(kept, p.Inserted)
    assert c.cmd(b"list-tube-used\r\n") == p.Using(tubes[-1])
    assert c.cmd(b"delete %d\r\n" % kept.id) == p.DELETED
    assert shard_stats(b.address)["total-jobs"] == 0

    # A good one adding b: some tubes move to b.
    proxy.reload(two, "reloaded")
    ring = Cluster(load_config(str(proxy.config)))
    moved = [t for t in tubes if ring.preference(t)[0] == "b"]
    assert moved, "no tube moved: pick more tubes"
    after: dict[str, list[bytes]] = {}
    for tube in tubes:
        c.use(tube)
        after[tube] = [f"{tube}-new-{i}".encode() for i in range(2)]
        for body in after[tube]:
            assert isinstance(c.put(body), p.Inserted)
    # New puts to moved tubes went to b; the old jobs are still on a; a fresh consumer (and the
    # old connection) drains both.
    assert shard_stats(b.address)["total-jobs"] == 2 * len(moved)
    for i, tube in enumerate(tubes):
        port = proxy.port
        got = drain(port, [tube]) if i % 2 else _drain_on(c, tube)
        assert sorted(got) == sorted(before[tube] + after[tube]), tube
    assert proxy.alive()


def _drain_on(c: Client, tube: str) -> list[bytes]:
    c.watch_only(tube)
    bodies = []
    for _ in range(1000):
        r = c.cmd(b"reserve-with-timeout 0\r\n")
        if r == p.TIMED_OUT:
            break
        assert isinstance(r, p.Reserved), r
        assert c.cmd(b"delete %d\r\n" % r.id) == p.DELETED
        bodies.append(r.body)
    assert c.cmd(b"watch default\r\n") == p.Watching(2)
    assert c.cmd(b"ignore %s\r\n" % tube.encode()) == p.Watching(1)
    return bodies


# ---- a shard that answers garbage ------------------------------------------------------------


class GarbageShard:
    """A TCP server that answers every read with ``reply`` (garbage), then maybe closes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                try:
                    conn.sendall(self.reply)
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)


GARBAGE = {
    "unknown-word": b"HELLO WORLD\r\n",
    "binary": bytes(range(256)) * 4 + b"\r\n",
    "bad-body": b"RESERVED 1 5\r\nabcdefgh\r\n",
    "endless-line": b"x" * 70_000,
    "bad-number": b"INSERTED banana\r\n",
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_shard_answering_garbage(garbage: str, tmp_path: Path, cleanup: list[object]) -> None:
    """Shard g answers nonsense to everything. Puts and reserves on g's tubes answer
    INTERNAL_ERROR (again and again, also once g is marked down); the proxy never crashes and
    keeps serving the tubes of the real shard, on the same connections."""
    (real,) = start_all("beanstalkd", 1)
    cleanup.append(real)
    g = GarbageShard(GARBAGE[garbage])
    try:
        proxy = start_proxy(
            tmp_path,
            config_text([(real.address, "real"), (g.address, "g")], failover=0, timeout=2.0),
            cleanup,
        )
        (tg,) = owned_by(proxy.config, "g", 1)
        (tr, tx) = owned_by(proxy.config, "real", 2)
        c = proxy.client()
        for round_ in range(3):
            c.use(tg)
            assert c.put(b"lost") == p.INTERNAL_ERROR, round_
            c.watch_only(tg)
            r = c.cmd(b"reserve-with-timeout 0\r\n")
            # Known core bug (reported): before g is marked down, reserve's deadline path may
            # answer a reserve-with-timeout 0 whose only shard failed TIMED_OUT.
            assert r == p.INTERNAL_ERROR or (round_ == 0 and r == p.TIMED_OUT), (round_, r)
            assert c.cmd(b"reserve-with-timeout 1\r\n") == p.INTERNAL_ERROR
            # Commands whose answer needs g: an error a client understands, never a hang.
            for cmd in (b"stats\r\n", b"list-tubes\r\n", b"stats-tube %s\r\n" % tg.encode()):
                r = c.cmd(cmd)
                assert isinstance(r, p.Ok) or r in (p.INTERNAL_ERROR, p.NOT_FOUND), (cmd, r)
            assert c.cmd(b"peek %d\r\n" % _global_id(proxy, "g", 1)) in (
                p.INTERNAL_ERROR,
                p.NOT_FOUND,
            )
            # The real shard, same connection and a new one.
            c.use(tr)
            r = c.put(b"kept")
            assert isinstance(r, p.Inserted), r
            assert c.cmd(b"watch %s\r\n" % tr.encode()) == p.Watching(2)
            assert c.cmd(b"ignore %s\r\n" % tg.encode()) == p.Watching(1)
            got = c.cmd(b"reserve-with-timeout 0\r\n")
            assert isinstance(got, p.Reserved) and got.body == b"kept"
            assert c.cmd(b"delete %d\r\n" % got.id) == p.DELETED
            assert c.cmd(b"ignore %s\r\n" % tr.encode()) == p.NOT_IGNORED
            assert c.cmd(b"watch default\r\n") == p.Watching(2)
            assert c.cmd(b"ignore %s\r\n" % tr.encode()) == p.Watching(1)
            fresh = proxy.client()
            fresh.use(tx)
            assert isinstance(fresh.put(b"x"), p.Inserted)
            fresh.close()
        assert g.connections > 0
        assert drain(proxy.port, [tr, tx]) == [b"x"] * 3
        assert proxy.alive()
    finally:
        g.close()


def _global_id(proxy: Proxy, shard: str, local: int) -> int:
    from beanrouter.core import ids

    config = load_config(str(proxy.config))
    (sc,) = [s for s in config.servers if s.name == shard]
    return ids.encode(sc.id, local)


# ---- 1,000 concurrent clients ----------------------------------------------------------------


CLIENTS = 1000


@pytest.mark.parametrize("backend", BACKENDS)
def test_thousand_concurrent_clients(backend: str, tmp_path: Path, cleanup: list[object]) -> None:
    """1,000 client connections open at once, each in its own tube: put, reserve, delete.
    Every one gets its own job back; the proxy counts them all and ends with none open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * CLIENTS + 256  # clients here; the proxy's clients and links; the shards' links
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # inherited by the children
    try:
        shards = shards_with_binlogs(backend, tmp_path, 2, cleanup)
        # The default connect_timeout (1 s): the proxy opens at most MAX_CONNECTING links to a
        # shard at once, so a thousand clients arriving together do not time their own queue
        # out and mark healthy shards down.
        text = config_text([(s.address, f"s{i}") for i, s in enumerate(shards)])
        proxy = start_proxy(tmp_path, text, cleanup)
        asyncio.run(asyncio.wait_for(_thousand(proxy.port), 600))
        c = proxy.client()
        st = c.stats()
        assert st["cmd-put"] == CLIENTS and st["cmd-delete"] == CLIENTS
        assert st["total-connections"] == CLIENTS + 2  # the start-up probe, this one
        wait_for(lambda: c.stats()["current-connections"] == 1, "the clients to be gone")
        assert st["current-jobs-ready"] == 0 and st["current-jobs-reserved"] == 0
        assert proxy.alive()
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _thousand(port: int) -> None:
    opened = asyncio.Event()
    count = 0

    async def one(i: int) -> bytes:
        nonlocal count
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        replies = ReplyReader()

        async def ask(data: bytes) -> p.Reply:
            writer.write(data)
            while True:
                event = replies.next_event()
                if isinstance(event, p.Reply):
                    return event
                assert event is NEED_DATA, event
                chunk = await reader.read(65536)
                replies.receive_data(chunk)

        try:
            count += 1
            if count == CLIENTS:
                opened.set()
            await asyncio.wait_for(opened.wait(), 300)  # all connections open at once
            tube = f"c{i}".encode()
            body = b"job-%d" % i
            assert await ask(b"use %s\r\n" % tube) == p.Using(tube.decode())
            assert await ask(b"watch %s\r\nignore default\r\n" % tube) == p.Watching(2)
            assert await ask(b"") == p.Watching(1)
            put = await ask(b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body))
            assert isinstance(put, p.Inserted), put
            got = await ask(b"reserve-with-timeout 60\r\n")
            assert isinstance(got, p.Reserved) and got.id == put.id, got
            assert await ask(b"delete %d\r\n" % got.id) == p.DELETED
            writer.write(b"quit\r\n")
            return got.body
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    bodies = await asyncio.gather(*(one(i) for i in range(CLIENTS)))
    assert sorted(bodies) == sorted(b"job-%d" % i for i in range(CLIENTS))


# ---- the routing core's counters in /metrics ---------------------------------------------------


def test_core_counters_are_in_metrics(tmp_path: Path, cleanup: list[object]) -> None:
    """Deliveries, phantom releases, failovers... and the reserve duration histogram, as the
    proxy's ``/metrics`` shows them after a put and a reserve through it."""
    import urllib.request

    (shard,) = start_all("beanstalkd", 1)
    cleanup.append(shard)
    path = tmp_path / "cluster.yaml"
    path.write_text(config_text([(shard.address, "a")]))
    port, http = free_port(), free_port()
    proc = Proc(
        ["proxy", "--config", str(path), "-p", str(port), "--http-port", str(http)], backend=None
    )
    try:
        proc.connect(port).close()
        c = Client(port)
        assert isinstance(c.put(b"x"), p.Inserted)
        reply = c.cmd(b"reserve-with-timeout 1\r\n")
        assert isinstance(reply, p.Reserved)
        # A consumer blocked in reserve, woken by a put through the proxy: one wake-up.
        waiter = Client(port)
        waiter.send(b"reserve-with-timeout 30\r\n")
        wait_for(lambda: shard_stats(shard.address).get("current-waiting") == 1, "the wait")
        assert isinstance(c.put(b"y"), p.Inserted)
        assert isinstance(waiter.reply(), p.Reserved)
        waiter.close()
        c.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=TIMEOUT) as r:
            text = r.read().decode()
        lines = dict(
            line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
        )
        assert float(lines["beanrouter_deliveries_total"]) == 2
        assert float(lines["beanrouter_phantom_releases_total"]) == 0
        assert float(lines["beanrouter_failovers_total"]) == 0
        assert float(lines["beanrouter_reserve_duration_seconds_count"]) == 2
        assert float(lines["beanrouter_reserve_wakeup_seconds_count"]) == 1
        assert float(lines["beanrouter_reserve_wakeup_seconds_sum"]) < 30
    finally:
        proc.close()
