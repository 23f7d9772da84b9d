"""The proxy's asyncio frame over real loopback sockets, with a fake backend behind the seam.

No routing here: ``tests/proxy/fakes.py`` answers commands from memory, so these tests observe only
what the frame owns — order, rejected input, counting, backpressure, closing sessions, signals.
Each test runs its own event loop (``asyncio.run``) with the proxy and its clients in it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from beanrouter.core.config import ClusterConfig
from beanrouter.protocol import parse_mapping
from beanrouter.proxy.app import INPUT_HIGH_WATER, ProxyServer
from beanrouter.proxy.run import serve
from beanrouter.proxy.stats import ProxyStats
from beanrouter.router.config import config_from_servers
from beanrouter.server.listen import bind

from .fakes import FakeBackend

T = TypeVar("T")
CONFIG = config_from_servers(["127.0.0.1:1 a id=0"])


def run(coro: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro(), 60)

    return asyncio.run(main())


class Proxy:
    def __init__(self, server: ProxyServer, backend: FakeBackend, port: int) -> None:
        self.server = server
        self.backend = backend
        self.port = port

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@asynccontextmanager
async def proxy(
    *, config_path: str | None = None, max_job_size: int = 65535, grace: float = 5.0
) -> AsyncIterator[Proxy]:
    backend = FakeBackend(CONFIG)
    stats = ProxyStats(max_job_size=max_job_size)
    server = ProxyServer(backend, stats, config=CONFIG, config_path=config_path, grace=grace)
    sock = bind("127.0.0.1", 0)
    await server.start(sock)
    try:
        yield Proxy(server, backend, sock.getsockname()[1])
    finally:
        if not server.stopping:
            await server.shutdown()


# ASYNC109: a polling helper whose timeout turns into an AssertionError naming what it waited for.
async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def read_exactly(reader: asyncio.StreamReader, expected: bytes) -> bytes:
    return await asyncio.wait_for(reader.readexactly(len(expected)), 20)


async def request(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, and read everything until the proxy closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    out = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return out


# -- order and one-at-a-time ----------------------------------------------------------------------


def test_pipelined_commands_run_one_at_a_time_and_answer_in_order() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            tubes = [f"sleep-{ms}" if i % 2 == 0 else f"t{i}" for i, ms in enumerate([40, 0] * 10)]
            data = b"".join(b"use %s\r\n" % t.encode() for t in tubes)
            reader, writer = await px.connect()
            writer.write(data)
            expected = b"".join(b"USING %s\r\n" % t.encode() for t in tubes)
            assert await read_exactly(reader, expected) == expected
            session = px.backend.sessions[0]
            assert session.max_running == 1
            executes = [e for e in px.backend.log if e[0] == "execute"]
            assert len(executes) == len(tubes)
            writer.close()

    run(scenario)


def test_callback_batches_and_task_commands_interleave_in_order() -> None:
    """Puts, deletes and echoes run from the protocol callbacks (``start_batch``); ``use`` and
    ``stats`` only in the task: a pipeline mixing them is answered in order, one batch at a
    time, and a command that arrives while a callback batch is out waits for it."""

    async def scenario() -> None:
        async with proxy() as px:
            reader, writer = await px.connect()
            writer.write(b"put 0 0 1 1\r\na\r\nuse t\r\nput 0 0 1 1\r\nb\r\npeek 1\r\n")
            expected = b"INSERTED 1\r\nUSING t\r\nINSERTED 2\r\nECHO peek 1\r\n"
            assert await read_exactly(reader, expected) == expected
            writer.write(b"use sleep-50\r\n")  # from now on each batch is answered 50 ms later
            assert await read_exactly(reader, b"USING sleep-50\r\n")
            writer.write(b"put 0 0 1 1\r\nc\r\n")
            await asyncio.sleep(0.01)  # it is out; this arrives meanwhile
            writer.write(b"peek 2\r\nstats-job 2\r\nuse u\r\n")
            expected = b"INSERTED 3\r\nECHO peek 2\r\nECHO stats-job 2\r\nUSING u\r\n"
            assert await read_exactly(reader, expected) == expected
            session = px.backend.sessions[0]
            assert session.max_running == 1  # never two at once
            names = [e[2] for e in px.backend.log if e[0] == "execute"]
            assert names == ["Put", "Use", "Put", "Peek", "Use", "Put", "Peek", "StatsJob", "Use"]
            writer.close()

    run(scenario)


@pytest.mark.parametrize("how", ["eof", "reset"])
def test_a_session_closes_only_after_its_callback_batch_ended(how: str) -> None:
    """EOF or a vanished client while a batch started from the callbacks is out: after EOF the
    half-close is mirrored (``half_close``), the reply is still written and the session closes
    after it; a vanished client's batch is aborted first. The fake asserts nothing runs at
    close."""

    async def scenario() -> None:
        async with proxy() as px:
            loop = asyncio.get_running_loop()
            s = socket.create_connection(("127.0.0.1", px.port))
            s.setblocking(False)
            await loop.sock_sendall(s, b"use sleep-100\r\n")
            assert await loop.sock_recv(s, 100) == b"USING sleep-100\r\n"
            await loop.sock_sendall(s, b"put 0 0 1 1\r\nx\r\n")
            session = px.backend.sessions[0]
            await until(lambda: session.running == 1, "the batch to be out")
            if how == "eof":
                s.shutdown(socket.SHUT_WR)
            else:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01" + bytes(7))
                s.close()  # RST
            await until(lambda: session.closed, "the session to close")
            log = [(e[0], e[2]) for e in px.backend.log if e[1] == session.number]
            if how == "eof":  # mirrored, and the batch still answered
                assert log[-3:] == [("half_close", ""), ("execute", "Put"), ("close", "")]
            else:  # gone: the batch is aborted (its links close) before the session closes
                assert log[-2:] == [("abort", ""), ("close", "")]
            if how == "eof":
                assert await loop.sock_recv(s, 100) == b"INSERTED 1\r\n"
                assert await loop.sock_recv(s, 100) == b""
                s.close()

    run(scenario)


def test_a_reserve_whose_first_look_times_out_waits_in_the_task() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            reader, writer = await px.connect()
            writer.write(b"reserve-with-timeout 5\r\n")
            await until(lambda: bool(px.backend.sessions), "the session")
            session = px.backend.sessions[0]
            await until(lambda: session.running == 1, "the wait")
            other_reader, other = await px.connect()
            other.write(b"put 0 0 1 1\r\nj\r\n")
            assert await read_exactly(other_reader, b"INSERTED 1\r\n")
            expected = b"RESERVED 1 1\r\nj\r\n"
            assert await read_exactly(reader, expected) == expected
            names = [e[2] for e in px.backend.log if e[0] == "execute" and e[1] == 0]
            assert names == ["ReserveWithTimeout", "ReserveWithTimeout"]  # first look, wait
            writer.close()
            other.close()

    run(scenario)


def test_put_body_split_across_writes_is_one_command() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            reader, writer = await px.connect()
            writer.write(b"put 0 0 1 5\r\nhel")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"lo\r\nput 0 0 1 2\r\nab\r\n")
            assert await read_exactly(reader, b"INSERTED 1\r\nINSERTED 2\r\n") == (
                b"INSERTED 1\r\nINSERTED 2\r\n"
            )
            assert list(px.backend.ready) == [(1, b"hello"), (2, b"ab")]
            writer.close()

    run(scenario)


# -- rejected input: the reader's bytes, as the bundled server and beanstalkd answer --------------

BAD_INPUTS = [
    b"foo\r\n",
    b"put 0 0 1\r\n",
    b"put 0 0 1 x\r\n",
    b"put 0 0 1 3 garbage\r\n",
    b"put 1 2 3 4294967296\r\n",
    b"use -bad\r\n",
    b"use " + b"x" * 201 + b"\r\n",
    b"pause-tube " + b"x" * 201 + b" 0\r\n",
    b"watch\r\n",
    b"delete abc\r\n",
    b"peek\r\n",
    b"kick x\r\n",
    b"bury 1\r\n",
    b"release 1 2\r\n",
    b"stats-job -1\r\n",
    b"a\0b\r\n",
    b"y" * 500 + b"\r\n",
    b"put 0 0 1 70000\r\n" + b"z" * 70000 + b"\r\n",
    b"put 0 0 1 1\r\nabc",
    b"put 0 0 1 2\r\nab\n\r\n",
    b"\r\n",
    b"quitx\r\n",  # matches quit by prefix: the connection ends here
    b"foo\r\n",
]


@pytest.mark.parametrize("backend", ["bundled", "beanstalkd"])
def test_rejected_input_gets_the_same_bytes_as_a_real_server(backend: str) -> None:
    from tests.router.cluster import start_all

    data = b"".join(BAD_INPUTS)
    (shard,) = start_all(backend, 1)
    try:
        with socket.create_connection(("127.0.0.1", shard.port), timeout=20) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reference = b""
            while chunk := s.recv(65536):
                reference += chunk
    finally:
        shard.stop()

    async def scenario() -> bytes:
        async with proxy() as px:
            out = await request(px.port, data)
            assert not [e for e in px.backend.log if e[0] == "execute"]
            return out

    assert reference.count(b"\r\n") == len(BAD_INPUTS) - 2  # quitx ends it, unanswered
    assert run(scenario) == reference


def test_expected_crlf_burns_an_id_through_the_session() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            out = await request(px.port, b"put 0 0 1 1\r\nabc" + b"put 0 0 1 1\r\nx\r\n")
            assert out == b"EXPECTED_CRLF\r\nINSERTED 2\r\n"  # id 1 was used up
            reader, writer = await px.connect()
            writer.write(b"put 0 0 1 1\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)  # the body arrives apart: the id was taken at the line
            writer.write(b"xyzput 0 0 1 1\r\nz\r\n")
            got = await read_exactly(reader, b"EXPECTED_CRLF\r\nINSERTED 4\r\n")
            assert got == b"EXPECTED_CRLF\r\nINSERTED 4\r\n"
            assert [e for e in px.backend.log if e[0] == "burn"] == [
                ("burn", 0, ""),
                ("burn", 1, ""),
            ]
            writer.close()

    run(scenario)


STATS_SCRIPT = [
    b"put 0 0 1 1\r\na\r\n",
    b"put 0 0 1 3 garbage\r\n",
    b"put 0 0 1 70000\r\n" + b"z" * 70000 + b"\r\n",
    b"put 0 0 1 1\r\nabc",
    b"pause-tube " + b"x" * 201 + b" 0\r\n",
    b"use t\r\n",
    b"watch t\r\n",
    b"ignore t\r\n",
    b"list-tubes\r\n",
    b"list-tube-used\r\n",
    b"list-tubes-watched\r\n",
    b"peek-ready\r\n",
    b"kick 1\r\n",
    b"reserve-with-timeout 0\r\n",
    b"stats-tube default\r\n",
]
COUNTED = ("cmd-", "current-producers", "current-workers", "current-waiting")


@pytest.mark.parametrize("backend", ["bundled", "beanstalkd"])
def test_counts_match_a_real_server(backend: str) -> None:
    """cmd-* and current-producers/workers after the same input, read in the same ``stats``."""
    from tests.router.cluster import start_all

    data = b"".join(STATS_SCRIPT)

    def pick(reply: bytes) -> dict[str, object]:
        body = reply[reply.index(b"\r\n") + 2 : -2]
        # The shard's start-up probe (Shard.wait_ready) is a list-tube-used of its own.
        items = parse_mapping(body).items()
        return {k: v for k, v in items if k.startswith(COUNTED) and k != "cmd-list-tube-used"}

    def last_ok(out: bytes) -> bytes:
        return out[out.rindex(b"OK ") :]

    (shard,) = start_all(backend, 1)
    try:
        with socket.create_connection(("127.0.0.1", shard.port), timeout=20) as s:
            s.sendall(data + b"stats\r\n")
            s.shutdown(socket.SHUT_WR)
            reference = b""
            while chunk := s.recv(65536):
                reference += chunk
    finally:
        shard.stop()

    async def scenario() -> bytes:
        async with proxy() as px:
            return await request(px.port, data + b"stats\r\n")

    ours = pick(last_ok(run(scenario)))
    theirs = pick(last_ok(reference))
    assert ours == theirs
    assert ours["cmd-put"] == 4 and ours["current-producers"] == 1


# -- backpressure ---------------------------------------------------------------------------------


def test_client_that_never_reads_is_paused_with_bounded_memory() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            hog = socket.socket()
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hog.connect(("127.0.0.1", px.port))
            hog.setblocking(False)
            loop = asyncio.get_running_loop()
            # Each stats reply is ~1 KB for 7 bytes of input: the output fills up first.
            chunk = b"stats\r\n" * 2000
            sent = 0
            for _ in range(600):  # at most 8.4 MB of input, ~1.2 GB of replies
                try:
                    await asyncio.wait_for(loop.sock_sendall(hog, chunk), 1.0)
                except TimeoutError:
                    break  # the proxy stopped reading: our send buffer is full
                sent += len(chunk)
            else:
                raise AssertionError("the proxy kept reading a client that never reads")
            (conn,) = px.server.connections
            await until(lambda: conn._read_paused, "the proxy to stop reading the hog")

            def executed() -> int:
                return sum(1 for e in px.backend.log if e[0] == "execute")

            seen = -1
            while seen != executed():  # wait until the hog's commands stop running
                seen = executed()
                await asyncio.sleep(0.3)
            assert conn.transport is not None
            assert conn.reader.buffered <= INPUT_HIGH_WATER + 65535 + 256 * 1024
            assert conn.transport.get_write_buffer_size() <= 256 * 1024
            assert seen < sent // 7  # many commands wait, unread and unrun
            # Another client is served meanwhile.
            reader, writer = await px.connect()
            writer.write(b"use other\r\n")
            assert await read_exactly(reader, b"USING other\r\n") == b"USING other\r\n"
            writer.close()
            # When the hog reads, its replies arrive in order and the proxy goes on running its
            # commands (each reply shows a cmd-stats one higher than the one before).
            hog_reader, hog_writer = await asyncio.open_connection(sock=hog)
            last = 0
            for _ in range(seen + 2000):
                line = await asyncio.wait_for(hog_reader.readline(), 20)
                assert line.startswith(b"OK "), line
                body = await hog_reader.readexactly(int(line[3:]) + 2)
                count = parse_mapping(body[:-2])["cmd-stats"]
                assert isinstance(count, int) and count > last
                last = count
            assert executed() > seen
            hog_writer.close()

    run(scenario)


# -- closing sessions -----------------------------------------------------------------------------


def test_quit_closes_the_session_at_once_and_gives_back_reservations() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            r1, w1 = await px.connect()
            w1.write(b"put 0 0 1 3\r\njob\r\nreserve\r\n")
            expected = b"INSERTED 1\r\nRESERVED 1 3\r\njob\r\n"
            assert await read_exactly(r1, expected) == expected
            w1.write(b"quit\r\n")
            assert await asyncio.wait_for(r1.read(), 20) == b""
            assert px.backend.sessions[0].closed
            r2, w2 = await px.connect()
            w2.write(b"reserve-with-timeout 0\r\n")
            assert await read_exactly(r2, b"RESERVED 1 3\r\njob\r\n") == b"RESERVED 1 3\r\njob\r\n"
            w2.close()

    run(scenario)


def test_eof_during_a_blocked_reserve_answers_timed_out_and_closes() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            r1, w1 = await px.connect()
            w1.write(b"put 0 0 1 1\r\na\r\nreserve\r\nreserve\r\n")
            expected = b"INSERTED 1\r\nRESERVED 1 1\r\na\r\n"
            assert await read_exactly(r1, expected) == expected
            session = px.backend.sessions[0]
            await until(lambda: session.running == 1, "the second reserve to block")
            w1.write_eof()
            assert await asyncio.wait_for(r1.read(), 20) == b"TIMED_OUT\r\n"
            await until(lambda: session.closed, "the session to close")
            assert px.backend.log[-1] == ("close", 0, "")
            assert list(px.backend.ready) == [(1, b"a")]  # job 1 given back
            assert px.server.stats.waiting == 0 and px.server.stats.current_connections == 0

    run(scenario)


def test_reserve_just_before_eof_gets_the_ready_job() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            r1, w1 = await px.connect()
            w1.write(b"put 0 0 1 1\r\na\r\n")
            assert await read_exactly(r1, b"INSERTED 1\r\n") == b"INSERTED 1\r\n"
            for expected in (b"RESERVED 1 1\r\na\r\n", b"TIMED_OUT\r\n"):
                r2, w2 = await px.connect()
                w2.write(b"use sleep-100\r\n")  # this session's reserves take 0.1 s
                assert await read_exactly(r2, b"USING sleep-100\r\n") == b"USING sleep-100\r\n"
                w2.write(b"reserve\r\n")
                await w2.drain()
                w2.write_eof()  # while the reserve runs: what was ready still comes, no wait
                assert await asyncio.wait_for(r2.read(), 20) == expected
                w2.close()
                await until(lambda: px.backend.sessions[-1].closed, "the session to close")
                px.backend.ready.clear()  # job 1, given back at the close: nothing is ready now
            w1.close()

    run(scenario)


def test_client_gone_in_the_middle_of_a_put_body_burns_its_id() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            out = await request(px.port, b"put 0 0 1 5\r\nab")
            assert out == b""
            await until(lambda: px.backend.sessions[0].closed, "the session to close")
            assert [e for e in px.backend.log if e[1] == 0 and e[0] != "execute"] == [
                ("burn", 0, ""),
                ("close", 0, ""),
            ]
            # a put line that takes no id (a body too big is discarded, not stored) burns nothing
            out = await request(px.port, b"put 0 0 1 70000\r\nab")
            await until(lambda: px.backend.sessions[1].closed, "the second session to close")
            assert ("burn", 1, "") not in px.backend.log

    run(scenario)


def test_client_vanishing_mid_reserve_closes_the_session_and_cancels_the_reserve() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            s = socket.create_connection(("127.0.0.1", px.port))
            s.sendall(b"reserve\r\n")
            await until(lambda: bool(px.backend.sessions), "the session")
            session = px.backend.sessions[0]
            await until(lambda: session.running == 1, "the reserve to block")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # RST
            await until(lambda: session.closed, "the session to close")
            # The ghost reserve does not swallow the next job.
            reader, writer = await px.connect()
            writer.write(b"put 0 0 1 1\r\nb\r\nreserve-with-timeout 0\r\n")
            expected = b"INSERTED 1\r\nRESERVED 1 1\r\nb\r\n"
            assert await read_exactly(reader, expected) == expected
            writer.close()

    run(scenario)


def test_commands_before_eof_are_still_answered() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            out = await request(px.port, b"use a\r\nuse b\r\nlist-tube-used\r\n")
            assert out == b"USING a\r\nUSING b\r\nECHO list-tube-used\r\n"
            await until(lambda: px.backend.sessions[0].closed, "the session to close")

    run(scenario)


def test_a_thousand_concurrent_clients() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            clients = []
            for _ in range(1000):
                clients.append(await px.connect())
            for i, (_, w) in enumerate(clients):
                w.write(b"put 0 0 1 %d\r\n%d\r\n" % (len(str(i)), i))
            replies = await asyncio.gather(*(r.readline() for r, _ in clients))
            assert sorted(int(line.split()[1]) for line in replies) == list(range(1, 1001))
            out = await request(px.port, b"stats\r\n")
            stats = parse_mapping(out[out.index(b"\r\n") + 2 : -2])
            assert stats["current-connections"] == 1001 and stats["total-connections"] == 1001
            assert stats["current-producers"] == 1000
            for _, w in clients:
                w.close()
            await until(
                lambda: all(s.closed for s in px.backend.sessions), "every session to close"
            )
            assert px.server.stats.current_connections == 0 and px.server.stats.producers == 0

    run(scenario)


# -- signals: reload, drain, graceful stop --------------------------------------------------------


def test_reload_keeps_the_running_configuration_when_the_file_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("servers:\n  - 127.0.0.1:11301 a id=0\n")

    async def scenario() -> None:
        async with proxy(config_path=str(path)) as px:
            before = px.server.config
            path.write_text("servers:\n  - 127.0.0.1:notaport\n")
            assert not await px.server.reload()
            path.write_text("servers: [")
            assert not await px.server.reload()
            assert px.server.config is before and px.backend.reloads == []
            path.write_text("servers:\n  - 127.0.0.1:11301 a id=0\n  - 127.0.0.1:11302 b id=1\n")
            assert await px.server.reload()
            assert px.server.config is not None and len(px.server.config.servers) == 2
            assert px.backend.reloads == [px.server.config]
            # A backend that refuses keeps the running configuration too.
            px.backend.fail_reload = True
            path.write_text("servers:\n  - 127.0.0.1:11303 c id=0\n")
            running = px.server.config
            assert not await px.server.reload()
            assert px.server.config is running
            text = px.server.stats.metrics.render()
            assert 'beanrouter_config_reloads_total{result="rejected"} 2' in text
            assert 'beanrouter_config_reloads_total{result="ok"} 1' in text

    run(scenario)


def _serve_with_signals(
    tmp_path: Path, body: Callable[[FakeBackend, int, ProxyStats], Awaitable[None]]
) -> FakeBackend:
    path = tmp_path / "cluster.yaml"
    path.write_text("servers:\n  - 127.0.0.1:11301 a id=0\n")
    backends: list[FakeBackend] = []

    def factory(config: ClusterConfig) -> FakeBackend:
        backends.append(FakeBackend(config))
        return backends[-1]

    async def scenario() -> None:
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        stats = ProxyStats()
        server = asyncio.ensure_future(
            serve(sock, CONFIG, factory, stats=stats, config_path=str(path), grace=5.0)
        )
        await until(lambda: bool(backends), "the backend")
        try:
            await body(backends[0], port, stats)
        finally:
            if not server.done():  # its handlers are installed until it is done
                os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(server, 30)

    run(scenario)
    return backends[0]


def test_sighup_with_a_bad_file_keeps_the_old_configuration(tmp_path: Path) -> None:
    async def body(backend: FakeBackend, port: int, stats: ProxyStats) -> None:
        (tmp_path / "cluster.yaml").write_text("servers: 42\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.2)
        assert backend.reloads == []
        assert backend.config is CONFIG
        (tmp_path / "cluster.yaml").write_text("servers:\n  - 127.0.0.1:11309 z id=0\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: bool(backend.reloads), "the good reload")
        assert backend.reloads[0].servers[0].name == "z"

    _serve_with_signals(tmp_path, body)


def test_sigusr1_drains_puts(tmp_path: Path) -> None:
    async def body(backend: FakeBackend, port: int, stats: ProxyStats) -> None:
        assert await request(port, b"put 0 0 1 1\r\na\r\n") == b"INSERTED 1\r\n"
        os.kill(os.getpid(), signal.SIGUSR1)
        await until(lambda: stats.draining, "drain mode")
        assert await request(port, b"put 0 0 1 1\r\na\r\n") == b"DRAINING\r\n"

    _serve_with_signals(tmp_path, body)


def test_sigterm_finishes_in_flight_replies_and_gives_back_reservations(tmp_path: Path) -> None:
    results: dict[str, bytes] = {}

    async def body(backend: FakeBackend, port: int, stats: ProxyStats) -> None:
        holder_r, holder_w = await asyncio.open_connection("127.0.0.1", port)
        holder_w.write(b"put 0 0 1 1\r\nh\r\nreserve\r\nreserve\r\n")
        expected = b"INSERTED 1\r\nRESERVED 1 1\r\nh\r\n"
        assert await read_exactly(holder_r, expected) == expected
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(b"use sleep-500\r\nuse never-run\r\n")
        await until(
            lambda: len(backend.sessions) == 2 and backend.sessions[1].running == 1, "slow use"
        )
        await until(lambda: backend.sessions[0].running == 1, "the blocked reserve")
        os.kill(os.getpid(), signal.SIGTERM)
        results["slow"] = await asyncio.wait_for(slow_r.read(), 20)
        results["holder"] = await asyncio.wait_for(holder_r.read(), 20)
        try:
            await asyncio.open_connection("127.0.0.1", port)
            results["refused"] = b"no"
        except OSError:
            results["refused"] = b"yes"

    backend = _serve_with_signals(tmp_path, body)
    assert results["slow"] == b"USING sleep-500\r\n"  # finished, and nothing after it ran
    assert results["holder"] == b""  # the blocked reserve is cancelled, unanswered
    assert results["refused"] == b"yes"
    assert all(s.closed for s in backend.sessions)
    assert list(backend.ready) == [(1, b"h")]  # the reservation was given back
    assert backend.closed
    assert ("execute", 1, "Use") in backend.log and backend.log.count(("execute", 1, "Use")) == 1
