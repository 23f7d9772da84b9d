"""One fault scenario: start the workload, inject the fault while it runs, drain, check."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from beanrouter.core.ring import Placement

from .docker_cluster import DockerCluster
from .workload import (
    PUT_RETRY_DEADLINE,
    Check,
    Ledger,
    check,
    guarded,
    library_consumer,
    library_producer,
    proxy_consumer,
    proxy_producer,
    shard_job_counts,
)

TUBES = tuple(f"t{i:02d}" for i in range(24))
PRODUCERS = 3
CONSUMERS = 4
RATE = 100.0  # puts per second per producer
WARMUP = 2.0  # seconds of load before the fault
SETTLE = 4.0  # seconds of load after the fault ends
DRAIN_DEADLINE = 120.0
# Producers go on after SETTLE until this many jobs are acknowledged (on a slow or busy machine)
# and the fault has been recovered from, for at most TOP_UP seconds more: the size of the run does
# not depend on the machine's speed, nor the verdict on when a backed-off probe happens to fire.
MIN_JOBS = 2000
TOP_UP = 60.0


@dataclass
class Fault:
    """What the fault did, for the checker and the report."""

    recover_since: float  # recovery is timed from here (the fault's end)
    recover_shard: int | None  # recovered = an acknowledged put stored on this shard again
    restarted: set[int] = field(default_factory=set)  # shard ids whose process was restarted
    extra: dict[str, object] = field(default_factory=dict)
    failover: bool = False  # puts must have gone to a successor while the shard was out
    faulted: set[int] = field(default_factory=set)  # shard ids whose links the fault broke
    sessions_closed: int = 0  # proxy sessions the fault ended (a proxy restart: every one)


def victim(cluster: DockerCluster) -> str:
    """The shard that owns the most of the scenario's tubes."""
    placement = Placement([(name, 1) for name in cluster.shards])
    owners = [placement.owner(t) for t in TUBES]
    return max(cluster.shards, key=owners.count)


def run(
    cluster: DockerCluster,
    *,
    scenario: str,
    via: str,
    fault: Callable[[Ledger], Fault],
) -> Check:
    placement = Placement([(name, 1) for name in cluster.shards])  # the ring at the start
    config = cluster.config_yaml(internal=False)
    ledger = Ledger()
    stop_producing = threading.Event()
    stop_consuming = threading.Event()
    producers: list[threading.Thread] = []
    consumers: list[threading.Thread] = []
    for i in range(PRODUCERS):
        produce: Callable[[], None] = (
            partial(library_producer, config, TUBES, ledger, stop_producing, i, RATE)
            if via == "library"
            else partial(proxy_producer, cluster.proxy_port, TUBES, ledger, stop_producing, i, RATE)
        )
        producers.append(threading.Thread(target=guarded(ledger, produce), name=f"producer-{i}"))
    for i in range(CONSUMERS):
        consume: Callable[[], None] = (
            partial(library_consumer, config, TUBES, ledger, stop_consuming)
            if via == "library"
            else partial(proxy_consumer, cluster.proxy_port, TUBES, ledger, stop_consuming)
        )
        consumers.append(threading.Thread(target=guarded(ledger, consume), name=f"consumer-{i}"))
    started = time.monotonic()
    hung: list[str] = []
    for t in producers + consumers:
        t.daemon = True
        t.start()
    try:
        time.sleep(WARMUP)
        done = fault(ledger)
        time.sleep(SETTLE)
        top_up = time.monotonic() + TOP_UP

        def unrecovered() -> bool:  # (the faulted shard's probes back off: give them time)
            return ledger.first_ack_after(done.recover_since, done.recover_shard) is None

        while (
            (len(ledger.acked) < MIN_JOBS or unrecovered())
            and time.monotonic() < top_up
            and not ledger.errors
        ):
            time.sleep(0.2)
    finally:
        stop_producing.set()
        for t in producers:
            t.join(timeout=PUT_RETRY_DEADLINE + 15)
        ports = [s.port for s in cluster.shards.values()]  # with any shard the fault added
        drain_start = time.monotonic()
        leftover: dict[int, int | None] = {}
        while time.monotonic() - drain_start < DRAIN_DEADLINE:
            if ledger.all_delivered():
                leftover = shard_job_counts(ports)
                if all(n == 0 for n in leftover.values()):
                    break
            time.sleep(0.25)
        else:
            leftover = shard_job_counts(ports)
        drain_s = time.monotonic() - drain_start
        stop_consuming.set()
        for t in consumers:
            t.join(timeout=15)
        hung = [t.name for t in producers + consumers if t.is_alive()]
    recover_s = ledger.first_ack_after(done.recover_since, done.recover_shard)
    result = check(
        ledger,
        scenario=scenario,
        via=via,
        backend=cluster.backend,
        placement=placement,
        shard_ids={name: s.shard_id for name, s in cluster.shards.items()},
        restarted=done.restarted,
        recover_s=recover_s,
        drain_s=drain_s,
        duration_s=time.monotonic() - started,
        leftover=leftover,
        hung=hung,
        faulted=done.faulted,
        proxy_sessions_closed=done.sessions_closed,
    )
    result.report.extra.update(done.extra)
    if recover_s is None:
        result.problems.append(
            "never recovered: no acknowledged put "
            + ("after the fault" if done.recover_shard is None else "on the faulted shard")
        )
    if done.failover and result.report.failovers == 0:
        result.problems.append("no put failed over to a successor during the outage")
    if result.report.acked < 1000:
        result.problems.append(
            f"only {result.report.acked} jobs acknowledged: the load did not run"
        )
    return result
