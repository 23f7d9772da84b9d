"""The routing core's session (``beanrouter.core.session``) with scripted shard replies.

No servers, no sockets: each test drives an operation round by round (``core_script``), checks
what it sends where, and answers with protocol reply objects or link failures.
"""

from __future__ import annotations

import math

import pytest

from beanrouter import protocol as p
from beanrouter.core import Cluster, Failure, FailureKind, Session, ids
from beanrouter.core.answer import answer
from beanrouter.core.errors import (
    JobIdError,
    NotFound,
    PutUncertain,
    ReservationLost,
    ShardUnavailable,
    UnexpectedReply,
)
from beanrouter.core.reserve import expire_held
from beanrouter.protocol import (
    DELETED,
    DRAINING,
    NOT_FOUND,
    TOUCHED,
    Found,
    Inserted,
    Ok,
    Reserved,
    Using,
    encode_put,
    format_list,
    parse_mapping,
)

from .core_script import (
    NAMES,
    Clock,
    Script,
    auto,
    commands,
    job_stats,
    make,
    run_auto,
    shard_stats,
    watch_only,
)


def test_put_goes_to_the_owner_with_a_global_id() -> None:
    cluster, s, _ = make()
    run_auto(s.use("t1"))
    assert s.using == "t1"
    run = Script(s.put(10, 0, 60, b"hi"))
    (send,) = run.now.sends
    assert send.link.shard.name == "s1"
    assert send.data == encode_put(10, 0, 60, b"hi") and send.replies == 1
    assert not run.now.first
    run.answer({"s1": [Inserted(7)]})
    assert run.value() == Inserted(ids.encode(1, 7))
    assert cluster.metrics.failovers == 0


def test_put_sends_use_first_when_the_link_uses_another_tube() -> None:
    _, s, _ = make()
    s.using = "t1"  # as if ``use`` had found s1 down
    run = Script(s.put(1, 0, 5, b"x"))
    assert run.data() == {"s1": [b"use t1", b"put 1 0 5 1", b"x"]}
    assert run.now.sends[0].replies == 2
    run.answer({"s1": [Using("t1"), Inserted(3)]})
    assert run.value() == Inserted(ids.encode(1, 3))
    run = Script(s.put(1, 0, 5, b"y"))
    assert run.data() == {"s1": [b"put 1 0 5 1", b"y"]}


@pytest.mark.parametrize("kind", [FailureKind.CONNECT, FailureKind.SEND])
def test_put_fails_over_when_nothing_was_sent(kind: FailureKind) -> None:
    cluster, s, _ = make(failover=1)
    tube = "t1"
    owner, successor = cluster.preference(tube)
    run_auto(s.use(tube))
    run = Script(s.put(1, 0, 5, b"x"))
    assert list(run.sends()) == [owner]
    run.answer({owner: Failure(kind, "refused")})
    assert list(run.sends()) == [successor]
    run.answer({successor: [Using(tube), Inserted(9)]})
    assert run.value() == Inserted(ids.encode(cluster.shards[successor].id, 9))
    assert cluster.metrics.failovers == 1
    assert cluster.shards[owner].health.failures == 1
    assert cluster.metrics.link_failures == {owner: 1}
    assert owner not in s.links  # the failed link is forgotten


def test_put_with_a_lost_reply_is_uncertain_and_not_retried() -> None:
    cluster, s, _ = make(failover=1)
    run_auto(s.use("t1"))
    run = Script(s.put(1, 0, 5, b"x"))
    run.answer({"s1": Failure(FailureKind.LOST, "reset")})
    with pytest.raises(PutUncertain) as info:
        run.value()
    assert info.value.shard == "s1"
    assert cluster.metrics.put_uncertain == 1
    assert len(run.rounds) == 1


