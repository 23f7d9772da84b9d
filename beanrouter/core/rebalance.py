"""``beanrouter rebalance``'s decisions, pure: which jobs go where, what an interrupted move left,
what the run reports (no sockets, no clock; the shell is ``beanrouter.router.rebalance``).

A job is *away* when it sits on a shard that is not its tube's owner under the placement the
rebalance uses (the configuration's ring without its draining shards, nor those named with
``--drain``). ``plan_moves`` turns a census of the shards (``stats-tube`` counts per shard and
tube) into one ``TubeMove`` per (shard, tube) with away jobs; ``Report`` gathers what the shell
did and renders it as text or JSON, with the exit status.

Crash safety rests on a journal of moves (``JournalEntry``, one JSON line per step, written by
the shell before and after each step): ``begin`` before the copy is put on the owner, ``put``
with the copy's id once the owner acknowledged it, ``done`` once the original is deleted (and,
for a buried job, the copy buried). ``pending_entries`` reads back the moves a killed run left
open and ``recovery_action`` decides, from what the shards say now, how each is closed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..protocol import StatValue
from .config import ClusterConfig
from .ring import Placement

__all__ = [
    "BURIED_HOLD",
    "DELAY_MARGIN",
    "EXIT_LEFT",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "JOURNAL_VERSION",
    "Census",
    "JobState",
    "JournalEntry",
    "Plan",
    "Report",
    "TubeCounts",
    "TubeMove",
    "away_by_tube",
    "compare_text",
    "moved_tubes",
    "pending_entries",
    "plan_moves",
    "rebalance_placement",
    "recovery_action",
]

EXIT_OK = 0
"""Every away job was moved (or, with ``--dry-run``, nothing is away)."""
EXIT_LEFT = 1
"""Some away jobs were left (reserved by a consumer, appeared during the run, an interrupted
move whose duplicate could not be removed) or, with ``--dry-run``, some would move."""
EXIT_USAGE = 2
"""Bad configuration or usage (unknown ``--drain`` name, every shard drained, journal busy)."""
EXIT_UNREACHABLE = 3
"""A shard did not answer: its away jobs, or the jobs bound to it, were not moved."""

DELAY_MARGIN = 2
"""Delayed jobs with fewer seconds left than this are not copied while delayed (the copy could
become ready before the original is deleted); the run waits for them to become ready and moves
them as ready jobs."""

BURIED_HOLD = 7 * 86_400
"""Delay given to the copy of a buried job between its put and its bury (a few milliseconds),
so that no consumer can reserve it meanwhile. A run killed in between leaves the copy delayed
this long; the next run buries it (``recovery_action``)."""

JOURNAL_VERSION = 1

JobState = Literal["ready", "delayed", "buried", "reserved"]
_STATES: tuple[JobState, ...] = ("ready", "delayed", "buried", "reserved")


@dataclass(frozen=True, slots=True)
class TubeCounts:
    """A tube's jobs on one shard, by state (``stats-tube``'s ``current-jobs-*``)."""

    ready: int = 0
    delayed: int = 0
    buried: int = 0
    reserved: int = 0

    @classmethod
    def from_stats(cls, stats: Mapping[str, StatValue]) -> TubeCounts:
        def count(key: str) -> int:
            value = stats.get(key, 0)
            return value if isinstance(value, int) else 0

        return cls(
            ready=count("current-jobs-ready"),
            delayed=count("current-jobs-delayed"),
            buried=count("current-jobs-buried"),
            reserved=count("current-jobs-reserved"),
        )

    @property
    def movable(self) -> int:
        """Jobs a rebalance may move now (every state but reserved)."""
        return self.ready + self.delayed + self.buried

    @property
    def total(self) -> int:
        return self.movable + self.reserved

    def as_dict(self) -> dict[str, int]:
        return {s: getattr(self, s) for s in _STATES}


Census = Mapping[str, Mapping[str, TubeCounts]]
"""Shard name -> tube -> its jobs there."""


def rebalance_placement(config: ClusterConfig, drain: Iterable[str] = ()) -> Placement:
    """The placement a rebalance moves jobs to: ``config``'s ring without its draining shards
    nor the ``drain`` names.

    Raises:
        ValueError: a ``drain`` name is not a shard of ``config``, or every shard would drain.
    """
    names = [s.name for s in config.servers]
    extra = [name for name in drain if name not in names]
    if extra:
        raise ValueError(f"--drain {extra[0]}: no shard of that name (shards: {', '.join(names)})")
    draining = set(config.draining) | set(drain)
    if len(draining) == len(names):
        raise ValueError("every shard would drain: at least one must keep the jobs")
    return Placement([(s.name, s.weight) for s in config.servers], config.failover, draining)


@dataclass(frozen=True, slots=True)
class TubeMove:
    """The away jobs of ``tube`` on ``source``, to go to ``target`` (the tube's owner)."""

    source: str
    tube: str
    target: str
    counts: TubeCounts


@dataclass(frozen=True, slots=True)
class Plan:
    """What a rebalance will do.

    Attributes:
        moves: the (shard, tube) pairs with away jobs whose owner answered.
        blocked: pairs whose owner did not answer (nothing can be moved there).
        unreachable: shards that did not answer (their own jobs are not known).
    """

    moves: tuple[TubeMove, ...]
    blocked: tuple[TubeMove, ...] = ()
    unreachable: tuple[str, ...] = ()

    @property
    def movable(self) -> int:
        return sum(m.counts.movable for m in self.moves)


def plan_moves(census: Census, placement: Placement, unreachable: Sequence[str] = ()) -> Plan:
    """The moves that bring every job of ``census`` to its tube's owner under ``placement``.

    Shards and tubes are taken in name order (a stable plan for a stable census). Pairs with no
    job at all are left out; pairs with only reserved jobs are kept (they are reported as left).
    """
    down = set(unreachable)
    moves: list[TubeMove] = []
    blocked: list[TubeMove] = []
    for shard in sorted(census):
        for tube in sorted(census[shard]):
            counts = census[shard][tube]
            if counts.total == 0:
                continue
            owner = placement.owner(tube)
            if owner == shard:
                continue
            move = TubeMove(shard, tube, owner, counts)
            (blocked if owner in down else moves).append(move)
    return Plan(tuple(moves), tuple(blocked), tuple(sorted(down)))


def moved_tubes(old: Placement, new: Placement, tubes: Iterable[str]) -> list[tuple[str, str, str]]:
    """``(tube, old owner, new owner)`` for each of ``tubes`` whose owner differs."""
    changed = []
    for tube in sorted(set(tubes)):
        before, after = old.owner(tube), new.owner(tube)
        if before != after:
            changed.append((tube, before, after))
    return changed


def away_by_tube(plan: Plan) -> dict[str, list[tuple[str, str, int]]]:
    """Tube -> ``(shard, owner, jobs)`` for every shard holding jobs of it away from home
    (blocked pairs included)."""
    result: dict[str, list[tuple[str, str, int]]] = {}
    for m in (*plan.moves, *plan.blocked):
        result.setdefault(m.tube, []).append((m.source, m.target, m.counts.total))
    return dict(sorted(result.items()))


def compare_text(
    old: ClusterConfig,
    new: ClusterConfig,
    tubes: Iterable[str],
    plan: Plan | None = None,
) -> str:
    """What ``check-config NEW --against OLD`` adds: the tubes whose owner changes, and, with a
    ``plan`` made from the shards' census under NEW, the jobs away from home per tube."""
    before, after = Placement.from_config(old), Placement.from_config(new)
    names = sorted(set(tubes))
    changed = moved_tubes(before, after, names)
    old_name = old.source or "the old configuration"
    lines = [f"against {old_name}: {len(changed)} of {len(names)} tube(s) change owner"]
    lines += [f"  tube {t!r}: {a} -> {b}" for t, a, b in changed]
    old_shards = {s.name for s in old.servers}
    new_shards = {s.name for s in new.servers}
    for name in sorted(new_shards - old_shards):
        lines.append(f"  shard {name} is new")
    for name in sorted(old_shards - new_shards):
        lines.append(f"  shard {name} is gone: empty it first (drain: true, then rebalance)")
    if plan is not None:
        away = away_by_tube(plan)
        total = sum(n for rows in away.values() for _s, _o, n in rows)
        lines.append(f"jobs away from their owner under the new configuration: {total}")
        for tube, rows in away.items():
            where = ", ".join(f"{n} on {shard}" for shard, _owner, n in rows)
            lines.append(f"  tube {tube!r} (owner {rows[0][1]}): {where}")
        for name in plan.unreachable:
            lines.append(f"  shard {name} did not answer: its jobs are not counted")
        if total:
            lines.append("run 'beanrouter rebalance --config NEW' to move them")
    return "\n".join(lines) + "\n"


# ---- the journal ------------------------------------------------------------------------------


@dataclass(slots=True)
class JournalEntry:
    """One move as the journal records it.

    Attributes:
        source, job: the original (shard name, its local id there).
        tube, target: the tube and the shard the copy goes to.
        state: the original's state when the move began (``ready``, ``delayed``, ``buried``).
        priority: the original's priority (the copy's, and a buried copy's bury priority).
        digest: SHA-256 of the body (hex), to recognise the original after a restart and find a
            copy whose id the journal missed.
        floor: the highest id known on ``target`` before the put: a copy whose put was not
            acknowledged before the mover died has a higher id (ids only grow).
        new: the copy's id on ``target`` once the put was acknowledged (None before).
        done: the original is deleted (and a buried copy buried).
    """

    source: str
    job: int
    tube: str
    target: str
    state: str
    priority: int
    digest: str = ""
    floor: int = 0
    new: int | None = None
    done: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.source, self.job)

    def begin_line(self) -> str:
        return _line(
            {
                "v": JOURNAL_VERSION,
                "op": "begin",
                "src": self.source,
                "id": self.job,
                "tube": self.tube,
                "dst": self.target,
                "state": self.state,
                "pri": self.priority,
                "sha256": self.digest,
                "floor": self.floor,
            }
        )

    def put_line(self) -> str:
        return _line({"op": "put", "src": self.source, "id": self.job, "new": self.new})

    def done_line(self) -> str:
        return _line({"op": "done", "src": self.source, "id": self.job})


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


