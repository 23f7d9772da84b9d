"""``beanrouter rebalance``: move away jobs to their tube's owner, over plain beanstalkd commands.

The decisions (what is away, where it goes, how an interrupted move is closed, the report) are
in ``beanrouter.core.rebalance``; this shell does the I/O with one blocking ``Connection`` per
shard (every byte through ``beanrouter.protocol``) and keeps the journal file.

Moving one job (the original ``J`` on the source, its copy ``N`` on the owner):

* ready: ``peek-ready`` then ``reserve-job J`` on the source (the mover holds ``J``: no consumer
  can take it; its TTR is touched first when less than a second is left), ``put`` the copy
  (same priority and TTR, delay 0), ``delete J``. A mover killed while holding ``J`` closes its
  connection, so the shard makes ``J`` ready again at once.
* delayed: ``peek-delayed``, ``stats-job J``; ``put`` the copy with the time left as its delay,
  then ``delete J``; if ``J`` is gone meanwhile (someone reserved or deleted it by id), the copy,
  still delayed, is deleted. Jobs with less than ``DELAY_MARGIN`` seconds left are waited for and
  moved as ready jobs.
* buried: ``peek-buried``, ``stats-job J``; ``put`` the copy with a long delay
  (``BURIED_HOLD``, so no consumer can reserve it), ``reserve-job N`` + ``bury N PRI`` (sent
  together), then ``delete J``; if ``J`` is gone meanwhile, the buried copy is deleted.

Before each put the move is written to the journal (``begin``), after it the copy's id (``put``),
after the delete ``done``: a run killed anywhere leaves the original alone, or the original and
one copy with the move open in the journal, which the next run closes (``recover``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Literal

from ..core.config import ClusterConfig, ShardConfig
from ..core.rebalance import (
    BURIED_HOLD,
    DELAY_MARGIN,
    Census,
    JobState,
    JournalEntry,
    Plan,
    Report,
    TubeCounts,
    TubeMove,
    pending_entries,
    plan_moves,
    rebalance_placement,
    recovery_action,
)
from ..protocol import (
    Buried,
    Bury,
    Command,
    Delete,
    Found,
    Inserted,
    KickJob,
    ListTubes,
    Ok,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Put,
    Release,
    Reply,
    Reserved,
    ReserveJob,
    StatsJob,
    StatsTube,
    StatValue,
    Touch,
    Use,
    Word,
    parse_list,
    parse_mapping,
)
from .connection import Connection, ConnectionFailure

__all__ = [
    "Journal",
    "JournalBusy",
    "MoveFailed",
    "Progress",
    "default_journal_path",
    "rebalance",
    "survey",
]

_PROBE_TUBE = "beanrouter-rebalance"
"""Tube of the empty job put and deleted at once on each shard to learn its highest id."""
_SCAN_LIMIT = 100_000
"""Ids above an open move's floor searched for a copy whose put was not acknowledged."""
_COMPACT_EVERY = 10_000
_ROUNDS = 5
"""Passes over one (shard, tube) pair while delayed jobs become ready during the move."""


class JournalBusy(Exception):
    """Another rebalance holds the journal (runs on one cluster must not overlap)."""


class MoveFailed(Exception):
    """A shard answered a move's command with something unexpected (its message says what)."""