def test_put_on_a_stale_link_is_retried_on_a_new_link_of_the_same_shard() -> None:
    cluster, s, _ = make(failover=1)
    run_auto(s.use("t1"))
    run = Script(s.put(1, 0, 5, b"x"))
    first = run.now.sends[0].link
    run.answer({"s1": Failure(FailureKind.STALE, "closed by the shard")})
    (send,) = run.now.sends
    assert send.link.shard.name == "s1" and send.link is not first
    assert commands(send.data) == [b"use t1", b"put 1 0 5 1", b"x"]  # a new link uses default
    run.answer({"s1": [Using("t1"), Inserted(4)]})
    assert run.value() == Inserted(ids.encode(1, 4))
    assert cluster.shards["s1"].health.failures == 0  # the shard is not to blame
    assert cluster.metrics.failovers == 0


def test_put_answered_draining_everywhere_is_draining() -> None:
    cluster, s, _ = make(failover=2)
    run_auto(s.use("t1"))
    run = Script(s.put(1, 0, 5, b"x"))
    tried = []
    while not run.done:
        (name,) = run.sends()
        tried.append(name)
        send = run.sends()[name]
        run.answer({name: [Using("t1")] * (send.replies - 1) + [DRAINING]})
    assert run.value() == DRAINING
    assert tried == list(cluster.preference("t1")) and len(tried) == 3
    assert all(sh.health.failures == 0 for sh in cluster.shards.values())


def test_put_skips_a_shard_that_is_down() -> None:
    cluster, s, clock = make(failover=1)
    run_auto(s.use("t1"))
    owner, successor = cluster.preference("t1")
    for _ in range(cluster.config.server_failure_limit):
        cluster.shards[owner].health.failure("boom")
    run = Script(s.put(1, 0, 5, b"x"))
    assert list(run.sends()) == [successor]
    run.answer({successor: [Using("t1"), Inserted(1)]})
    assert run.value() == Inserted(ids.encode(cluster.shards[successor].id, 1))
    clock.t += 60  # the probe is due: the owner is tried again
    run = Script(s.put(1, 0, 5, b"x"))
    assert list(run.sends()) == [owner]


def test_put_with_every_shard_down_raises() -> None:
    _, s, _ = make(failover=1)
    run_auto(s.use("t1"))
    run = Script(s.put(1, 0, 5, b"x"))
    while not run.done:
        run.answer({name: Failure(FailureKind.CONNECT, "refused") for name in run.sends()})
    with pytest.raises(ShardUnavailable):
        run.value()


# ---- held jobs ----------------------------------------------------------------------------------


def _reserve_on_s1(s: Session, local: int, pri: int = 5, ttr: int = 60) -> None:
    """A direct reserve (only s1 holds the watched tube) answered with job ``local``."""
    run = Script(s.reserve(None))
    (send,) = run.now.sends
    assert send.link.shard.name == "s1" and commands(send.data)[-1] == b"reserve"
    assert run.now.first
    run.reply({send.link: auto(send, Reserved(local, b"job"))})
    assert run.data() == {"s1": [b"stats-job %d" % local]}
    run.auto(s1=[job_stats(local, "t1", pri, ttr=ttr, state="reserved")])
    assert run.value() == Reserved(ids.encode(1, local), b"job")


def _session_on_t1() -> tuple[Cluster, Session, Clock]:
    cluster, s, clock = make()
    watch_only(s, ["t1"])
    return cluster, s, clock


def test_job_commands_go_to_the_link_holding_the_job() -> None:
    cluster, s, _ = _session_on_t1()
    _reserve_on_s1(s, 1)
    a = s.held[ids.encode(1, 1)].link
    _reserve_on_s1(s, 2)  # the second wait runs on a link that holds no job
    b = s.held[ids.encode(1, 2)].link
    assert a is not b
    for local, link in ((1, a), (2, b)):
        run = Script(s.delete(ids.encode(1, local)))
        (send,) = run.now.sends
        assert send.link is link and send.data == b"delete %d\r\n" % local
        run.reply({link: [DELETED]})
        assert run.value() == DELETED
    assert s.held == {}
    assert cluster.metrics.give_backs == 0


