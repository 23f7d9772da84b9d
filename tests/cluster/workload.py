"""Producers, a consumer pool and the checker for the fault scenarios.

Producers put unique bodies (``"<tube> <producer> <seq>"``) across many tubes, a third of them
delayed by 1-2 s so that every shard always holds a backlog (what its binlog must bring back
after a kill). A put that fails or is uncertain is retried until it is acknowledged (bounded:
an abandoned put fails the scenario), so an uncertain put can be stored twice: that is a
duplicate, counted. Consumers reserve, read ``stats-job`` (``reserves``) and delete.

Two kinds of client, the same workload:

* ``library``: ``beanrouter.Router`` from the host, on the shards' published ports;
* ``proxy``: a raw-protocol client (``rawclient.RawClient``, the codec over a socket, no routing
  knowledge) on the proxy's published port, reconnecting after any connection error.

Every loop is bounded: socket timeouts, reserve timeouts, retry deadlines, thread joins. The
``Ledger`` records every attempt, acknowledgement and delivery; ``Ledger.report`` checks and
summarises them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from beanrouter.core import ids
from beanrouter.core.ring import Placement
from beanrouter.protocol import StatValue
from beanrouter.router import (
    DeadlineSoon,
    PutUncertain,
    ReservationLost,
    Router,
    RouterError,
    parse_config,
)

from .rawclient import RawClient, RawError

TTR = 5  # seconds: a job held by a connection that vanished comes back within this
PUT_RETRY_DEADLINE = 30.0  # a put not acknowledged after this long is abandoned (a failure)
RESERVE_TIMEOUT = 1  # seconds, per reserve call
HANG_LIMIT = 30.0  # a client call that takes longer than this is a hang


@dataclass(frozen=True)
class Delivery:
    """One job handed to a consumer, with what its ``stats-job`` said right after (None: the
    ``stats-job`` failed)."""

    job_id: int
    reserves: int | None
    releases: int | None
    timeouts: int | None


@dataclass
class Ledger:
    """Everything the clients saw; thread-safe."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempted: dict[bytes, str] = field(default_factory=dict)  # body -> tube
    acked: dict[bytes, list[int]] = field(default_factory=dict)  # body -> ids acknowledged
    ack_log: list[tuple[float, int]] = field(default_factory=list)  # (time, shard id)
    uncertain: int = 0
    put_errors: int = 0
    abandoned: list[bytes] = field(default_factory=list)
    deliveries: dict[bytes, list[Delivery]] = field(default_factory=lambda: defaultdict(list))
    ack_time: dict[bytes, float] = field(default_factory=dict)  # body -> first acknowledgement
    first_delivery: dict[bytes, float] = field(default_factory=dict)  # body -> time
    lost_reservations: int = 0
    consumer_errors: int = 0
    errors: list[str] = field(default_factory=list)  # unexpected exceptions: failures
    max_call: float = 0.0  # longest single client call, seconds
    # The library consumers' routers, summed when they close (``Router.metrics``): phantom
    # reserves the core made (``give_backs``) and the link failures that can swallow a
    # reserve's reply (the shard reserved, nobody got the job).
    give_backs: int = 0
    link_failures: int = 0

    def call_took(self, seconds: float) -> None:
        with self.lock:
            self.max_call = max(self.max_call, seconds)

    def attempt(self, body: bytes, tube: str) -> None:
        with self.lock:
            self.attempted[body] = tube

    def ack(self, body: bytes, job_id: int) -> None:
        with self.lock:
            self.acked.setdefault(body, []).append(job_id)
            self.ack_time.setdefault(body, time.monotonic())
            self.ack_log.append((time.monotonic(), ids.decode(job_id)[0]))

    def deliver(self, body: bytes, job_id: int, stats: Mapping[str, StatValue] | None) -> None:
        def number(key: str) -> int | None:
            value = None if stats is None else stats.get(key)
            return value if isinstance(value, int) else None

        entry = Delivery(job_id, number("reserves"), number("releases"), number("timeouts"))
        with self.lock:
            self.deliveries[body].append(entry)
            self.first_delivery.setdefault(body, time.monotonic())

    def count(self, what: str) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def all_delivered(self) -> bool:
        with self.lock:
            return all(body in self.deliveries for body in self.acked)

    def restored(self, shard_id: int, down: float, up: float) -> int:
        """Jobs acknowledged by ``shard_id`` before ``down`` and first delivered after ``up``:
        they existed only on that shard while it was dead (brought back by its binlog)."""
        with self.lock:
            return sum(
                1
                for body, job_ids in self.acked.items()
                if ids.decode(job_ids[0])[0] == shard_id
                and self.ack_time[body] < down
                and self.first_delivery.get(body, 0.0) > up
            )

    def first_ack_after(self, since: float, shard_id: int | None = None) -> float | None:
        """Seconds from ``since`` to the first acknowledgement (by ``shard_id``) after it."""
        with self.lock:
            for t, sid in self.ack_log:
                if t >= since and (shard_id is None or sid == shard_id):
                    return t - since
        return None


