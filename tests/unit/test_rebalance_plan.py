"""The pure side of ``beanrouter rebalance``: placement with draining shards, the plan from a
scripted census, the journal's open moves, recovery decisions and the report."""

from __future__ import annotations

import io

import pytest

from beanrouter.core.errors import ConfigError
from beanrouter.core.rebalance import (
    EXIT_LEFT,
    EXIT_OK,
    EXIT_UNREACHABLE,
    JournalEntry,
    Report,
    TubeCounts,
    moved_tubes,
    pending_entries,
    plan_moves,
    rebalance_placement,
    recovery_action,
)
from beanrouter.core.ring import Placement
from beanrouter.router.config import config_from_servers, parse_config

NAMES = ("a", "b", "c")
SERVERS = [f"127.0.0.1:{11301 + i} {n}" for i, n in enumerate(NAMES)]


def tube_owned_by(placement: Placement, owner: str, prefix: str = "t") -> str:
    for i in range(10_000):
        if placement.owner(f"{prefix}{i}") == owner:
            return f"{prefix}{i}"
    raise AssertionError(owner)


def test_drain_field_parses_and_leaves_the_ring() -> None:
    config = parse_config(
        "servers:\n  - 127.0.0.1:1 a\n  - 127.0.0.1:2 b drain=true\n"
        "  - {host: 127.0.0.1, port: 3, name: c, drain: true}\n"
    )
    assert [s.drain for s in config.servers] == [False, True, True]
    assert config.draining == ("b", "c")
    placement = Placement.from_config(config)
    assert all(placement.preference(f"t{i}") == ("a",) for i in range(50))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("servers:\n  - 127.0.0.1:1 a drain=maybe\n  - 127.0.0.1:2 b\n", "servers[0].drain"),
        ("servers:\n  - {host: h, port: 1, drain: 1}\n  - 127.0.0.1:2 b\n", "servers[0].drain"),
        ("servers:\n  - 127.0.0.1:1 a drain=true\n", "servers"),
    ],
)
def test_drain_field_errors(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.yaml")
    assert info.value.field == field


def test_draining_shard_stays_a_consumer_of_the_tubes_it_held() -> None:
    full = Placement([(n, 1) for n in NAMES], failover=1)
    drained = Placement([(n, 1) for n in NAMES], failover=1, draining=["b"])
    for i in range(300):
        tube = f"t{i}"
        assert "b" not in drained.preference(tube)
        consumers = drained.consumers(tube)
        assert consumers[: len(drained.preference(tube))] == drained.preference(tube)
        # every shard the full ring placed the tube on is still looked at
        assert set(full.preference(tube)) <= set(consumers)
    # without draining, consumers are the preference
    assert full.consumers("x") == full.preference("x")


def test_rebalance_placement_drain_names() -> None:
    config = config_from_servers(SERVERS)
    assert rebalance_placement(config, ["c"]).draining == {"c"}
    with pytest.raises(ValueError, match="no shard"):
        rebalance_placement(config, ["zz"])
    with pytest.raises(ValueError, match="every shard"):
        rebalance_placement(config, NAMES)


def test_plan_moves_only_away_jobs() -> None:
    placement = Placement([(n, 1) for n in NAMES])
    ta = tube_owned_by(placement, "a")
    tb = tube_owned_by(placement, "b")
    census = {
        "a": {ta: TubeCounts(ready=5), tb: TubeCounts(delayed=2, reserved=1)},
        "b": {ta: TubeCounts(buried=3), tb: TubeCounts(ready=9), "empty": TubeCounts()},
        "c": {ta: TubeCounts(reserved=2)},
    }
    plan = plan_moves(census, placement)
    got = {(m.source, m.tube, m.target): m.counts for m in plan.moves}
    assert got == {
        ("a", tb, "b"): TubeCounts(delayed=2, reserved=1),
        ("b", ta, "a"): TubeCounts(buried=3),
        ("c", ta, "a"): TubeCounts(reserved=2),
    }
    assert plan.movable == 5


def test_plan_blocked_by_unreachable_owner() -> None:
    placement = Placement([(n, 1) for n in NAMES])
    ta = tube_owned_by(placement, "a")
    plan = plan_moves({"b": {ta: TubeCounts(ready=1)}}, placement, unreachable=["a"])
    assert plan.moves == ()
    assert [(m.source, m.target) for m in plan.blocked] == [("b", "a")]
    assert plan.unreachable == ("a",)


def test_plan_with_drain_moves_everything_off_the_drained_shard() -> None:
    config = config_from_servers(SERVERS)
    placement = rebalance_placement(config, ["b"])
    census = {"b": {f"t{i}": TubeCounts(ready=1) for i in range(40)}}
    plan = plan_moves(census, placement)
    assert len(plan.moves) == 40
    assert {m.target for m in plan.moves} <= {"a", "c"}


def test_moved_tubes() -> None:
    old = Placement([("a", 1), ("b", 1)])
    new = Placement([("a", 1), ("b", 1), ("c", 1)])
    tubes = [f"t{i}" for i in range(200)]
    changed = moved_tubes(old, new, tubes)
    assert changed
    assert all(after == "c" for _t, _before, after in changed)  # adding c only moves tubes to c


def entry(state: str = "ready", new: int | None = 7) -> JournalEntry:
    return JournalEntry("b", 3, "t", "a", state, 10, "d", new=new)


def test_pending_entries_reads_open_moves() -> None:
    e1 = JournalEntry("b", 1, "t", "a", "ready", 5, "x")
    e2 = JournalEntry("b", 2, "t", "a", "buried", 6, "y")
    e3 = JournalEntry("c", 1, "u", "a", "delayed", 7, "z")
    lines = [e1.begin_line(), e2.begin_line(), e3.begin_line()]
    e1.new, e2.new = 11, 12
    lines += [e1.put_line(), e1.done_line(), e2.put_line(), '{"op": "put", "src"']  # torn
    pending = pending_entries(lines)
    assert [(p.source, p.job, p.new, p.state) for p in pending] == [
        ("b", 2, 12, "buried"),
        ("c", 1, None, "delayed"),
    ]
    assert pending[0].priority == 6 and pending[0].digest == "y"


def test_recovery_actions() -> None:
    # no copy known: a duplicate is possible only if the original is still there
    assert recovery_action(entry(new=None), "ready", True, None) == "maybe_duplicate"
    assert recovery_action(entry(new=None), None, False, None) == "nothing"
    # the copy exists, the original too (the mover died before deleting it)
    assert recovery_action(entry(), "ready", True, "ready") == "delete_source"
    assert recovery_action(entry(), "ready", True, None) == "delete_source"  # copy consumed
    assert recovery_action(entry(), "reserved", True, "ready") == "duplicate_held"
    # an id reused after a restart without binlog is not the original
    assert recovery_action(entry(), "ready", False, "ready") == "nothing"
    # buried: the copy must end up buried
    assert recovery_action(entry("buried"), None, False, "delayed") == "bury_copy"
    assert recovery_action(entry("buried"), "buried", True, "delayed") == "delete_source_bury_copy"
    assert recovery_action(entry("buried"), "buried", True, "buried") == "delete_source"
    assert recovery_action(entry("buried"), None, False, "buried") == "nothing"


def test_report_json_and_exit_codes() -> None:
    report = Report()
    assert report.exit_code() == EXIT_OK
    report.record_move("b", "t", "a", "ready", 3)
    report.record_move("b", "t", "a", "buried")
    report.record_move("c", "u", "a", "delayed", 2)
    assert report.exit_code() == EXIT_OK
    report.record_left("b", "t", "reserved", 1)
    report.record_left("b", "t", "reserved", 0)
    assert report.exit_code() == EXIT_LEFT
    data = report.to_json()
    assert data["moved_total"] == 6
    assert data["by_tube"] == {"t": 4, "u": 2}
    assert data["by_shard"] == {"a": {"out": 0, "in": 6}, "b": {"out": 4, "in": 0},
                                "c": {"out": 2, "in": 0}}  # fmt: skip
    assert data["left"] == [{"shard": "b", "tube": "t", "jobs": 1, "reasons": {"reserved": 1}}]
    assert data["moves"][0] == {"source": "b", "tube": "t", "target": "a", "jobs": 4,
                                "states": {"buried": 1, "ready": 3}}  # fmt: skip
    text = report.render()
    assert "moved 6 jobs" in text and "1 left because reserved" in text
    report.unreachable["c"] = "refused"
    assert report.exit_code() == EXIT_UNREACHABLE
    dry = Report(dry_run=True)
    dry.record_move("b", "t", "a", "ready")
    assert dry.exit_code() == EXIT_LEFT and "would move 1 job" in dry.render()


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_bar_only_on_a_terminal() -> None:
    from beanrouter.router.rebalance import Progress

    quiet = FakeTerminal(tty=False)
    p = Progress(quiet)
    p.start(3)
    p.step()
    p.finish()
    assert quiet.getvalue() == ""
    tty = FakeTerminal(tty=True)
    p = Progress(tty)
    p.start(2)
    p.step()
    p.step()
    p.finish()
    out = tty.getvalue()
    assert out.startswith("\rrebalance [")
    assert "2/2 jobs" in out and out.endswith("\n")


def test_report_prometheus_text() -> None:
    report = Report()
    report.record_move("b", 'we"ird', "a", "ready", 3)
    report.record_left("b", "t", "reserved", 1)
    text = report.prometheus(1700000000.0)
    labels = '{source="b",target="a",tube="we\\"ird",state="ready"}'
    assert f"beanrouter_rebalance_jobs_moved_total{labels} 3" in text
    assert 'beanrouter_rebalance_jobs_left{shard="b",tube="t",reason="reserved"} 1' in text
    assert "beanrouter_rebalance_exit_code 1" in text
    assert "beanrouter_rebalance_last_run_timestamp_seconds 1700000000.000" in text
    assert text.endswith("\n")


def test_a_begun_move_reads_back_whole_from_the_journal() -> None:
    # The floor (the target's highest id before the put) bounds the search for a copy whose
    # put was never acknowledged: it was read back as 0, so the search started at id 1.
    from beanrouter.core.rebalance import JournalEntry, pending_entries

    entry = JournalEntry("s1", 7, "t", "s0", "ready", 5, "ab" * 32, floor=123_456)
    (back,) = pending_entries([entry.begin_line()])
    assert back == entry