def test_a_failed_link_loses_its_jobs_once() -> None:
    _, s, _ = _session_on_t1()
    _reserve_on_s1(s, 1)
    gid = ids.encode(1, 1)
    link = s.held[gid].link
    run = Script(s.touch(gid))
    assert run.now.sends[0].link is link
    run.reply({link: Failure(FailureKind.LOST, "reset")})
    with pytest.raises(ShardUnavailable):
        run.value()
    assert gid not in s.held and s.lost == {gid: "s1"}
    run = Script(s.delete(gid))
    with pytest.raises(ReservationLost) as info:
        run.value()
    assert info.value.shard == "s1"
    assert run.rounds == []  # nothing was sent
    run = Script(s.delete(gid))  # once: now an ordinary command on the main link
    (send,) = run.now.sends
    assert send.link is not link and send.data == b"delete 1\r\n"
    run.reply({send.link: [NOT_FOUND]})
    assert run.value() == NOT_FOUND


def test_touch_renews_the_deadline_of_a_held_job() -> None:
    _, s, clock = _session_on_t1()
    _reserve_on_s1(s, 1, ttr=10)
    gid = ids.encode(1, 1)
    assert s.held[gid].deadline == clock.t + 10
    clock.t += 5
    run = Script(s.touch(gid))
    run.reply({s.held[gid].link: [TOUCHED]})
    assert run.value() == TOUCHED
    assert s.held[gid].deadline == clock.t + 10


def test_held_jobs_are_looked_at_for_expiry_only_once_the_earliest_deadline_passed() -> None:
    _, s, clock = _session_on_t1()
    assert s.expiry == math.inf  # nothing held
    start = clock.t
    _reserve_on_s1(s, 1, ttr=10)
    gid = ids.encode(1, 1)
    assert s.expiry <= start + 10  # a lower bound of every deadline
    clock.t = start + 5
    run = Script(s.touch(gid))
    run.reply({s.held[gid].link: [TOUCHED]})
    assert s.held[gid].deadline == start + 15 and s.expiry <= start + 10
    clock.t = start + 11  # past the old deadline, before the touched one
    expire_held(s, clock.t)
    assert gid in s.held and s.expiry == start + 15  # recomputed: the touched deadline
    clock.t = start + 15
    expire_held(s, clock.t)
    assert gid not in s.held and s.expiry == math.inf


def test_abandon_closes_the_links_left_owing() -> None:
    _, s, _ = make()
    run_auto(s.use("t1"))
    run = Script(s.put(1, 0, 5, b"x"))
    link = run.now.sends[0].link
    assert link.owed == 1
    run.op.close()  # interrupted: the shell gives up on the operation
    assert s.abandon() == [link]
    assert link.closed and "s1" not in s.links
    assert s.abandon() == []


def test_abandon_spares_links_that_owe_nothing() -> None:
    _, s, _ = make()
    run_auto(s.use("t1"))
    run = Script(s.put(1, 0, 5, b"x"))
    run.answer({"s1": [Inserted(1)]})
    assert s.abandon() == []
    assert "s1" in s.links


# ---- by id and merged admin -----------------------------------------------------------------


def test_stats_job_id_is_the_global_id() -> None:
    _, s, _ = make()
    gid = ids.encode(1, 42)
    run = Script(s.stats_job(gid))
    assert run.data() == {"s1": [b"stats-job 42"]}
    run.answer({"s1": [job_stats(42, "t1", 3)]})
    reply = run.value()
    assert isinstance(reply, Ok)
    stats = parse_mapping(reply.body)
    assert stats["id"] == gid and stats["tube"] == "t1" and stats["pri"] == 3
    assert list(stats) == list(parse_mapping(job_stats(42, "t1", 3).body))  # key order kept


