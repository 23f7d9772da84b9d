"""A shard SIGKILLed mid-stream while producers and consumers run.

Shards run with ``-b`` (a binlog), so the killed shard comes back with every job it
acknowledged: no acknowledged job may be lost, and the consumers drain everything; puts never
fail while a successor is up. Both backends (real beanstalkd and the bundled server) run with
their binlog.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from beanrouter.core import ids
from beanrouter.core.ring import Placement
from beanrouter.router import PutUncertain, Router, RouterError

from .cluster import BACKENDS, start_all, stats
from .conftest import NAMES, server_lines


@pytest.mark.parametrize("backend", BACKENDS)
def test_shard_killed_mid_stream(backend: str, tmp_path: Path) -> None:
    dirs: list[str | None] = []
    for name in NAMES:
        d = tmp_path / name
        d.mkdir()
        dirs.append(str(d))
    started = start_all(backend, 3, dirs)
    shards = dict(zip(NAMES, started, strict=True))
    lines = server_lines(list(shards.values()))
    placement = Placement([(n, 1) for n in NAMES])
    victim = "s1"
    victim_id = int(next(line for line in lines if f" {victim} " in line).split("id=")[1])
    tubes: list[str] = []
    for i in range(2000):
        tube = f"k{i}"
        if len(tubes) < 6 and placement.owner(tube) == NAMES[len(tubes) % 3]:
            tubes.append(tube)
    assert len(tubes) == 6
    acked: dict[bytes, int] = {}
    acked_at: dict[bytes, float] = {}
    uncertain: set[bytes] = set()
    consumed: set[bytes] = set()
    put_errors: list[str] = []
    stop_producing = threading.Event()
    stop_consuming = threading.Event()
    killed_at: list[float] = []

    def produce() -> None:
        with Router(lines, timeout=2.0) as r:
            i = 0
            while not stop_producing.is_set():
                r.use(tubes[i % len(tubes)])
                body = f"job-{i}".encode()
                try:
                    jid = r.put(body, ttr=5)
                except PutUncertain:
                    uncertain.add(body)
                except RouterError as exc:
                    put_errors.append(repr(exc))
                else:
                    acked[body] = jid
                    acked_at[body] = time.monotonic()
                i += 1
                if i % 20 == 0:
                    time.sleep(0.005)

    def consume() -> None:
        with Router(lines, timeout=2.0) as r:
            for tube in tubes:
                r.watch(tube)
            r.ignore("default")
            while not stop_consuming.is_set():
                try:
                    job = r.reserve(timeout=0.5)
                except RouterError:
                    time.sleep(0.05)
                    continue
                if job is None:
                    continue
                consumed.add(job.body)
                # If the shard died with the job reserved, it will be delivered again.
                with contextlib.suppress(RouterError):
                    job.delete()

    threads = [threading.Thread(target=produce)] + [
        threading.Thread(target=consume) for _ in range(2)
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(0.7)
        shards[victim].kill()
        killed_at.append(time.monotonic())
        time.sleep(1.0)
        shards[victim].restart()
        time.sleep(0.7)
        stop_producing.set()
        threads[0].join(timeout=30)
        deadline = time.monotonic() + 20
        expected = set(acked)
        while time.monotonic() < deadline and not expected <= consumed:
            time.sleep(0.1)
    finally:
        stop_producing.set()
        stop_consuming.set()
        for t in threads:
            t.join(timeout=30)
    try:
        assert not put_errors, put_errors[:3]
        assert len(acked) > 200
        assert any(ids.decode(j)[0] == victim_id for j in acked.values())
        missing = expected - consumed
        assert not missing, f"{len(missing)} acknowledged jobs never consumed"
        assert consumed <= set(acked) | uncertain
        left = sum(int(stats(s.address)["current-jobs-reserved"]) for s in shards.values())
        assert left == 0
    finally:
        for shard in shards.values():
            shard.stop()