# ---- producers -----------------------------------------------------------------------------


def _body(tube: str, producer: int, seq: int) -> bytes:
    return f"{tube} {producer} {seq}".encode()


def _delay(seq: int) -> int:
    """One put in three is delayed by 1 or 2 s: shards always hold a backlog."""
    return 0 if seq % 3 else 1 + seq % 2


def _paced(start: float, done: int, rate: float) -> None:
    ahead = start + done / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)


def library_producer(
    config_text: str,
    tubes: Sequence[str],
    ledger: Ledger,
    stop: threading.Event,
    producer: int,
    rate: float,
) -> None:
    with Router(parse_config(config_text)) as router:
        seq = 0
        start = time.monotonic()
        while not stop.is_set():
            tube = tubes[(producer + seq) % len(tubes)]
            body = _body(tube, producer, seq)
            ledger.attempt(body, tube)
            give_up = time.monotonic() + PUT_RETRY_DEADLINE
            while True:
                t0 = time.monotonic()
                try:
                    router.use(tube)
                    job_id = router.put(body, delay=_delay(seq), ttr=TTR)
                except PutUncertain:
                    ledger.count("uncertain")
                except (RouterError, OSError):
                    ledger.count("put_errors")
                else:
                    ledger.ack(body, job_id)
                    break
                finally:
                    ledger.call_took(time.monotonic() - t0)
                if time.monotonic() > give_up:
                    ledger.abandoned.append(body)
                    break
                time.sleep(0.05)
            seq += 1
            _paced(start, seq, rate)


def proxy_producer(
    port: int,
    tubes: Sequence[str],
    ledger: Ledger,
    stop: threading.Event,
    producer: int,
    rate: float,
) -> None:
    client: RawClient | None = None
    seq = 0
    start = time.monotonic()
    try:
        while not stop.is_set():
            tube = tubes[(producer + seq) % len(tubes)]
            body = _body(tube, producer, seq)
            ledger.attempt(body, tube)
            give_up = time.monotonic() + PUT_RETRY_DEADLINE
            while True:
                t0 = time.monotonic()
                sent = False
                try:
                    if client is None:
                        client = RawClient("127.0.0.1", port)
                    client.use(tube)
                    sent = True
                    job_id = client.put(body, delay=_delay(seq), ttr=TTR)
                except (OSError, RawError):
                    # Sent and no INSERTED: it may be stored (a duplicate if so).
                    ledger.count("uncertain" if sent else "put_errors")
                    if client is not None:
                        client.close()
                        client = None
                else:
                    ledger.ack(body, job_id)
                    break
                finally:
                    ledger.call_took(time.monotonic() - t0)
                if time.monotonic() > give_up:
                    ledger.abandoned.append(body)
                    break
                time.sleep(0.1)
            seq += 1
            _paced(start, seq, rate)
    finally:
        if client is not None:
            client.close()


# ---- consumers -----------------------------------------------------------------------------


def library_consumer(
    config_text: str, tubes: Sequence[str], ledger: Ledger, stop: threading.Event
) -> None:
    with Router(parse_config(config_text)) as router:
        try:
            _library_consume(router, tubes, ledger, stop)
        finally:
            metrics = router.metrics
            with ledger.lock:
                ledger.give_backs += metrics.give_backs
                ledger.link_failures += sum(metrics.link_failures.values())


def _library_consume(
    router: Router, tubes: Sequence[str], ledger: Ledger, stop: threading.Event
) -> None:
    for tube in tubes:
        router.watch(tube)
    router.ignore("default")
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            job = router.reserve(timeout=RESERVE_TIMEOUT)
        except DeadlineSoon:
            continue
        except (RouterError, OSError):
            ledger.count("consumer_errors")
            time.sleep(0.1)
            continue
        finally:
            ledger.call_took(time.monotonic() - t0)
        if job is None:
            continue
        stats: Mapping[str, StatValue] | None = None
        t0 = time.monotonic()
        with contextlib.suppress(RouterError, OSError):
            stats = router.stats_job(job.id)
        ledger.deliver(job.body, job.id, stats)
        try:
            job.delete()
        except ReservationLost:
            ledger.count("lost_reservations")
        except (RouterError, OSError):
            ledger.count("consumer_errors")
        finally:
            ledger.call_took(time.monotonic() - t0)


