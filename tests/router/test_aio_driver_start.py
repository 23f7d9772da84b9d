"""``ProxyDriver.start``: core operations run from the links' callbacks, against a scripted shard.

The shard is a tiny asyncio server on loopback that answers each command line as the test says
(or never), so what is checked is the driver alone: a round on a connected link completes from
``data_received`` with no task; a round that needs a connection goes on in a task; a link that
fails, a shard that never answers (the reply timeout) and a session closed meanwhile all end the
operation with ``done`` called exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from beanrouter import protocol as p
from beanrouter.core import Cluster, Session
from beanrouter.core.errors import PutUncertain
from beanrouter.core.reserve import LINGER
from beanrouter.proxy.driver import ProxyDriver
from beanrouter.router.config import config_from_servers

Answer = Callable[[bytes], bytes | None]
"""A command line -> the shard's reply (None: say nothing; b"": close the connection)."""


def inserted() -> Answer:
    count = 0

    def answer(line: bytes) -> bytes | None:
        nonlocal count
        if line.startswith(b"put"):
            count += 1
            return b"INSERTED %d\r\n" % count
        if line.startswith(b"use "):
            return b"USING " + line[4:] + b"\r\n"
        return None  # a body

    return answer


async def shard(answer: Answer) -> tuple[asyncio.Server, int]:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            reply = answer(line.rstrip(b"\r\n"))
            if reply == b"":
                writer.close()
                return
            if reply is not None:
                writer.write(reply)
        writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def session(port: int) -> tuple[Session, ProxyDriver]:
    cluster = Cluster(config_from_servers([f"127.0.0.1:{port} a id=0"], timeout=0.3))
    s = Session(cluster, cancellable=False, linger=LINGER)
    return s, ProxyDriver(s, 5.0, 0.3, cluster.clock)


def started(driver: ProxyDriver, op: object) -> asyncio.Future[tuple[object, object]]:
    """``driver.start(op)``; the future gets ``(result, error)``, and fails if ``done`` runs
    twice."""
    future: asyncio.Future[tuple[object, object]] = asyncio.get_running_loop().create_future()

    def done(result: object, error: BaseException | None) -> None:
        assert not future.done(), "done called twice"
        future.set_result((result, error))

    driver.start(op, done)  # type: ignore[arg-type]
    return future


def put(s: Session, body: bytes = b"x") -> object:
    return s.put(0, 0, 60, body)


def test_a_round_on_a_connected_link_runs_from_callbacks_and_one_that_connects_in_a_task() -> None:
    async def scenario() -> None:
        server, port = await shard(inserted())
        s, driver = session(port)
        first = started(driver, put(s))
        assert driver._tasks, "the first put connects: in a task"
        assert await asyncio.wait_for(first, 10) == (p.Inserted(1), None)
        second = started(driver, put(s))
        assert not driver._tasks, "connected and idle: no task"
        assert await asyncio.wait_for(second, 10) == (p.Inserted(2), None)
        driver.close()
        server.close()

    asyncio.run(scenario())


def test_a_link_that_closes_mid_round_ends_the_operation_with_its_error() -> None:
    async def scenario() -> None:
        calls = 0

        def answer(line: bytes) -> bytes | None:
            nonlocal calls
            if line.startswith(b"put"):
                calls += 1
                return b"INSERTED 1\r\n" if calls == 1 else b""  # the second put: gone
            return None

        server, port = await shard(answer)
        s, driver = session(port)
        assert (await asyncio.wait_for(started(driver, put(s)), 10))[1] is None
        result, error = await asyncio.wait_for(started(driver, put(s)), 10)
        assert result is None and isinstance(error, PutUncertain)  # sent, and no reply
        driver.close()
        server.close()

    asyncio.run(scenario())


async def silent_after_one_put() -> tuple[asyncio.Server, Session, ProxyDriver]:
    """A shard that answers one put and then nothing, and a session whose link is up."""
    answered = inserted()
    silent = False

    def answer(line: bytes) -> bytes | None:
        return None if silent else answered(line)

    server, port = await shard(answer)
    s, driver = session(port)
    assert (await asyncio.wait_for(started(driver, put(s)), 10))[1] is None
    silent = True
    return server, s, driver


def test_a_shard_that_never_answers_times_out_through_the_watchdog() -> None:
    async def scenario() -> None:
        server, s, driver = await silent_after_one_put()
        loop = asyncio.get_running_loop()
        begun = loop.time()
        result, error = await asyncio.wait_for(started(driver, put(s)), 10)
        assert result is None and isinstance(error, PutUncertain)
        assert 0.25 <= loop.time() - begun < 3.0  # the 0.3 s reply timeout
        driver.close()
        server.close()

    asyncio.run(scenario())


def test_closing_the_session_while_a_round_waits_ends_it_once() -> None:
    async def scenario() -> None:
        server, s, driver = await silent_after_one_put()
        waiting = started(driver, s.delete(1))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        driver.close()
        result, error = await asyncio.wait_for(waiting, 10)
        assert result is None and isinstance(error, asyncio.CancelledError)  # aborted
        server.close()

    asyncio.run(scenario())
