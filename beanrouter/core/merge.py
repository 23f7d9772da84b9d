"""Merging the shards' ``stats`` and ``stats-tube`` mappings into one cluster's (pure).

``stats``: job, command, connection and resource counters are summed; limits and settings that
hold for the cluster are combined (``max-job-size``: the smallest, since every shard must accept a
job; ``uptime``: the smallest; ``draining``: true if any shard drains; ``version``/``os``/
``platform``: the common value, or the distinct values joined with ``,``); ``current-tubes`` is
the number of distinct tube names; per-process keys that name one machine (``pid``, ``hostname``,
``id``, ``binlog-oldest-index``, ``binlog-current-index``) are dropped; ``shards`` and
``shards-up`` are added. Unknown keys from newer servers: summed when every value is an integer,
else combined like ``version``. Key order follows the first shard's.

``stats-tube``: counters are summed; ``pause`` and ``pause-time-left`` take the largest value, and
so does ``cmd-pause-tube``: a ``pause-tube`` goes to every shard where the tube exists, each
counting it once, so the largest count is the number of ``pause-tube`` commands (a sum would count
one per shard; pystalk's suite checks it is 1 after one pause).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..protocol import StatValue

__all__ = ["DROPPED_STATS", "SUMMED_STATS", "merge_stats", "merge_stats_tube"]

SUMMED_STATS = frozenset(
    {
        "current-jobs-urgent",
        "current-jobs-ready",
        "current-jobs-reserved",
        "current-jobs-delayed",
        "current-jobs-buried",
        "job-timeouts",
        "total-jobs",
        "current-connections",
        "current-producers",
        "current-workers",
        "current-waiting",
        "total-connections",
        "rusage-utime",
        "rusage-stime",
        "binlog-records-migrated",
        "binlog-records-written",
    }
)
"""Keys of ``stats`` summed across shards (plus every ``cmd-*`` counter)."""

DROPPED_STATS = frozenset({"pid", "hostname", "id", "binlog-oldest-index", "binlog-current-index"})
"""Keys of ``stats`` that describe one process and are left out of the cluster's."""

_MIN_STATS = frozenset({"max-job-size", "uptime", "binlog-max-size"})
_TUBE_MAX = frozenset({"pause", "pause-time-left", "cmd-pause-tube", "name"})


def _combine_text(values: Sequence[StatValue]) -> StatValue:
    distinct: list[StatValue] = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    return distinct[0] if len(distinct) == 1 else ",".join(str(v) for v in distinct)


def _sum(values: Sequence[StatValue]) -> StatValue:
    if all(isinstance(v, float) for v in values):
        return round(sum(float(v) for v in values), 6)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return sum(int(v) for v in values)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return round(sum(float(v) for v in values), 6)
    return _combine_text(values)


def _keys(parts: Sequence[Mapping[str, StatValue]]) -> list[str]:
    keys: list[str] = []
    seen: set[str] = set()
    for part in parts:
        for k in part:
            if k not in seen:
                seen.add(k)
                keys.append(k)
    return keys


def merge_stats(
    parts: Sequence[Mapping[str, StatValue]], tube_count: int, shards: int
) -> dict[str, StatValue]:
    """The cluster's ``stats`` from the shards that answered.

    Args:
        parts: one parsed ``stats`` mapping per shard that answered (at least one).
        tube_count: number of distinct tubes across those shards.
        shards: number of configured shards.
    """
    if not parts:
        raise ValueError("no shard stats to merge")
    merged: dict[str, StatValue] = {}
    for key in _keys(parts):
        if key in DROPPED_STATS:
            continue
        values = [p[key] for p in parts if key in p]
        if key == "current-tubes":
            merged[key] = tube_count
        elif key == "draining":
            merged[key] = any(v is True for v in values)
        elif key in _MIN_STATS and all(isinstance(v, int) for v in values):
            merged[key] = min(int(v) for v in values)
        elif key in SUMMED_STATS or key.startswith("cmd-"):
            merged[key] = _sum(values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            merged[key] = sum(int(v) for v in values)
        else:
            merged[key] = _combine_text(values)
    merged["shards"] = shards
    merged["shards-up"] = len(parts)
    return merged


def merge_stats_tube(parts: Sequence[Mapping[str, StatValue]]) -> dict[str, StatValue]:
    """The cluster's ``stats-tube`` from the shards where the tube exists (at least one)."""
    if not parts:
        raise ValueError("no tube stats to merge")
    merged: dict[str, StatValue] = {}
    for key in _keys(parts):
        values = [p[key] for p in parts if key in p]
        if key == "name":
            merged[key] = values[0]
        elif key in _TUBE_MAX and all(isinstance(v, int) for v in values):
            merged[key] = max(int(v) for v in values)
        else:
            merged[key] = _sum(values)
    return merged
