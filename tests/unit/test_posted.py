"""Posted commands in the asyncio driver (``Send.posted``): the replies a posted ``use`` must
get are checked as they arrive, never handed to a round, and counted until they have come
(``Posted``, the barrier of commands that observe which tubes exist)."""

from __future__ import annotations

import asyncio

from beanrouter.protocol import Inserted, Using
from beanrouter.router.aio_driver import Posted, Stream


def test_posted_replies_are_checked_and_dropped_before_the_rest() -> None:
    posted = Posted()
    stream = Stream()
    stream.posted = posted
    stream.expect.extend([Using("a"), Using("default")])
    posted.sent(2)
    stream.data_received(b"USING a\r\nUSING def")
    assert stream.got == [] and posted.pending == 1
    stream.data_received(b"ault\r\nINSERTED 5\r\n")
    assert stream.got == [Inserted(5)] and posted.pending == 0 and stream.failed is None


def test_a_posted_reply_that_differs_fails_the_link_and_is_no_longer_awaited() -> None:
    posted = Posted()
    stream = Stream()
    stream.posted = posted
    stream.expect.extend([Using("a"), Using("b")])
    posted.sent(2)
    stream.data_received(b"OUT_OF_MEMORY\r\n")
    assert stream.failed is not None and "posted" in stream.failed
    assert posted.pending == 0 and not stream.expect


def test_the_barrier_waits_for_posted_replies_and_no_longer() -> None:
    async def main() -> list[str]:
        posted = Posted()
        order: list[str] = []
        await posted.drained(1.0)  # nothing posted: at once
        posted.sent(1)

        async def observer() -> None:
            await posted.drained(5.0)
            order.append("observed")

        task = asyncio.create_task(observer())
        await asyncio.sleep(0.01)
        order.append("reply")
        posted.arrived(1)
        await task
        posted.sent(1)
        await posted.drained(0.01)  # a reply that never comes: not waited for long
        order.append("timed out")
        return order

    assert asyncio.run(main()) == ["reply", "observed", "timed out"]


def test_a_drained_wait_that_times_out_leaves_nothing_behind() -> None:
    # Each observer command waits for the posted replies, at most its timeout: one that gave
    # up stayed in the list until every posted reply came (unbounded while a shard held back).
    async def main() -> None:
        posted = Posted()
        posted.sent(1)
        for _ in range(3):
            await posted.drained(0.001)
        assert posted._drained == []
        waiter = asyncio.ensure_future(posted.drained(5))
        await asyncio.sleep(0)
        posted.arrived(1)
        await asyncio.wait_for(waiter, 1)
        assert posted._drained == [] and posted.pending == 0

    asyncio.run(main())
