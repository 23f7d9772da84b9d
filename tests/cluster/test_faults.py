"""Fault injection on a containerised cluster while producers and consumers run.

Every scenario: 3 producers put ~100 jobs/s each over 24 tubes, 4 consumers drain, the fault is
injected after 2 s and the load goes on 4 s after the fault ends (and until 2,000 jobs are
acknowledged, on a slow machine); then producers stop and the consumers drain everything. The
checker (``workload.check``) requires: every acknowledged put consumed at least once (none
lost), nothing delivered that nobody put, no put abandoned, no thread hung, every shard empty at
the end, ``reserves`` consistent with the deliveries seen, and the faulted shard (or the proxy)
taking puts again. Duplicates are counted and reported.

``library`` runs go through ``beanrouter.Router`` on the shards' published ports; ``proxy`` runs
through ``beanrouter proxy`` in a container with a raw-protocol client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import docker
import pytest

from . import scenario
from .conftest import make_cluster, record
from .docker_cluster import CONFIG_TAIL, DockerCluster, wait_answers
from .scenario import CONSUMERS, Fault
from .workload import Ledger

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

OUTAGE = 3.0  # seconds a shard stays killed or cut off
# A paused shard is only seen as failed after `timeout` (2 s) x `server_failure_limit` (2).
PAUSE = 6.0


@pytest.fixture(params=["library", "proxy"])
def via(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    if value == "proxy":
        request.getfixturevalue("require_proxy")
    return value


@pytest.fixture
def cluster(docker_client: docker.DockerClient, image: str, via: str) -> Iterator[DockerCluster]:
    yield from make_cluster(docker_client, image, "bundled", proxy=via == "proxy")


@pytest.fixture
def proxy_cluster(
    docker_client: docker.DockerClient, image: str, require_proxy: None
) -> Iterator[DockerCluster]:
    yield from make_cluster(docker_client, image, "bundled", proxy=True)


@pytest.fixture
def beanstalkd_cluster(
    docker_client: docker.DockerClient, beanstalkd_image: str
) -> Iterator[DockerCluster]:
    yield from make_cluster(docker_client, beanstalkd_image, "beanstalkd", proxy=False)


def _kill_restart(cluster: DockerCluster, via: str) -> None:
    """SIGKILL the victim, restart it after OUTAGE seconds; the jobs it held when killed must be
    consumed after the restart (from its binlog: delayed jobs cannot have been consumed)."""
    marks: dict[str, float] = {}

    def fault(_: Ledger) -> Fault:
        name = scenario.victim(cluster)
        shard = cluster.shards[name]
        marks["killed"] = time.monotonic()
        cluster.kill(name)
        time.sleep(OUTAGE)
        cluster.start(name)
        marks["back"] = time.monotonic()
        marks["id"] = shard.shard_id
        wait_answers(shard.port, f"restarted shard {name}")
        sid = shard.shard_id
        return Fault(marks["back"], sid, {sid}, {"victim": name}, True, faulted={sid})

    result = scenario.run(cluster, scenario="sigkill+restart", via=via, fault=fault)
    if "back" in marks:
        restored = result.ledger.restored(int(marks["id"]), marks["killed"], marks["back"])
        result.report.extra["restored_from_binlog"] = restored
        if restored == 0:
            result.problems.append("no job held by the killed shard was consumed after its restart")
    record(result)


def test_shard_sigkill_restart(cluster: DockerCluster, via: str) -> None:
    """SIGKILL a shard mid-stream, restart it: its binlog restores the jobs it acknowledged."""
    _kill_restart(cluster, via)


def test_beanstalkd_shard_sigkill_restart(beanstalkd_cluster: DockerCluster) -> None:
    """The same with Debian's beanstalkd as the shards (its own binlog)."""
    _kill_restart(beanstalkd_cluster, "library")


def test_shard_paused(cluster: DockerCluster, via: str) -> None:
    """`docker pause`: the shard accepts connections but never answers; requests time out, the
    shard is marked down, puts go to its successor; after unpause it is probed and used again."""

    def fault(_: Ledger) -> Fault:
        name = scenario.victim(cluster)
        cluster.pause(name)
        time.sleep(PAUSE)
        cluster.unpause(name)
        sid = cluster.shards[name].shard_id
        return Fault(time.monotonic(), sid, extra={"victim": name}, failover=True, faulted={sid})

    record(scenario.run(cluster, scenario="pause", via=via, fault=fault))


def test_shard_partitioned(cluster: DockerCluster, via: str) -> None:
    """The shard is cut off its network (`docker network disconnect`), then reconnected: from
    the host its port refuses and open connections end; from the proxy it is unreachable."""

    def fault(_: Ledger) -> Fault:
        name = scenario.victim(cluster)
        cluster.disconnect(name)
        time.sleep(OUTAGE)
        cluster.connect(name)
        back = time.monotonic()
        wait_answers(cluster.shards[name].port, f"reconnected shard {name}")
        sid = cluster.shards[name].shard_id
        return Fault(back, sid, extra={"victim": name}, failover=True, faulted={sid})

    record(scenario.run(cluster, scenario="partition", via=via, fault=fault))


def test_proxy_restarted(proxy_cluster: DockerCluster) -> None:
    """`docker restart` of the proxy: clients reconnect; nothing acknowledged is lost."""

    def fault(_: Ledger) -> Fault:
        start = time.monotonic()
        proxy_cluster.restart_proxy()
        wait_answers(proxy_cluster.proxy_port, "the restarted proxy")
        took = round(time.monotonic() - start, 1)
        return Fault(start, None, extra={"restart_s": took}, sessions_closed=CONSUMERS)

    record(scenario.run(proxy_cluster, scenario="proxy restart", via="proxy", fault=fault))


