"""A scripted shell for the routing core's unit tests: no servers, no sockets.

``Script`` drives one core operation: the test inspects each ``Round`` it yields (which links,
which bytes, ``first``/``until``/``close``) and answers with an ``Outcome`` of protocol reply
objects or ``Failure``s. ``Clock`` is the fake clock injected into the ``Cluster``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from beanrouter.core import Cluster, Failure, Link, Op, Outcome, Round, Send, Session
from beanrouter.protocol import Ok, Reply, StatValue, Using, Watching, format_mapping
from beanrouter.router.config import config_from_servers

NAMES = ("s0", "s1", "s2")
TUBE_ON = {"s0": "t0", "s1": "t1", "s2": "t2"}
"""A tube owned by each shard (with ``failover=0``; ``default`` is on s2)."""


class Clock:
    """A fake monotonic clock."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(n: int = 3, failover: int = 0, cancellable: bool = True) -> tuple[Cluster, Session, Clock]:
    lines = [f"127.0.0.1:{11300 + i} s{i} id={i}" for i in range(n)]
    clock = Clock()
    cluster = Cluster(config_from_servers(lines), clock=clock, rng=lambda: 0.5, failover=failover)
    cluster.scanner = cluster.scanned = True  # (sessions never scan: test_core_scan.py does)
    return cluster, Session(cluster, cancellable=cancellable), clock


def shard_stats(**values: StatValue) -> Ok:
    return Ok(format_mapping({k.replace("_", "-"): v for k, v in values.items()}))


def job_stats(local: int, tube: str, pri: int, age: int = 0, ttr: int = 60, **more: Any) -> Ok:
    """A ``stats-job`` reply of a ready job (``more`` overrides, e.g. ``state="reserved"``)."""
    fields: dict[str, StatValue] = {
        "id": local, "tube": tube, "state": "ready", "pri": pri, "age": age, "delay": 0,
        "ttr": ttr, "time-left": 0, "file": 0, "reserves": 0, "timeouts": 0, "releases": 0,
        "buries": 0, "kicks": 0,
    }  # fmt: skip
    fields.update({k.replace("_", "-"): v for k, v in more.items()})
    return Ok(format_mapping(fields))


def tube_stats(tube: str, paused: int = 0, ready: int = 1, left: int | None = None) -> Ok:
    """A ``stats-tube`` reply: ``paused`` the pause's length, ``left`` its ``pause-time-left``
    (default the same; a pause in its last second reads 0)."""
    left = paused if left is None else left
    return shard_stats(name=tube, current_jobs_ready=ready, pause=paused, pause_time_left=left)


def commands(data: bytes) -> list[bytes]:
    """The command lines of ``data`` (commands without bodies only)."""
    return [line for line in data.split(b"\r\n") if line]


def auto(send: Send, *answers: Reply) -> list[Reply]:
    """Replies to ``send``: ``use``/``watch``/``ignore`` answered as a shard would, every other
    command in order from ``answers`` (all of which must be used)."""
    queue = list(answers)
    out: list[Reply] = []
    for line in commands(send.data):
        word, _, arg = line.partition(b" ")
        if word == b"use":
            out.append(Using(arg.decode()))
        elif word in (b"watch", b"ignore"):
            out.append(Watching(1))
        else:
            assert queue, f"no answer scripted for {line!r}"
            out.append(queue.pop(0))
    assert not queue, f"unused answers {queue!r} for {send.data!r}"
    assert len(out) == send.replies, (send, out)
    return out


class Script:
    """Runs a core operation one round at a time."""

    def __init__(self, op: Op[Any]) -> None:
        self.op = op
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.rounds: list[Round] = []
        self.round: Round | None = None
        self._step(lambda: next(op))

    def _step(self, step: Callable[[], Round]) -> None:
        try:
            self.round = step()
            self.rounds.append(self.round)
        except StopIteration as stop:
            self.done, self.result, self.round = True, stop.value, None
        except Exception as exc:
            self.done, self.error, self.round = True, exc, None

    @property
    def now(self) -> Round:
        assert self.round is not None, f"operation ended: {self.result!r} {self.error!r}"
        return self.round

    def sends(self) -> dict[str, Send]:
        """The current round's sends by shard name (one per shard)."""
        out: dict[str, Send] = {}
        for send in self.now.sends:
            assert send.link.shard.name not in out, self.now
            out[send.link.shard.name] = send
        return out

    def data(self) -> dict[str, list[bytes]]:
        """The current round's command lines by shard name."""
        return {name: commands(send.data) for name, send in self.sends().items()}

    def reply(self, outcome: Mapping[Link, Sequence[Reply] | Failure]) -> None:
        out: Outcome = {k: v if isinstance(v, Failure) else list(v) for k, v in outcome.items()}
        self._step(lambda: self.op.send(out))

    def answer(self, by_shard: Mapping[str, Sequence[Reply] | Failure]) -> None:
        """Answer the current round's sends by shard name (waited links: use ``reply``)."""
        sends = self.sends()
        self.reply({sends[name].link: value for name, value in by_shard.items()})

    def auto(self, **answers: Sequence[Reply] | Failure) -> None:
        """Answer every send of the round with ``auto`` (its non-tube replies by shard name)."""
        out: dict[Link, Sequence[Reply] | Failure] = {}
        for name, send in self.sends().items():
            given = answers.get(name, ())
            out[send.link] = given if isinstance(given, Failure) else auto(send, *given)
        self.reply(out)

    def value(self) -> Any:
        assert self.done, f"operation still running: {self.round!r}"
        if self.error is not None:
            raise self.error
        return self.result


def run_auto(op: Op[Any]) -> Any:
    """Run an operation whose rounds are only ``use``/``watch``/``ignore``."""
    script = Script(op)
    while not script.done:
        script.auto()
    return script.value()


def watch_only(session: Session, tubes: Sequence[str]) -> None:
    """Make ``session`` watch exactly ``tubes`` (shards answer as beanstalkd would)."""
    for tube in tubes:
        run_auto(session.watch(tube))
    for tube in list(session.watching):
        if tube not in tubes:
            run_auto(session.ignore(tube))
    assert sorted(session.watching) == sorted(tubes)


def add_wait_links(session: Session) -> None:
    """A wait that may be cancelled runs beside the main link (``Session.idle_link`` with
    ``beside_main``): give each shard one already watching the same tubes, as after a first
    wait, so that scripts show the wait's own command alone."""
    for links in session.links.values():
        spare = Link(links[0].shard)
        spare.watched = list(links[0].watched)
        links.append(spare)