def proxy_consumer(port: int, tubes: Sequence[str], ledger: Ledger, stop: threading.Event) -> None:
    client: RawClient | None = None
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                if client is None:
                    client = RawClient("127.0.0.1", port)
                    for tube in tubes:
                        client.watch(tube)
                    client.ignore("default")
                job = client.reserve(RESERVE_TIMEOUT)
                if job is None:
                    continue
                ledger.deliver(job.body, job.id, client.stats_job(job.id))
                if not client.delete(job.id):
                    ledger.count("lost_reservations")
            except (OSError, RawError):
                ledger.count("consumer_errors")
                if client is not None:
                    client.close()
                    client = None
                time.sleep(0.2)
            finally:
                ledger.call_took(time.monotonic() - t0)
    finally:
        if client is not None:
            client.close()


# ---- running and checking ------------------------------------------------------------------


def guarded(ledger: Ledger, target: Callable[[], None]) -> Callable[[], None]:
    """Run ``target``; an unexpected exception is recorded (and fails the scenario)."""

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            ledger.error(f"{threading.current_thread().name}: {exc!r}")

    return run


def shard_job_counts(ports: Sequence[int]) -> dict[int, int | None]:
    """Jobs left (ready + delayed + reserved + buried) per shard port; None: did not answer."""
    counts: dict[int, int | None] = {}
    for port in ports:
        try:
            with RawClient("127.0.0.1", port) as c:
                stats = c.stats()
        except (OSError, RawError):
            counts[port] = None
            continue
        total = 0
        for key in ("ready", "delayed", "reserved", "buried"):
            value = stats.get(f"current-jobs-{key}")
            total += value if isinstance(value, int) else 0
        counts[port] = total
    return counts