def pending_entries(lines: Iterable[str]) -> list[JournalEntry]:
    """The moves a journal leaves open (begun, not done), in the order they began.

    Lines that do not parse (a torn last line: the writer died mid-write) are skipped. A
    ``begin`` is written whole before its put is sent, so no put can reach a shard without its
    ``begin`` on file; a lost ``put`` line only makes the move read as begun without a known
    copy, which the shell then searches for (``Mover._find_copy``).
    """
    open_moves: dict[tuple[str, int], JournalEntry] = {}
    for text in lines:
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        try:
            key = (str(record["src"]), int(record["id"]))
            op = record["op"]
            if op == "begin":
                open_moves[key] = JournalEntry(
                    source=key[0], job=key[1], tube=str(record["tube"]),
                    target=str(record["dst"]), state=str(record["state"]),
                    priority=int(record["pri"]), digest=str(record.get("sha256", "")),
                    floor=int(record.get("floor", 0)),
                )  # fmt: skip
            elif op == "put" and key in open_moves:
                open_moves[key].new = int(record["new"])
            elif op == "done":
                open_moves.pop(key, None)
        except (KeyError, TypeError, ValueError):
            continue
    return list(open_moves.values())


Action = Literal[
    "nothing",  # the move had completed, or nothing can be told
    "delete_source",  # the copy (or its consumption) stands for the original: delete it
    "bury_copy",  # the original is gone; the copy of a buried job is not buried yet
    "delete_source_bury_copy",
    "duplicate_held",  # both live and the original is reserved by a consumer: report
    "maybe_duplicate",  # the put's answer never came: a copy may exist on the target
]