def test_peek_returns_the_global_id() -> None:
    _, s, _ = make()
    run = Script(s.peek(ids.encode(2, 5)))
    assert run.data() == {"s2": [b"peek 5"]}
    run.answer({"s2": [Found(5, b"b")]})
    assert run.value() == Found(ids.encode(2, 5), b"b")


def _server_stats(i: int) -> Ok:
    return shard_stats(
        current_jobs_ready=i, cmd_put=10 * i, current_tubes=2, current_connections=2,
        pid=100 + i, version="1.12", uptime=50, id=f"shard{i}",
    )  # fmt: skip


def test_stats_merged() -> None:
    _, s, _ = make()
    run = Script(s.stats())
    assert run.data() == {name: [b"stats", b"list-tubes"] for name in NAMES}
    run.answer(
        {f"s{i}": [_server_stats(i), Ok(format_list(["default", f"t{i}"]))] for i in range(3)}
    )
    reply = run.value()
    assert isinstance(reply, Ok)
    stats = parse_mapping(reply.body)
    assert stats["current-jobs-ready"] == 3 and stats["cmd-put"] == 30
    assert stats["current-tubes"] == 4
    assert stats["shards"] == 3 and stats["shards-up"] == 3


def test_stats_with_local_counters_is_one_servers_view() -> None:
    _, s, _ = make()
    run = Script(s.stats({"pid": 7, "current-connections": 1, "id": "proxy", "uptime": 3}))
    run.answer(
        {f"s{i}": [_server_stats(i), Ok(format_list(["default", f"t{i}"]))] for i in range(3)}
    )
    reply = run.value()
    assert isinstance(reply, Ok)
    stats = parse_mapping(reply.body)
    assert list(stats) == list(parse_mapping(_server_stats(0).body))  # one server's keys, in order
    assert stats["pid"] == 7 and stats["current-connections"] == 1 and stats["id"] == "proxy"
    assert stats["uptime"] == 3
    assert stats["current-jobs-ready"] == 3 and stats["cmd-put"] == 30
    assert "shards" not in stats and "shards-up" not in stats


def test_stats_when_no_shard_answers_raises() -> None:
    _, s, _ = make()
    run = Script(s.stats())
    run.answer({name: Failure(FailureKind.CONNECT, "refused") for name in NAMES})
    with pytest.raises(ShardUnavailable):
        run.value()


def test_a_reload_takes_the_new_failover_depth() -> None:
    from beanrouter.core import Cluster
    from beanrouter.router.config import config_from_servers

    servers = ["127.0.0.1:1 a id=0", "127.0.0.1:2 b id=1", "127.0.0.1:3 c id=2"]
    cluster = Cluster(config_from_servers(servers, failover=0))
    assert len(cluster.preference("t1")) == 1
    cluster.reconfigure(config_from_servers(servers, failover=2))
    assert len(cluster.preference("t1")) == 3


@pytest.mark.parametrize(
    ("result", "word"),
    [
        (JobIdError("job id 7 names shard id 3, not in this cluster"), p.NOT_FOUND),
        (ReservationLost("delete 5: the connection to shard a failed", "a"), p.NOT_FOUND),
        (NotFound("NOT_FOUND"), p.NOT_FOUND),
        (ShardUnavailable("no shard can take a put", (("a", "refused"),)), p.INTERNAL_ERROR),
        (PutUncertain("put: no reply", shard="a", tube="t"), p.INTERNAL_ERROR),
        (UnexpectedReply("use t: unexpected reply"), p.INTERNAL_ERROR),
        (p.ProtocolError("bad reply"), p.INTERNAL_ERROR),
        (p.DELETED, p.DELETED),
        (p.Inserted(9), p.Inserted(9)),
    ],
)
def test_answer_maps_cluster_trouble_to_beanstalkd_words(result: object, word: p.Reply) -> None:
    assert answer(result).encode() == word.encode()  # type: ignore[arg-type]