@dataclass
class Report:
    scenario: str
    via: str
    backend: str
    acked: int
    consumed: int
    lost: int
    duplicates: int  # deliveries beyond the first, per body
    stored_twice: int  # bodies acknowledged (or stored) under more than one id
    uncertain: int
    put_errors: int
    failovers: int  # acknowledged puts stored on a shard other than the tube's owner
    recover_s: float | None
    drain_s: float
    duration_s: float
    reserves_first_gt1: int  # first deliveries whose stats-job showed reserves > 1
    phantom: int  # reserves beyond the deliveries seen, all jobs
    phantom_checked: int  # the part the check bounds (library: all; proxy: see ``check``)
    phantom_allowed: int  # the bound
    lost_reservations: int
    max_call_s: float
    extra: dict[str, object] = field(default_factory=dict)

    def row(self) -> str:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f}"
        return (
            f"| {self.scenario} | {self.via} | {self.backend} | {self.acked} | {self.consumed} "
            f"| {self.lost} | {self.duplicates} | {self.uncertain} | {self.failovers} "
            f"| {recover} | {self.drain_s:.1f} | {self.duration_s:.0f} "
            f"| {self.reserves_first_gt1} "
            f"| {self.phantom}: {self.phantom_checked} <= {self.phantom_allowed} "
            f"| {self.max_call_s:.1f} |"
        )

    HEADER = (
        "| scenario | via | shards | acked | consumed | lost | duplicates | uncertain puts "
        "| failovers | recover s | drain s | run s | reserves>1 at 1st delivery "
        "| phantom reserves: checked <= bound | longest call s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )


@dataclass
class Check:
    """The result of checking a ledger: ``problems`` empty means the scenario passed."""

    report: Report
    problems: list[str]
    ledger: Ledger


def check(
    ledger: Ledger,
    *,
    scenario: str,
    via: str,
    backend: str,
    placement: Placement,
    shard_ids: dict[str, int],
    restarted: set[int],
    recover_s: float | None,
    drain_s: float,
    duration_s: float,
    leftover: dict[int, int | None],
    hung: list[str],
    faulted: set[int],
    proxy_sessions_closed: int = 0,
) -> Check:
    problems: list[str] = []
    with ledger.lock:
        acked = dict(ledger.acked)
        deliveries = {body: list(d) for body, d in ledger.deliveries.items()}
        attempted = dict(ledger.attempted)
    lost = [body for body in acked if body not in deliveries]
    if lost:
        problems.append(f"{len(lost)} acknowledged jobs never consumed, e.g. {lost[:3]}")
    unknown = [body for body in deliveries if body not in attempted]
    if unknown:
        problems.append(f"{len(unknown)} delivered jobs nobody put, e.g. {unknown[:3]}")
    if ledger.abandoned:
        problems.append(f"{len(ledger.abandoned)} puts never acknowledged (abandoned)")
    if ledger.errors:
        problems.append(f"unexpected exceptions: {ledger.errors[:3]}")
    if hung:
        problems.append(f"threads still running after their deadline: {hung}")
    if ledger.max_call > HANG_LIMIT:
        problems.append(f"a client call took {ledger.max_call:.1f} s (hang limit {HANG_LIMIT} s)")
    left = {port: n for port, n in leftover.items() if n != 0}
    if left:
        problems.append(f"jobs left on shards after the drain (port: jobs): {left}")

    name_of = {sid: name for name, sid in shard_ids.items()}
    failovers = 0
    for body, job_ids in acked.items():
        owner = placement.owner(attempted[body])
        failovers += sum(1 for j in job_ids if name_of.get(ids.decode(j)[0]) != owner)
    duplicates = sum(len(d) - 1 for d in deliveries.values())
    stored_twice = sum(1 for d in deliveries.values() if len({x.job_id for x in d}) > 1)
    first_gt1 = 0
    # Phantom reserves: reserves a job got beyond the deliveries seen (the k-th delivery of a job
    # that shows reserves r has r - k reserves nobody was handed). The core reserves only the
    # job it hands out, so they come from give-backs (the wait's race), from a link that failed
    # with a reserve's reply on the way, or from a session's links closing.
    phantom = 0  # all of them
    phantom_checked = 0  # those on shards the fault left alone (the proxy's allowance)
    released = 0  # of those, ended by a release (only give-backs release: no client does)
    for body, delivered in deliveries.items():
        first = delivered[0].reserves
        if first is not None and first > 1:
            first_gt1 += 1
        per_id: Counter[int] = Counter(x.job_id for x in delivered)
        for job_id, n in per_id.items():
            mine = [x for x in delivered if x.job_id == job_id]
            seen = [x.reserves for x in mine if x.reserves is not None]
            if any(r < 1 for r in seen):
                problems.append(f"job {job_id} ({body!r}) delivered with reserves < 1: {seen}")
            # A shard that was never restarted counts every reserve: the n-th delivery of a job
            # shows reserves >= n (a restart from the binlog may restore older counters).
            shard = ids.decode(job_id)[0]
            if shard not in restarted and seen and seen[-1] < n:
                problems.append(
                    f"job {job_id} ({body!r}) delivered {n} times but stats-job said "
                    f"reserves {seen[-1]}"
                )
            extra = max(
                [x.reserves - k for k, x in enumerate(mine, 1) if x.reserves is not None],
                default=0,
            )
            if extra > 0:
                phantom += extra
                releases = max((x.releases or 0 for x in mine), default=0)
                released += min(extra, releases)
                if shard not in faulted:
                    phantom_checked += max(0, extra - releases)
    if via == "library":
        # The routers count every give-back and every link failure: nothing else may add one.
        allowed = ledger.give_backs + ledger.link_failures
        if phantom > allowed:
            problems.append(
                f"{phantom} phantom reserves, more than the routers' give_backs "
                f"({ledger.give_backs}) + link failures ({ledger.link_failures})"
            )
    else:
        # The proxy's core counters are not visible from outside (it does not export them), so
        # on the shards the fault left alone: every phantom reserve not ended by a release must
        # come from a client connection that ended (its session's links close: at most one
        # reserve in flight per shard) or from the proxy's restart (every session at once).
        allowed = (ledger.consumer_errors + proxy_sessions_closed) * len(shard_ids)
        if phantom_checked > allowed:
            problems.append(
                f"{phantom_checked} phantom reserves (not released) on shards the fault left "
                f"alone, more than {allowed} (client connections ended "
                f"{ledger.consumer_errors} + sessions closed by a proxy restart "
                f"{proxy_sessions_closed}, x {len(shard_ids)} shards)"
            )
    report = Report(
        scenario=scenario,
        via=via,
        backend=backend,
        acked=len(acked),
        consumed=len(deliveries),
        lost=len(lost),
        duplicates=duplicates,
        stored_twice=stored_twice,
        uncertain=ledger.uncertain,
        put_errors=ledger.put_errors,
        failovers=failovers,
        recover_s=recover_s,
        drain_s=drain_s,
        duration_s=duration_s,
        reserves_first_gt1=first_gt1,
        phantom=phantom,
        phantom_checked=phantom if via == "library" else phantom_checked,
        phantom_allowed=allowed,
        lost_reservations=ledger.lost_reservations,
        max_call_s=ledger.max_call,
    )
    report.extra["phantom"] = {
        "reserves": phantom,
        "released": released,
        "on unfaulted shards, not released": phantom_checked,
        "give_backs": ledger.give_backs if via == "library" else "not exported by the proxy",
        "link_failures": ledger.link_failures if via == "library" else "-",
        "consumer_errors": ledger.consumer_errors,
    }
    return Check(report, problems[:12], ledger)
