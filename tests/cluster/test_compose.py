"""compose/docker-compose.yml as a user runs it (docker-compose 1.29 or `docker compose` v2).

The shards come up healthy on 127.0.0.1 only, the library reaches them on their published
ports, their binlogs live on the named volumes (a SIGKILL of every shard loses nothing), the
proxy (when this build has it) serves the same cluster, and `down -v` removes it all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from beanrouter.router import Router
from tests.ports import free_port

from .conftest import unavailable
from .rawclient import RawClient

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
SHARDS = ("shard1", "shard2", "shard3")


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    unavailable("neither docker-compose nor `docker compose` is installed")
    raise AssertionError("unreachable")


class Compose:
    def __init__(self, backend: str, image: str, beanstalkd_image: str) -> None:
        self.project = f"brtest-compose-{os.getpid()}-{backend}"
        files = ["-f", str(COMPOSE_DIR / "docker-compose.yml")]
        if backend == "beanstalkd":
            files += ["-f", str(COMPOSE_DIR / "docker-compose.beanstalkd.yml")]
        self.base = [*compose_command(), "-p", self.project, *files]
        self.ports = {name: free_port() for name in ("proxy", *SHARDS)}
        self.env = {
            **os.environ,
            "BEANROUTER_IMAGE": image,
            "BEANROUTER_BEANSTALKD_IMAGE": beanstalkd_image,
            "BEANROUTER_PORT": str(self.ports["proxy"]),
            **{f"BEANROUTER_SHARD{i}_PORT": str(self.ports[f"shard{i}"]) for i in (1, 2, 3)},
        }

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            [*self.base, *args], env=self.env, capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def lines(self) -> list[str]:
        return [f"127.0.0.1:{self.ports[n]} {n} id={n[-1]}" for n in SHARDS]


def wait_healthy(client: docker.DockerClient, project: str, count: int) -> None:
    deadline = time.monotonic() + 60
    label = f"com.docker.compose.project={project}"
    while time.monotonic() < deadline:
        states = [
            c.attrs["State"].get("Health", {}).get("Status")
            for c in client.containers.list(filters={"label": label})
        ]
        if len(states) == count and all(s == "healthy" for s in states):
            return
        time.sleep(0.5)
    raise AssertionError(f"project {project}: not {count} healthy containers after 60 s: {states}")


@pytest.fixture(params=["bundled", "beanstalkd"])
def compose(
    request: pytest.FixtureRequest,
    docker_client: docker.DockerClient,
    image: str,
    beanstalkd_image: str,
) -> Iterator[Compose]:
    c = Compose(request.param, image, beanstalkd_image)
    try:
        yield c
    finally:
        c("down", "-v", "--remove-orphans")


def test_compose_cluster(
    compose: Compose, docker_client: docker.DockerClient, proxy_available: str | None
) -> None:
    services = [*SHARDS, "proxy"] if proxy_available is None else list(SHARDS)
    compose("up", "-d", "--no-build", *services)
    wait_healthy(docker_client, compose.project, len(services))
    for container in docker_client.containers.list(
        filters={"label": f"com.docker.compose.project={compose.project}"}
    ):
        for bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).values():
            assert all(b["HostIp"] == "127.0.0.1" for b in bindings or []), bindings

    tubes = [f"compose{i}" for i in range(12)]
    bodies: set[bytes] = set()
    with Router(compose.lines()) as r:
        for i in range(60):
            r.use(tubes[i % len(tubes)])
            body = f"job {i}".encode()
            r.put(body, delay=i % 2)
            bodies.add(body)
        used = {r.shard_for(t) for t in tubes}
    assert used == set(SHARDS), used

    # Every shard SIGKILLed and started again: the binlogs on the named volumes bring all back.
    compose("kill", "-s", "SIGKILL", *SHARDS)
    compose("start", *SHARDS)
    wait_healthy(docker_client, compose.project, len(services))
    got: set[bytes] = set()
    with Router(compose.lines()) as r:
        for t in tubes:
            r.watch(t)
        deadline = time.monotonic() + 30
        while got != bodies and time.monotonic() < deadline:
            job = r.reserve(timeout=2)
            if job is not None:
                got.add(job.body)
                job.delete()
    assert got == bodies, f"{len(bodies - got)} jobs lost across the restart"

    if proxy_available is None:
        with RawClient("127.0.0.1", compose.ports["proxy"]) as c:
            c.use("through-proxy")
            job_id = c.put(b"via the proxy")
            c.watch("through-proxy")
            reserved = c.reserve(5)
            assert reserved is not None
            assert (reserved.id, reserved.body) == (job_id, b"via the proxy")
            assert c.delete(job_id)

    ours = [v.name for v in docker_client.volumes.list() if v.name.startswith(compose.project)]
    assert len(ours) >= 3, ours  # the shards' binlog volumes
    compose("down", "-v", "--remove-orphans")
    left = [v.name for v in docker_client.volumes.list() if v.name.startswith(compose.project)]
    assert not left, left
    assert not docker_client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={compose.project}"}
    )