def test_proxy_sighup_adds_shard(proxy_cluster: DockerCluster) -> None:
    """A fourth shard, a new configuration, SIGHUP: puts of the tubes that move go to the new
    shard, and the jobs already on their old owners are still drained (nothing stranded)."""

    def fault(_: Ledger) -> Fault:
        shard = proxy_cluster.add_shard("s4", 4)
        wait_answers(shard.port, "new shard s4")
        hup = time.monotonic()
        proxy_cluster.reload_proxy(["s1", "s2", "s3", "s4"])
        return Fault(hup, shard.shard_id, extra={"added": "s4"})

    # "recovered" here means: an acknowledged put was stored on s4 after the SIGHUP.
    record(scenario.run(proxy_cluster, scenario="SIGHUP +1 shard", via="proxy", fault=fault))


def test_two_shards_added_then_the_proxy_restarted(proxy_cluster: DockerCluster) -> None:
    """Two more shards and the new configuration, then the proxy *restarted* (a deploy, not a
    SIGHUP): the new process never knew the old placement, and still finds the jobs left on
    the old owners of the tubes that moved, delayed ones included, by asking the shards
    (``core/scan.py``): nothing stranded."""

    def fault(_: Ledger) -> Fault:
        added = [proxy_cluster.add_shard("s4", 4), proxy_cluster.add_shard("s5", 5)]
        for shard in added:
            wait_answers(shard.port, f"new shard {shard.name}")
        start = time.monotonic()
        names = ["s1", "s2", "s3", "s4", "s5"]
        proxy_cluster.write_proxy_config(proxy_cluster.config_yaml(internal=True, names=names))
        proxy_cluster.restart_proxy()
        wait_answers(proxy_cluster.proxy_port, "the restarted proxy")
        took = round(time.monotonic() - start, 1)
        return Fault(
            start, None, extra={"added": "s4, s5", "restart_s": took}, sessions_closed=CONSUMERS
        )

    record(scenario.run(proxy_cluster, scenario="+2 shards, proxy restart", via="proxy",
                        fault=fault))  # fmt: skip


def _config(cluster: DockerCluster, names: Sequence[str], drain: str, *, internal: bool) -> str:
    """The cluster file of shards ``names``, ``drain`` (if any) marked ``drain: true``."""
    lines = "".join(
        f"  - {cluster.shards[n].line(internal=internal)}{' drain=true' if n == drain else ''}\n"
        for n in names
    )
    return "servers:\n" + lines + CONFIG_TAIL


def _rebalance(cluster: DockerCluster, names: Sequence[str], tmp: Path, drain: str = "") -> int:
    """``beanrouter rebalance`` from the host (the shards' published ports) until it exits 0
    (1: jobs a consumer held were left; the next run moves them once released). Jobs moved."""
    path = tmp / "host.yaml"
    path.write_text(_config(cluster, names, drain, internal=False))
    args = [sys.executable, "-m", "beanrouter", "rebalance", "--config", str(path), "--json"]
    env = dict(os.environ, XDG_STATE_HOME=str(tmp))
    moved = 0
    for _ in range(20):
        done = subprocess.run(
            [*args, *(["--drain", drain] if drain else [])],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
        report = json.loads(done.stdout)
        assert report["duplicates"] == 0, report
        moved += int(report["moved_total"])
        if done.returncode == 0:
            return moved
        time.sleep(0.5)
    raise AssertionError(f"rebalance still leaves jobs after 20 runs: {done.stdout[-2000:]}")


def test_grow_rebalance_drain_and_remove_under_load(
    proxy_cluster: DockerCluster, tmp_path: Path
) -> None:
    """The whole life of a growing cluster under load: two shards added and the proxy restarted
    with the new file; ``beanrouter rebalance`` moves the jobs of the tubes that moved home; then
    one shard is drained (``drain: true``, the proxy restarted, ``rebalance --drain``) and
    removed from the file (the proxy restarted again): 0 acknowledged jobs lost, every shard
    empty at the end (docs/operations.md, *Growing and shrinking*)."""
    cluster = proxy_cluster
    five = ["s1", "s2", "s3", "s4", "s5"]

    def restart(names: Sequence[str], drain: str = "") -> None:
        cluster.write_proxy_config(_config(cluster, names, drain, internal=True))
        cluster.restart_proxy()
        wait_answers(cluster.proxy_port, "the restarted proxy")

    def fault(_: Ledger) -> Fault:
        for shard in (cluster.add_shard("s4", 4), cluster.add_shard("s5", 5)):
            wait_answers(shard.port, f"new shard {shard.name}")
        start = time.monotonic()
        restart(five)
        moved = _rebalance(cluster, five, tmp_path)
        restart(five, drain="s5")
        drained = _rebalance(cluster, five, tmp_path, drain="s5")
        restart(five[:4])
        took = round(time.monotonic() - start, 1)
        extra: dict[str, object] = {"moved": moved, "drained_from_s5": drained, "steps_s": took}
        return Fault(start, None, extra=extra, sessions_closed=3 * CONSUMERS)

    record(scenario.run(cluster, scenario="+2 shards, rebalance, drain -1", via="proxy",
                        fault=fault))  # fmt: skip