def recovery_action(
    entry: JournalEntry,
    source: JobState | None,
    source_matches: bool,
    copy: JobState | None,
) -> Action:
    """How to close a move a killed run left open.

    Args:
        entry: the open move.
        source: the original's state now (None: gone).
        source_matches: the original found under that id is the journal's job (same tube and
            body), not another job that took its id after a restart of the shard without binlog.
        copy: the copy's state now (None: gone, or no copy id known).
    """
    if entry.new is None:
        return "maybe_duplicate" if source is not None and source_matches else "nothing"
    original_live = source is not None and source_matches
    bury = entry.state == "buried" and copy in ("ready", "delayed")
    if not original_live:
        return "bury_copy" if bury else "nothing"
    if source == "reserved":
        return "duplicate_held"
    return "delete_source_bury_copy" if bury else "delete_source"


# ---- the report -------------------------------------------------------------------------------


@dataclass
class Report:
    """What a rebalance did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    placement_draining: tuple[str, ...] = ()
    moved: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)
    """(source, tube, target) -> state -> jobs moved."""
    left: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    """(shard, tube) -> reason -> jobs left away (``reserved``; ``remaining``: put there
    during the run, or not moved for a reason in ``notes``; ``owner-unreachable``;
    ``open-move``: a move an interrupted run left open could not be closed yet)."""
    unreachable: dict[str, str] = field(default_factory=dict)
    """Shard -> why it did not answer."""
    recovered: list[dict[str, Any]] = field(default_factory=list)
    """Moves a killed run left open, and what this run did about them."""
    duplicates: int = 0
    """Jobs known or possibly live twice after an interrupted move (see ``recovered``)."""
    notes: list[str] = field(default_factory=list)

    def record_move(self, source: str, tube: str, target: str, state: str, n: int = 1) -> None:
        counts = self.moved.setdefault((source, tube, target), {})
        counts[state] = counts.get(state, 0) + n

    def record_left(self, shard: str, tube: str, reason: str, n: int) -> None:
        if n <= 0:
            return
        counts = self.left.setdefault((shard, tube), {})
        counts[reason] = counts.get(reason, 0) + n

    @property
    def moved_total(self) -> int:
        return sum(sum(c.values()) for c in self.moved.values())

    @property
    def left_total(self) -> int:
        return sum(sum(c.values()) for c in self.left.values())

    def by_tube(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for (_src, tube, _dst), counts in self.moved.items():
            result[tube] = result.get(tube, 0) + sum(counts.values())
        return dict(sorted(result.items()))

    def by_shard(self) -> dict[str, dict[str, int]]:
        """Shard -> ``{"out": moved off it, "in": moved onto it}``."""
        result: dict[str, dict[str, int]] = {}
        for (src, _tube, dst), counts in self.moved.items():
            n = sum(counts.values())
            result.setdefault(src, {"out": 0, "in": 0})["out"] += n
            result.setdefault(dst, {"out": 0, "in": 0})["in"] += n
        return dict(sorted(result.items()))

    def exit_code(self) -> int:
        if self.unreachable:
            return EXIT_UNREACHABLE
        if self.left_total or self.duplicates:
            return EXIT_LEFT
        if self.dry_run and self.moved_total:
            return EXIT_LEFT
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values (the schema is in docs/rebalance.md)."""
        return {
            "version": 1,
            "dry_run": self.dry_run,
            "draining": list(self.placement_draining),
            "moved_total": self.moved_total,
            "left_total": self.left_total,
            "moves": [
                {
                    "source": s,
                    "tube": t,
                    "target": d,
                    "jobs": sum(c.values()),
                    "states": dict(sorted(c.items())),
                }
                for (s, t, d), c in sorted(self.moved.items())
            ],
            "by_tube": self.by_tube(),
            "by_shard": self.by_shard(),
            "left": [
                {"shard": s, "tube": t, "jobs": sum(c.values()), "reasons": dict(sorted(c.items()))}
                for (s, t), c in sorted(self.left.items())
            ],
            "unreachable": dict(sorted(self.unreachable.items())),
            "recovered": self.recovered,
            "duplicates": self.duplicates,
            "notes": self.notes,
            "exit_code": self.exit_code(),
        }

    def prometheus(self, now: float) -> str:
        """The report in Prometheus' text format (for node_exporter's textfile collector):
        ``beanrouter_rebalance_jobs_moved_total`` by source, target, tube and state, the jobs
        left by shard, tube and reason, the duplicates, the exit status and the run's time."""

        def labels(**kv: str) -> str:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items())
            return "{" + inner + "}"

        lines = [
            "# HELP beanrouter_rebalance_jobs_moved_total Jobs the last rebalance moved to their"
            " tube's owner.",
            "# TYPE beanrouter_rebalance_jobs_moved_total counter",
        ]
        for (src, tube, dst), counts in sorted(self.moved.items()):
            for state, n in sorted(counts.items()):
                lab = labels(source=src, target=dst, tube=tube, state=state)
                lines.append(f"beanrouter_rebalance_jobs_moved_total{lab} {n}")
        lines += [
            "# HELP beanrouter_rebalance_jobs_left Jobs the last rebalance left away from their"
            " tube's owner.",
            "# TYPE beanrouter_rebalance_jobs_left gauge",
        ]
        for (shard, tube), counts in sorted(self.left.items()):
            for reason, n in sorted(counts.items()):
                lab = labels(shard=shard, tube=tube, reason=reason)
                lines.append(f"beanrouter_rebalance_jobs_left{lab} {n}")
        lines += [
            "# HELP beanrouter_rebalance_duplicates Jobs possibly live twice after an"
            " interrupted move.",
            "# TYPE beanrouter_rebalance_duplicates gauge",
            f"beanrouter_rebalance_duplicates {self.duplicates}",
            "# HELP beanrouter_rebalance_exit_code Exit status of the last rebalance.",
            "# TYPE beanrouter_rebalance_exit_code gauge",
            f"beanrouter_rebalance_exit_code {self.exit_code()}",
            "# HELP beanrouter_rebalance_last_run_timestamp_seconds When the last rebalance ended.",
            "# TYPE beanrouter_rebalance_last_run_timestamp_seconds gauge",
            f"beanrouter_rebalance_last_run_timestamp_seconds {now:.3f}",
        ]
        return "\n".join(lines) + "\n"

    def render(self) -> str:
        """The summary for people."""
        verb = "would move" if self.dry_run else "moved"
        lines = []
        for item in self.recovered:
            lines.append(f"interrupted move: {item['message']}")
        lines.append(f"{verb} {self.moved_total} job{'s' if self.moved_total != 1 else ''}")
        for (src, tube, dst), counts in sorted(self.moved.items()):
            states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            lines.append(f"  {tube}: {src} -> {dst}: {sum(counts.values())} ({states})")
        shards = self.by_shard()
        if shards:
            lines.append("by shard: " + ", ".join(
                f"{name} -{c['out']} +{c['in']}" for name, c in shards.items()
            ))  # fmt: skip
        if self.left:
            lines.append(f"left away: {self.left_total}")
            for (shard, tube), counts in sorted(self.left.items()):
                why = ", ".join(f"{n} {_REASONS.get(r, r)}" for r, n in sorted(counts.items()))
                lines.append(f"  {tube} on {shard}: {why}")
        for name, why in sorted(self.unreachable.items()):
            lines.append(f"shard {name} unreachable: {why}")
        lines.extend(self.notes)
        if self.duplicates:
            lines.append(
                f"{self.duplicates} job{'s' if self.duplicates != 1 else ''} may be live twice"
                " after an interrupted move (see above)"
            )
        lines.append(f"exit status {self.exit_code()}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_REASONS = {
    "reserved": "left because reserved",
    "remaining": "still there (put during the run, or see the notes)",
    "owner-unreachable": "left: owner unreachable",
    "open-move": "left: an interrupted move of it is not closed yet",
}
