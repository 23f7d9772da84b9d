"""Fixtures for ``beanrouter rebalance`` against real shards: three servers of one kind (real
beanstalkd or the bundled server, parametrized), a configuration file naming them, greenstalk
clients to set jobs up and read them back, and a runner of the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import greenstalk
import pytest

from beanrouter.core.ring import Placement
from tests.router.cluster import BACKENDS, HOST, REPO_ROOT, Shard, start_all

NAMES = ("s0", "s1", "s2")


@dataclass
class Job:
    """What a job looks like, read back from a shard."""

    shard: str
    id: int
    tube: str
    state: str
    pri: int
    ttr: int
    time_left: int
    body: bytes


@dataclass
class Env:
    backend: str
    shards: dict[str, Shard]
    tmp: Path

    def config(
        self,
        *,
        drain: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        only: tuple[str, ...] = NAMES,
    ) -> Path:
        lines = ["servers:"]
        for i, (name, shard) in enumerate(self.shards.items()):
            if name not in only:
                continue
            flag = " drain=true" if name in drain else ""
            lines.append(f"  - {shard.address} {name} id={i}{flag}")
        lines += [f"  - {line}" for line in extra]
        lines.append("timeout: 10")
        path = self.tmp / f"cluster-{'-'.join(drain) or 'all'}-{len(extra)}-{''.join(only)}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def placement(self, drain: tuple[str, ...] = (), only: tuple[str, ...] = NAMES) -> Placement:
        return Placement([(n, 1) for n in only], 1, drain)

    def tube_on(
        self,
        owner: str,
        prefix: str = "t",
        drain: tuple[str, ...] = (),
        only: tuple[str, ...] = NAMES,
    ) -> str:
        placement = self.placement(drain, only)
        for i in range(10_000):
            if placement.owner(f"{prefix}{i}") == owner:
                return f"{prefix}{i}"
        raise AssertionError(owner)

    def client(self, name: str, tube: str = "default") -> greenstalk.Client[bytes]:
        shard = self.shards[name]
        c: greenstalk.Client[bytes] = greenstalk.Client(
            (HOST, shard.port), encoding=None, use=tube, watch=tube
        )
        return c

    def jobs(self, name: str, tube: str | None = None, upto: int = 100_000) -> list[Job]:
        """Every job on shard ``name`` (of ``tube``), by scanning ids: stats-job, peek."""
        found: list[Job] = []
        with self.client(name) as c:
            top = int(c.stats()["total-jobs"])
            for job_id in range(1, min(top, upto) + 1):
                try:
                    st = c.stats_job(job_id)
                    body = c.peek(job_id).body
                except greenstalk.NotFoundError:
                    continue
                if tube is not None and st["tube"] != tube:
                    continue
                found.append(Job(name, job_id, str(st["tube"]), str(st["state"]),
                                 int(st["pri"]), int(st["ttr"]), int(st["time-left"]),
                                 body))  # fmt: skip
        return found

    def counts(self, name: str, tube: str) -> dict[str, int]:
        with self.client(name) as c:
            try:
                st = c.stats_tube(tube)
            except greenstalk.NotFoundError:
                return {"ready": 0, "delayed": 0, "buried": 0, "reserved": 0}
        return {
            "ready": int(st["current-jobs-ready"]),
            "delayed": int(st["current-jobs-delayed"]),
            "buried": int(st["current-jobs-buried"]),
            "reserved": int(st["current-jobs-reserved"]),
        }

    def run(self, *args: str, journal: str | None = None) -> tuple[int, str, str]:
        """``beanrouter rebalance ARGS`` -> (exit status, stdout, stderr)."""
        return self.command("rebalance", *args, "--journal", journal or str(self.tmp / "journal"))

    def command(self, *args: str) -> tuple[int, str, str]:
        """``beanrouter ARGS`` -> (exit status, stdout, stderr)."""
        proc = subprocess.run(
            [sys.executable, "-m", "beanrouter", *args],
            cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        return proc.returncode, proc.stdout, proc.stderr

    def run_json(self, *args: str, journal: str | None = None) -> tuple[int, dict[str, Any]]:
        code, out, err = self.run(*args, "--json", journal=journal)
        assert out, err
        return code, json.loads(out)

    def spawn(self, *args: str, journal: str | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "beanrouter", "rebalance", *args,
             "--journal", journal or str(self.tmp / "journal")],
            cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), e.get("PYTHONPATH", "")) if p)
    return e


@pytest.fixture(params=BACKENDS)
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    backend: str = request.param
    shards = start_all(backend, len(NAMES))
    try:
        yield Env(backend, dict(zip(NAMES, shards, strict=True)), tmp_path)
    finally:
        for shard in shards:
            shard.stop()
