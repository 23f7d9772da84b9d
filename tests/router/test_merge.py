"""Merging stats across shards (pure)."""

from __future__ import annotations

from beanrouter.core.merge import merge_stats, merge_stats_tube
from beanrouter.protocol import StatValue


def _stats(**kw: StatValue) -> dict[str, StatValue]:
    base: dict[str, StatValue] = {
        "current-jobs-ready": 1,
        "cmd-put": 10,
        "cmd-reserve": 2,
        "job-timeouts": 0,
        "total-jobs": 10,
        "max-job-size": 65535,
        "current-tubes": 2,
        "current-connections": 3,
        "pid": 123,
        "version": "1.12",
        "rusage-utime": 0.5,
        "uptime": 100,
        "binlog-current-index": 3,
        "draining": False,
        "id": "abc",
        "hostname": "h",
        "os": "x",
    }
    base.update(kw)
    return base


def test_merge_stats() -> None:
    merged = merge_stats(
        [_stats(), _stats(**{"cmd-put": 5, "max-job-size": 100, "uptime": 7, "draining": True})],
        tube_count=3,
        shards=3,
    )
    assert merged["current-jobs-ready"] == 2
    assert merged["cmd-put"] == 15 and merged["cmd-reserve"] == 4
    assert merged["total-jobs"] == 20 and merged["current-connections"] == 6
    assert merged["max-job-size"] == 100 and merged["uptime"] == 7
    assert merged["current-tubes"] == 3
    assert merged["draining"] is True
    assert merged["rusage-utime"] == 1.0
    assert merged["version"] == "1.12" and merged["os"] == "x"
    for dropped in ("pid", "hostname", "id", "binlog-current-index"):
        assert dropped not in merged
    assert merged["shards"] == 3 and merged["shards-up"] == 2
    assert list(merged)[:2] == ["current-jobs-ready", "cmd-put"]


def test_mixed_versions_are_listed() -> None:
    merged = merge_stats([_stats(), _stats(version="1.13")], 2, 2)
    assert merged["version"] == "1.12,1.13"


def test_merge_stats_tube() -> None:
    a: dict[str, StatValue] = {"name": "t", "current-jobs-ready": 2, "total-jobs": 5,
                               "pause": 0, "pause-time-left": 0}  # fmt: skip
    b: dict[str, StatValue] = {"name": "t", "current-jobs-ready": 1, "total-jobs": 1,
                               "pause": 10, "pause-time-left": 9}  # fmt: skip
    merged = merge_stats_tube([a, b])
    assert merged == {"name": "t", "current-jobs-ready": 3, "total-jobs": 6, "pause": 10,
                      "pause-time-left": 9}  # fmt: skip


def test_merge_stats_tube_counts_a_broadcast_pause_once() -> None:
    # One pause-tube reached both shards where the tube exists (each counted it); the older
    # shard saw an earlier one too. cmd-delete is per job, hence summed.
    a: dict[str, StatValue] = {"name": "t", "cmd-delete": 2, "cmd-pause-tube": 2, "pause": 5}
    b: dict[str, StatValue] = {"name": "t", "cmd-delete": 1, "cmd-pause-tube": 1, "pause": 5}
    merged = merge_stats_tube([a, b])
    assert merged == {"name": "t", "cmd-delete": 3, "cmd-pause-tube": 2, "pause": 5}
