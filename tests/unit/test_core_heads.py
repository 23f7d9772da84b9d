"""The process's record of the shards' heads (``beanrouter.core.heads``), with a scripted clock."""

from __future__ import annotations

from beanrouter.core.heads import EMPTY, FRESH, Head, Heads


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fresh(clock: Clock) -> tuple[Heads, Clock]:
    return Heads(clock), clock


def head(local: int, priority: int, clock: Clock, order: int = -1) -> Head:
    return Head(local, priority, clock.now, order, clock.now + FRESH)


def test_a_look_is_recorded_and_trusted_for_fresh_seconds() -> None:
    heads, clock = fresh(Clock())
    seq = heads.seq("s0")
    heads.record("s0", "a", head(7, 10, clock), seq)
    got = heads.get("s0", "a", clock.now)
    assert got is not None and (got.local, got.priority) == (7, 10)
    assert heads.get("s0", "b", clock.now) is None
    assert heads.get("s1", "a", clock.now) is None
    clock.now += FRESH
    assert heads.get("s0", "a", clock.now) is None  # no longer trusted


def test_a_look_answered_after_a_change_there_is_not_recorded() -> None:
    heads, clock = fresh(Clock())
    seq = heads.seq("s0")
    heads.changed("s0")  # a release was sent meanwhile
    heads.record("s0", "a", head(7, 10, clock), seq)
    assert heads.get("s0", "a", clock.now) is None
    # a change on another shard does not matter
    seq = heads.seq("s0")
    heads.changed("s1")
    heads.record("s0", "a", head(7, 10, clock), seq)
    assert heads.get("s0", "a", clock.now) is not None


def test_changed_forgets_the_shard_or_one_tube_and_a_pause_every_shard() -> None:
    heads, clock = fresh(Clock())
    for shard in ("s0", "s1"):
        for tube in ("a", "b"):
            heads.record(shard, tube, head(1, 1, clock), heads.seq(shard))
    heads.changed("s0", "a")
    assert heads.get("s0", "a", clock.now) is None
    assert heads.get("s0", "b", clock.now) is not None
    heads.changed("s0")
    assert heads.get("s0", "b", clock.now) is None
    seq = heads.seq("s1")
    heads.changed_everywhere("b")
    assert heads.get("s1", "b", clock.now) is None
    assert heads.get("s1", "a", clock.now) is not None
    heads.record("s1", "b", head(1, 1, clock), seq)  # a look in flight during the pause
    assert heads.get("s1", "b", clock.now) is None


def test_a_put_becomes_the_head_only_when_more_urgent_or_the_tube_was_empty() -> None:
    heads, clock = fresh(Clock())
    heads.record("s0", "a", Head(EMPTY, 0, clock.now, -1, clock.now + FRESH), heads.seq("s0"))
    heads.record("s0", "b", head(5, 100, clock), heads.seq("s0"))
    heads.put("s0", "a", 9, 500, 0, 1)
    got = heads.get("s0", "a", clock.now)
    assert got is not None and (got.local, got.priority, got.order) == (9, 500, 1)
    heads.put("s0", "b", 10, 100, 0, 2)  # same priority, newer: not the head
    got = heads.get("s0", "b", clock.now)
    assert got is not None and got.local == 5
    heads.put("s0", "b", 11, 99, 0, 3)
    got = heads.get("s0", "b", clock.now)
    assert got is not None and got.local == 11
    heads.put("s0", "b", 12, 0, 5, 4)  # delayed: it may become the head at any time
    assert heads.get("s0", "b", clock.now) is None


def test_a_put_acknowledged_during_a_look_that_could_beat_what_it_found() -> None:
    heads, clock = fresh(Clock())
    seq = heads.seq("s0")
    heads.put("s0", "a", 9, 50, 0, 1)  # acknowledged while the look was out
    heads.record("s0", "a", head(3, 100, clock), seq)  # the look saw job 3 first
    assert heads.get("s0", "a", clock.now) is None
    seq = heads.seq("s0")
    heads.put("s0", "a", 10, 100, 0, 2)  # as urgent as what the look found: it stays the head
    heads.record("s0", "a", head(3, 100, clock), seq)
    got = heads.get("s0", "a", clock.now)
    assert got is not None and got.local == 3
    seq = heads.seq("s0")
    heads.put("s0", "a", 11, 7, 0, 3)
    heads.record("s0", "a", Head(EMPTY, 0, clock.now, -1, clock.now + FRESH), seq)
    assert heads.get("s0", "a", clock.now) is None  # empty, as the look saw it before the put
    seq = heads.seq("s0")
    heads.put("s0", "b", 12, 7, 0, 4)  # another tube
    heads.record("s0", "a", head(3, 100, clock), seq)
    assert heads.get("s0", "a", clock.now) is not None


def test_more_puts_during_a_look_than_are_kept() -> None:
    heads, clock = fresh(Clock())
    seq = heads.seq("s0")
    for i in range(20):
        heads.put("s0", "a", 100 + i, 1000, 0, i)
    heads.record("s0", "a", head(3, 1000, clock), seq)
    assert heads.get("s0", "a", clock.now) is None


def test_take_marks_the_head_and_reserved_forgets_it() -> None:
    heads, clock = fresh(Clock())
    heads.record("s0", "a", head(3, 10, clock), heads.seq("s0"))
    heads.record("s0", "b", head(4, 10, clock), heads.seq("s0"))
    heads.take("s0", "a")
    got = heads.get("s0", "a", clock.now)
    assert got is not None and got.taken
    heads.record("s0", "a", head(5, 11, clock), heads.seq("s0"))  # the taker's look
    got = heads.get("s0", "a", clock.now)
    assert got is not None and (got.local, got.taken) == (5, False)
    heads.reserved("s0", 4)  # reserved by another client of the process
    assert heads.get("s0", "b", clock.now) is None
    assert heads.get("s0", "a", clock.now) is not None
