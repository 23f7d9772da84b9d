"""The scan: jobs on shards where no placement puts their tube (pure).

Consumers of a tube look at its *placed* shards: its owner and failover successors, and, within a
process, its shards under the configurations it reloaded from (``Cluster.placed``). Jobs can sit
elsewhere: put under an earlier configuration before this process started (shards were added,
and a proxy restarted or a new worker started with the new configuration), or put by a process
that still has an older one (a rolling deploy). No process remembers that history, and none has
to: the shards are asked.

A scan sends ``list-tubes`` to every shard of the configuration, then, pipelined on the same
links, ``stats-tube`` for each listed tube the shard is not placed for (in steady state there are
none: a tube exists on a shard only while it has jobs there or a connection uses or watches it).
A tube with jobs there in any state (ready, delayed, buried, reserved) makes the shard one of the
tube's consumer shards (``Cluster.note_scan``): reserves, peeks and kicks of the tube look there
too, and in the proxy the shard's sentinel covers it (a ready job there wakes the tube's waiting
workers within milliseconds). A later scan that finds no job of the tube there drops the shard
again.

When: the proxy scans in the background, at its first client and then every
``stray_scan_interval`` seconds, and at once after a shard comes back up or a reload; the library
scans inline, before a reserve, peek or kick once a scan is due (its first one, then every
``stray_scan_interval``). Before the first scan has ended every session scans itself before it
looks for jobs, so no client's first reserve misses a stranded job. Cost: one round trip per
shard (two when it lists tubes placed elsewhere), in parallel over the shards; nothing while idle
between scans.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..protocol import ListTubes, Ok, StatsTube, Word, parse_list, parse_mapping
from .cluster import ShardState
from .rounds import Op, Send
from .session import Session

__all__ = ["MAX_STATS_PER_ROUND", "jobs_in", "scan"]

MAX_STATS_PER_ROUND = 512
"""``stats-tube`` commands pipelined on one link per round."""

_STATES = ("current-jobs-ready", "current-jobs-delayed", "current-jobs-buried",
           "current-jobs-reserved")  # fmt: skip


def jobs_in(body: bytes) -> int:
    """Jobs in any state, from the body of a ``stats-tube`` reply."""
    stats = parse_mapping(body)
    total = 0
    for key in _STATES:
        value = stats.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            total += value
    return total


def scan(s: Session) -> Op[None]:
    """Scan every shard of the configuration (see the module docstring); a shard that does not
    answer keeps what an earlier scan found there."""
    cl = s.cluster
    cl.scanning = True
    try:
        shards = [cl.shards[sc.name] for sc in cl.config.servers if sc.name in cl.shards]
        listed = yield from s.broadcast(shards, ListTubes().encode(), 1)
        todo: list[tuple[ShardState, list[str]]] = []
        for shard, replies, _ in listed:
            if not replies or not isinstance(replies[0], Ok):
                continue
            tubes = cl.scan_candidates(shard.name, parse_list(replies[0].body))
            if tubes:
                todo.append((shard, tubes))
            else:
                cl.note_scan(shard.name, {})
        counts: dict[str, dict[str, int]] = {shard.name: {} for shard, _ in todo}
        start = 0
        while todo:
            parts = [tubes[start : start + MAX_STATS_PER_ROUND] for _, tubes in todo]
            sends = [
                Send(s.main(shard), _stats(part), len(part))
                for (shard, _), part in zip(todo, parts, strict=True)
            ]
            outcome = yield from s.request(sends)
            failed: set[str] = set()
            for (shard, _), part, send in zip(todo, parts, sends, strict=True):
                result = outcome.get(send.link)
                if not isinstance(result, list) or len(result) != send.replies:
                    failed.add(shard.name)
                    continue
                for tube, reply in zip(part, result, strict=True):
                    if isinstance(reply, Ok):
                        counts[shard.name][tube] = jobs_in(reply.body)
                    elif not (isinstance(reply, Word) and reply.word == "NOT_FOUND"):
                        failed.add(shard.name)
                        s.drop(send.link)
                        break
            start += MAX_STATS_PER_ROUND
            for shard, tubes in todo:
                if shard.name not in failed and len(tubes) <= start:
                    cl.note_scan(shard.name, counts[shard.name])
            todo = [(sh, t) for sh, t in todo if sh.name not in failed and len(t) > start]
        cl.metrics.scans += 1
    finally:
        cl.scan_ended()


def _stats(tubes: Sequence[str]) -> bytes:
    return b"".join(StatsTube(tube).encode() for tube in tubes)