def default_journal_path(config_path: str | Path) -> Path:
    """``$XDG_STATE_HOME/beanrouter/rebalance-<hash of the config file's path>.journal``
    (``~/.local/state`` without XDG_STATE_HOME): one journal per configuration file, kept when
    the file is edited (shards added or drained)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    key = hashlib.sha256(str(Path(config_path).resolve()).encode()).hexdigest()[:16]
    return Path(base) / "beanrouter" / f"rebalance-{key}.journal"


class Journal:
    """The append-only file of moves (JSON lines), locked for the run (``flock``).

    Lines are written with one ``write`` each and not fsynced: a killed mover's lines are in the
    kernel and survive it; a machine crash may lose the last ones (then a move may read as begun
    without a copy: reported as a possible duplicate).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise JournalBusy(f"{self.path} is held by another rebalance") from None

    def pending(self) -> list[JournalEntry]:
        with open(self.fd, encoding="utf-8", errors="replace", closefd=False) as f:
            f.seek(0)
            return pending_entries(f)

    def write(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def rewrite(self, entries: Iterable[JournalEntry]) -> None:
        """Keep only ``entries`` (moves still open)."""
        os.ftruncate(self.fd, 0)
        for e in entries:
            self.write(e.begin_line())
            if e.new is not None:
                self.write(e.put_line())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def read_pending(path: str | Path) -> list[JournalEntry]:
    """The open moves of the journal at ``path`` without locking it (for ``--dry-run``)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return pending_entries(f)
    except FileNotFoundError:
        return []


class Progress:
    """A one-line progress bar on ``stream`` (only when it is a terminal)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty()
        self.total = 0
        self.done = 0
        self._shown = 0.0

    def start(self, total: int) -> None:
        self.total = total
        self._draw(force=True)

    def step(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown < 0.1 and self.done < self.total:
            return
        self._shown = now
        total = max(self.total, self.done, 1)
        width = 30
        filled = width * self.done // total
        self.stream.write(
            f"\rrebalance [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} jobs"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()


def _job_state(stats: dict[str, StatValue] | None) -> JobState | None:
    if stats is None:
        return None
    state = stats.get("state")
    return state if state in ("ready", "delayed", "buried", "reserved") else None  # type: ignore[return-value]


def _int(stats: dict[str, StatValue], key: str) -> int:
    value = stats.get(key)
    if not isinstance(value, int):
        raise MoveFailed(f"stats-job has no integer {key!r}")
    return value


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class Link:
    """One connection to one shard, with the few commands a rebalance sends."""

    def __init__(self, shard: ShardConfig, config: ClusterConfig) -> None:
        self.name = shard.name
        self.conn = Connection.open(
            shard.name, shard.host, shard.port, config.connect_timeout, config.timeout
        )
        self.used = "default"

    def call(self, command: Command) -> Reply:
        return self.conn.request(command.encode())[0]

    def calls(self, *commands: Command) -> list[Reply]:
        return self.conn.request(b"".join(c.encode() for c in commands), len(commands))

    def use(self, tube: str) -> None:
        if self.used != tube:
            self.call(Use(tube))
            self.used = tube

    def list_tubes(self) -> list[str]:
        reply = self.call(ListTubes())
        if not isinstance(reply, Ok):
            raise MoveFailed(f"{self.name}: list-tubes answered {reply!r}")
        return parse_list(reply.body)

    def stats_tube(self, tube: str) -> TubeCounts:
        reply = self.call(StatsTube(tube))
        if isinstance(reply, Ok):
            return TubeCounts.from_stats(parse_mapping(reply.body))
        return TubeCounts()  # NOT_FOUND: the tube went away (no job, no watcher)

    def top_id(self) -> int:
        """The shard's highest job id now (an empty job put in a tube of its own and deleted;
        probes a killed run left there are deleted first)."""
        self.use(_PROBE_TUBE)
        for _ in range(100):
            left = self.call(PeekReady())
            if not isinstance(left, Found):
                break
            self.delete(left.id)
        job_id, _ = self.put(0, 0, 1, b"")
        self.delete(job_id)
        return job_id

    def stats_job(self, job_id: int) -> dict[str, StatValue] | None:
        reply = self.call(StatsJob(job_id))
        return parse_mapping(reply.body) if isinstance(reply, Ok) else None

    def put(self, priority: int, delay: int, ttr: int, body: bytes) -> tuple[int, bool]:
        """Put on the used tube: ``(id, buried)`` (a shard out of memory buries it)."""
        reply = self.call(Put(priority, delay, ttr, body))
        if isinstance(reply, Inserted):
            return reply.id, False
        if isinstance(reply, Buried) and reply.id is not None:
            return reply.id, True
        raise MoveFailed(f"{self.name}: put answered {reply!r}")

    def delete(self, job_id: int) -> bool:
        reply = self.call(Delete(job_id))
        if reply == Word("DELETED"):
            return True
        if reply == Word("NOT_FOUND"):
            return False
        raise MoveFailed(f"{self.name}: delete {job_id} answered {reply!r}")

    def close(self) -> None:
        self.conn.close()


Outcome = Literal["moved", "none", "raced", "soon"]


class Mover:
    """Runs a plan: the moves of one rebalance."""

    def __init__(
        self,
        config: ClusterConfig,
        report: Report,
        journal: Journal | None,
        progress: Progress,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.report = report
        self.journal = journal
        self.progress = progress
        self.sleep = sleep
        self.links: dict[str, Link] = {}
        self.open: dict[tuple[str, int], JournalEntry] = {}
        self.closed = 0
        """Moves closed by this run (the journal is cut down every ``_COMPACT_EVERY``)."""
        self.top: dict[str, int] = {}
        """Shard -> the highest job id known there (a floor for the ids of later puts)."""
        """Moves begun and not done by this run (kept in the journal at the end)."""

    # ---- links ---------------------------------------------------------------------------

    def connect(self, probe: bool) -> None:
        for shard in self.config.servers:
            try:
                link = self.links[shard.name] = Link(shard, self.config)
                if probe:
                    self.top[shard.name] = link.top_id()
            except ConnectionFailure as exc:
                self.lost(shard.name, exc)
            except MoveFailed as exc:  # it refuses puts (draining): it can still be a source
                self.report.notes.append(f"note: {exc}")

    def lost(self, name: str, exc: Exception) -> None:
        self.report.unreachable.setdefault(name, str(exc))
        link = self.links.pop(name, None)
        if link is not None:
            link.close()

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self.links.clear()

    # ---- census ------------------------------------------------------------------------------

    def census(self) -> Census:
        result: dict[str, dict[str, TubeCounts]] = {}
        for name, link in list(self.links.items()):
            try:
                tubes = [t for t in link.list_tubes() if t != _PROBE_TUBE]
                result[name] = {tube: link.stats_tube(tube) for tube in tubes}
            except (ConnectionFailure, MoveFailed) as exc:
                self.lost(name, exc)
        return result

    # ---- the journal ---------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        if self.journal is None:
            raise MoveFailed("no journal: nothing is moved without one")
        self.journal.write(text)

    def begin(self, entry: JournalEntry) -> None:
        entry.floor = self.top.get(entry.target, 0)
        self.open[entry.key] = entry
        self._write(entry.begin_line())

    def put_done(self, entry: JournalEntry, new: int) -> None:
        entry.new = new
        self.top[entry.target] = max(self.top.get(entry.target, 0), new)
        self._write(entry.put_line())

    def done(self, entry: JournalEntry) -> None:
        self._write(entry.done_line())
        self.open.pop(entry.key, None)
        self.closed += 1
        if self.closed % _COMPACT_EVERY == 0 and not self.open and self.journal is not None:
            self.journal.rewrite(())  # nothing is open: no line worth keeping

    # ---- recovery ------------------------------------------------------------------------------

    def recover(self, entries: list[JournalEntry]) -> None:
        """Close the moves a killed run left open (see ``core.rebalance.recovery_action``)."""
        for e in entries:
            src, dst = self.links.get(e.source), self.links.get(e.target)
            if src is None or dst is None:
                self.open[e.key] = e  # kept for a run that reaches both shards
                self._recovered(e, "kept", "a shard of the move does not answer; kept")
                continue
            try:
                self._recover_one(e, src, dst)
            except (ConnectionFailure, MoveFailed) as exc:
                self.open[e.key] = e
                self._recovered(e, "kept", f"could not close it ({exc}); kept for the next run")

    def _recover_one(self, e: JournalEntry, src: Link, dst: Link) -> None:
        source_stats = src.stats_job(e.job)
        source = _job_state(source_stats)
        matches = False
        if source_stats is not None and source_stats.get("tube") == e.tube:
            found = src.call(Peek(e.job))
            matches = isinstance(found, Found) and (not e.digest or _digest(found.body) == e.digest)
        copy: JobState | None = None
        what = f"job {e.job} of tube {e.tube!r} from {e.source} to {e.target}"
        if e.new is None and source is not None and matches:
            e.new, complete = self._find_copy(dst, e)
            if e.new is None and complete:
                self._recovered(e, "nothing", f"{what}: its copy's put had not landed")
                self._write(e.done_line())
                return
        if e.new is not None and self._is_copy(dst, e, e.new):
            copy = _job_state(dst.stats_job(e.new))
        action = recovery_action(e, source, matches, copy)
        if action == "maybe_duplicate":
            self.report.duplicates += 1
            self._recovered(e, action, f"{what}: the put's answer never came; a copy may also be "
                            f"on {e.target} (this run moves the original again)")  # fmt: skip
        elif action == "duplicate_held":
            self.report.duplicates += 1
            self._recovered(e, action, f"{what}: copy {e.new} on {e.target} and the original, "
                            "reserved by a consumer, are both live")  # fmt: skip
        elif action == "nothing" and source is not None and not matches:
            self._recovered(e, action, f"{what}: its id now names another job, left alone")
        elif action == "nothing":
            self._recovered(e, action, f"{what}: already complete (copy {e.new})")
        else:
            # The copy is buried before the original goes: a failure in between leaves both.
            if action in ("bury_copy", "delete_source_bury_copy"):
                assert e.new is not None
                replies = dst.calls(ReserveJob(e.new), Bury(e.new, e.priority))
                if not isinstance(replies[0], Reserved) or not isinstance(replies[1], Buried):
                    raise MoveFailed(f"burying copy {e.new}: {replies[0]!r}, {replies[1]!r}")
            if action in ("delete_source", "delete_source_bury_copy"):
                src.delete(e.job)
            self._recovered(e, action, f"{what}: completed (copy {e.new}; {action})")
        self._write(e.done_line())

    def _find_copy(self, dst: Link, e: JournalEntry) -> tuple[int | None, bool]:
        """The copy of an open move whose put was not acknowledged: the one job of the tube
        with the same body and priority above the move's floor on the target, and whether the
        search was conclusive (it gives up after ``_SCAN_LIMIT`` ids; two such jobs, a
        producer's twin among them, cannot tell which is the copy: inconclusive, so the
        original is never deleted on a guess)."""
        known = self.top.get(dst.name)
        if known is None:
            return None, False  # its highest id is not known: the search cannot be complete
        top = min(known, e.floor + _SCAN_LIMIT)
        batch = 100
        found: list[int] = []
        for start in range(e.floor + 1, top + 1, batch):
            ids = range(start, min(start + batch, top + 1))
            for job_id, reply in zip(ids, dst.calls(*(Peek(i) for i in ids)), strict=True):
                if isinstance(reply, Found) and _digest(reply.body) == e.digest:
                    stats = dst.stats_job(job_id)
                    if (
                        stats is not None
                        and stats.get("tube") == e.tube
                        and stats.get("pri") == e.priority
                    ):
                        found.append(job_id)
        if len(found) > 1:
            return None, False
        if found:
            return found[0], True
        return None, top == known

    def _is_copy(self, dst: Link, e: JournalEntry, job_id: int) -> bool:
        """Whether ``job_id`` on the target is this move's copy (its tube and body): an id a
        target restarted without its binlog gave to another job is not."""
        stats = dst.stats_job(job_id)
        if stats is None or stats.get("tube") != e.tube:
            return False
        found = dst.call(Peek(job_id))
        return isinstance(found, Found) and _digest(found.body) == e.digest

    def _recovered(self, e: JournalEntry, action: str, message: str) -> None:
        self.report.recovered.append(
            {"source": e.source, "job": e.job, "tube": e.tube, "target": e.target,
             "state": e.state, "copy": e.new, "action": action, "message": message}
        )  # fmt: skip

    # ---- moving ------------------------------------------------------------------------------

    def move(self, move: TubeMove) -> None:
        """Move the away jobs of one (shard, tube) pair; a shard that fails is marked
        unreachable and the pair is left."""
        src, dst = self.links.get(move.source), self.links.get(move.target)
        if src is None or dst is None:
            return
        try:
            src.use(move.tube)
            dst.use(move.tube)
            budget = 2 * move.counts.movable + 100  # producers may keep putting there
            for _ in range(_ROUNDS):
                while budget > 0 and self._one_ready(move, src, dst) != "none":
                    budget -= 1
                while budget > 0 and self._one_buried(move, src, dst) != "none":
                    budget -= 1
                wait = 0.0
                while budget > 0:
                    outcome, left = self._one_delayed(move, src, dst)
                    if outcome == "none":
                        break
                    if outcome == "soon":
                        wait = left
                        break
                    budget -= 1
                if not wait:
                    break
                self.sleep(wait)
        except ConnectionFailure as exc:
            self.lost(src.name if src.conn.closed else dst.name, exc)
        except MoveFailed as exc:
            self.report.notes.append(f"{move.tube} on {move.source}: stopped: {exc}")

    def _one_ready(self, move: TubeMove, src: Link, dst: Link) -> Outcome:
        peek = src.call(PeekReady())
        if not isinstance(peek, Found):
            return "none"
        reserved, stats_reply = src.calls(ReserveJob(peek.id), StatsJob(peek.id))
        if not isinstance(reserved, Reserved):
            return "raced"  # a consumer took it first
        if not isinstance(stats_reply, Ok):
            raise MoveFailed(f"stats-job {peek.id} answered {stats_reply!r}")
        stats = parse_mapping(stats_reply.body)
        job_id, body = reserved.id, reserved.body
        ttr = _int(stats, "ttr")
        if _int(stats, "time-left") < 1:
            src.call(Touch(job_id))
        entry = JournalEntry(move.source, job_id, move.tube, move.target, "ready",
                             _int(stats, "pri"), _digest(body))  # fmt: skip
        self.begin(entry)
        new, buried = self._put(entry, dst, 0, ttr, body, src)
        if buried:
            dst.call(KickJob(new))  # the owner buried it for lack of memory: make it ready
        if src.delete(job_id):
            self.done(entry)
            self._moved(move, "ready")
            return "moved"
        # Our reservation was lost (the TTR ran out in between): the original lives on; the
        # copy goes, unless a consumer of the owner already holds it.
        if not dst.delete(new):
            self.report.duplicates += 1
            self.report.notes.append(f"job {job_id} of {move.tube!r} on {move.source}: its "
                                     f"reservation expired mid-move; copy {new} on "
                                     f"{move.target} was already taken: both live")  # fmt: skip
        self.done(entry)
        return "raced"

    def _one_delayed(self, move: TubeMove, src: Link, dst: Link) -> tuple[Outcome, float]:
        peek = src.call(PeekDelayed())
        if not isinstance(peek, Found):
            return "none", 0.0
        stats = src.stats_job(peek.id)
        if stats is None or stats.get("state") != "delayed":
            return "raced", 0.0
        left = _int(stats, "time-left")
        if left < DELAY_MARGIN:
            return "soon", left + 1.0
        entry = JournalEntry(move.source, peek.id, move.tube, move.target, "delayed",
                             _int(stats, "pri"), _digest(peek.body))  # fmt: skip
        self.begin(entry)
        new, buried = self._put(entry, dst, left, _int(stats, "ttr"), peek.body)
        if buried:
            dst.call(KickJob(new))
        if src.delete(peek.id):
            self.done(entry)
            self._moved(move, "delayed")
            return "moved", 0.0
        # Someone reserved or deleted the original by id meanwhile: it stays; the copy, still
        # delayed (at least DELAY_MARGIN seconds were left), goes.
        if not dst.delete(new):
            self.report.duplicates += 1
        self.done(entry)
        return "raced", 0.0

    def _one_buried(self, move: TubeMove, src: Link, dst: Link) -> Outcome:
        peek = src.call(PeekBuried())
        if not isinstance(peek, Found):
            return "none"
        stats = src.stats_job(peek.id)
        if stats is None or stats.get("state") != "buried":
            return "raced"
        entry = JournalEntry(move.source, peek.id, move.tube, move.target, "buried",
                             _int(stats, "pri"), _digest(peek.body))  # fmt: skip
        self.begin(entry)
        new, buried = self._put(entry, dst, BURIED_HOLD, _int(stats, "ttr"), peek.body)
        if not buried:
            # Sent together: a mover killed after this send still has both run by the shard.
            reserved, bury = dst.calls(ReserveJob(new), Bury(new, entry.priority))
            if not isinstance(reserved, Reserved) or not isinstance(bury, Buried):
                raise MoveFailed(f"burying copy {new} on {move.target}: {reserved!r}, {bury!r}")
        if src.delete(peek.id):
            self.done(entry)
            self._moved(move, "buried")
            return "moved"
        dst.delete(new)  # the original was kicked and reserved, or deleted: the copy goes
        self.done(entry)
        return "raced"

    def _put(
        self,
        entry: JournalEntry,
        dst: Link,
        delay: int,
        ttr: int,
        body: bytes,
        held: Link | None = None,
    ) -> tuple[int, bool]:
        """Put the copy (journalled). A put the owner refused (``DRAINING``, ``JOB_TOO_BIG``...)
        stored nothing: the move is closed as not done, and an original this run reserved on
        ``held`` is released."""
        try:
            new, buried = dst.put(entry.priority, delay, ttr, body)
        except MoveFailed:
            self.done(entry)
            if held is not None:
                held.call(Release(entry.job, entry.priority, 0))
            raise
        self.put_done(entry, new)
        return new, buried

    def _moved(self, move: TubeMove, state: str) -> None:
        self.report.record_move(move.source, move.tube, move.target, state)
        self.progress.step()


def survey(config: ClusterConfig, drain: Iterable[str] = ()) -> tuple[Plan, frozenset[str]]:
    """The plan a rebalance would follow now, and every tube the shards list (connects to
    every shard; moves nothing)."""
    placement = rebalance_placement(config, drain)
    report = Report(dry_run=True)
    mover = Mover(config, report, None, Progress())
    try:
        mover.connect(probe=False)
        census = mover.census()
        tubes = frozenset(t for by_tube in census.values() for t in by_tube)
        return plan_moves(census, placement, tuple(report.unreachable)), tubes
    finally:
        mover.close()


def rebalance(
    config: ClusterConfig,
    *,
    drain: Iterable[str] = (),
    dry_run: bool = False,
    journal_path: str | Path,
    progress: Progress | None = None,
) -> Report:
    """Move every away job to its tube's owner (see the module docstring); return the report.

    Raises:
        ValueError: an unknown ``drain`` name, or every shard would drain.
        JournalBusy: another rebalance holds the journal.
    """
    drain = tuple(drain)
    placement = rebalance_placement(config, drain)
    report = Report(dry_run=dry_run, placement_draining=tuple(sorted(placement.draining)))
    for name in drain:
        if name not in config.draining:
            report.notes.append(
                f"note: {name} is drained by --drain but not marked 'drain: true' in the "
                "configuration: producers may still put there"
            )
    progress = progress if progress is not None else Progress()
    if dry_run:
        pending = read_pending(journal_path)
        if pending:
            report.notes.append(f"{len(pending)} interrupted move(s) in {journal_path} would be "
                                "closed first")  # fmt: skip
        journal: Journal | None = None
    else:
        journal = Journal(journal_path)
    mover = Mover(config, report, journal, progress)
    try:
        mover.connect(probe=not dry_run)
        if journal is not None:
            mover.recover(journal.pending())
        plan = plan_moves(mover.census(), placement, tuple(report.unreachable))
        for m in plan.blocked:
            report.record_left(m.source, m.tube, "owner-unreachable", m.counts.total)
        if dry_run:
            for m in plan.moves:
                for state in ("ready", "delayed", "buried"):
                    n = getattr(m.counts, state)
                    if n:
                        report.record_move(m.source, m.tube, m.target, state, n)
                report.record_left(m.source, m.tube, "reserved", m.counts.reserved)
            return report
        # A pair with a move still open (a shard of it did not answer) waits for that move to
        # be closed: its original must not be moved again meanwhile.
        unresolved = {(e.source, e.tube) for e in mover.open.values()}
        moves = [m for m in plan.moves if (m.source, m.tube) not in unresolved]
        for m in plan.moves:
            if (m.source, m.tube) in unresolved:
                report.record_left(m.source, m.tube, "open-move", m.counts.total)
        progress.start(sum(m.counts.movable for m in moves))
        for m in moves:
            mover.move(m)
        progress.finish()
        _final_census(mover, moves, report)
    finally:
        mover.close()
        if journal is not None:
            if not mover.open:  # (never truncated while a move is open: a kill then loses it)
                journal.rewrite(())
            journal.close()
    return report


def _final_census(mover: Mover, moves: Iterable[TubeMove], report: Report) -> None:
    """What is still away on the pairs moved: reserved jobs, and jobs that arrived."""
    for m in moves:
        link = mover.links.get(m.source)
        if link is None:
            continue  # unreachable (reported): what is left there is not known
        try:
            counts = link.stats_tube(m.tube)
        except ConnectionFailure as exc:
            mover.lost(m.source, exc)
            continue
        report.record_left(m.source, m.tube, "reserved", counts.reserved)
        why = "owner-unreachable" if m.target in report.unreachable else "remaining"
        report.record_left(m.source, m.tube, why, counts.movable)
