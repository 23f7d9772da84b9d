"""A cluster of shard containers (and optionally the proxy) driven by the docker SDK.

Each ``DockerCluster`` has its own bridge network, one named volume per shard (its binlog) and
containers labelled ``beanrouter.test=<run id>``; every port is published on 127.0.0.1 at a
fixed host port chosen free at creation, so a restarted container comes back on the same
address. Shards are reached from the host through those ports (the library) and from the proxy
container by their container names. Faults: SIGKILL + restart, pause, network
disconnect + reconnect, proxy restart and SIGHUP with a new configuration.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network

from tests.ports import free_port

from .rawclient import RawClient

LABEL = "beanrouter.test"
PID_LABEL = "beanrouter.test.pid"  # the test process that owns the resource
PROXY_CONFIG = "/etc/beanrouter/cluster.yaml"
BACKEND_COMMANDS = {
    "bundled": ["beanrouter", "server", "-l", "0.0.0.0", "-p", "11300", "-b", "/data"],
    "beanstalkd": ["beanstalkd", "-l", "0.0.0.0", "-p", "11300", "-b", "/data"],
}
# Short timeouts so that faults are seen, marked and recovered from within seconds.
CONFIG_TAIL = """failover: 1
connect_timeout: 1.0
timeout: 2.0
server_failure_limit: 2
server_retry_timeout: 0.5
server_retry_timeout_max: 2
server_retry_jitter: 0.2
"""


def answers(port: int, timeout: float = 1.0) -> bool:
    """A beanstalkd-protocol server answers ``stats`` on 127.0.0.1:``port``."""
    try:
        with RawClient("127.0.0.1", port, timeout=timeout) as c:
            c.stats()
        return True
    except (OSError, Exception):
        return False


def wait_answers(port: int, what: str, deadline: float = 30.0) -> float:
    """Seconds until ``port`` answers; AssertionError after ``deadline`` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if answers(port):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what} did not answer on 127.0.0.1:{port} within {deadline:.0f} s")


def _orphaned(labels: dict[str, str] | None) -> bool:
    """The resource belongs to a test process of this machine that no longer runs."""
    try:
        pid = int((labels or {}).get(PID_LABEL, ""))
    except ValueError:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_leftovers(client: docker.DockerClient) -> None:
    """Containers, networks and volumes left by test runs that died without cleaning up (runs
    still going, in other processes, keep theirs)."""
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        if _orphaned(c.labels):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)
    for n in client.networks.list(filters={"label": LABEL}):
        if _orphaned(n.attrs.get("Labels")):
            with contextlib.suppress(docker.errors.APIError):
                n.remove()
    for v in client.volumes.list(filters={"label": LABEL}):
        if _orphaned(v.attrs.get("Labels")):
            with contextlib.suppress(docker.errors.APIError):
                v.remove(force=True)


@dataclass
class Shard:
    name: str
    shard_id: int
    port: int
    container: Container
    restarts: int = 0

    def line(self, *, internal: bool) -> str:
        # The proxy container reaches a shard by its container name on the cluster's network.
        address = f"{self.container.name}:11300" if internal else f"127.0.0.1:{self.port}"
        return f"{address} {self.name} id={self.shard_id}"


@dataclass
class DockerCluster:
    client: docker.DockerClient
    image: str
    backend: str = "bundled"
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    shards: dict[str, Shard] = field(default_factory=dict)
    proxy: Container | None = None
    proxy_port: int = 0
    network: Network = field(init=False)

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.run, PID_LABEL: str(os.getpid())}

    def __post_init__(self) -> None:
        self.network = self.client.networks.create(
            f"brtest-{self.run}", driver="bridge", labels=self.labels
        )

    # ---- shards ------------------------------------------------------------------------
    def add_shard(self, name: str, shard_id: int) -> Shard:
        volume = self.client.volumes.create(f"brtest-{self.run}-{name}", labels=self.labels)
        port = free_port()
        container = self.client.containers.create(
            self.image,
            command=BACKEND_COMMANDS[self.backend],
            name=f"brtest-{self.run}-{name}",
            hostname=name,
            labels=self.labels,
            ports={"11300/tcp": ("127.0.0.1", port)},
            volumes={volume.name: {"bind": "/data", "mode": "rw"}},
            network=self.network.name,
        )
        container.start()
        shard = Shard(name, shard_id, port, container)
        self.shards[name] = shard
        return shard

    def start_shards(self, count: int) -> None:
        for i in range(1, count + 1):
            self.add_shard(f"s{i}", i)
        for shard in self.shards.values():
            wait_answers(shard.port, f"shard {shard.name}")

    def lines(self, *, internal: bool, names: Sequence[str] | None = None) -> list[str]:
        chosen = self.shards if names is None else names
        return [self.shards[n].line(internal=internal) for n in chosen]

    def config_yaml(self, *, internal: bool, names: Sequence[str] | None = None) -> str:
        servers = "".join(f"  - {line}\n" for line in self.lines(internal=internal, names=names))
        return "servers:\n" + servers + CONFIG_TAIL

    def kill(self, name: str) -> None:
        c = self.shards[name].container
        c.kill(signal="SIGKILL")
        c.wait(timeout=30)

    def start(self, name: str) -> None:
        shard = self.shards[name]
        shard.container.start()
        shard.restarts += 1

    def pause(self, name: str) -> None:
        # The cgroup v1 freezer may fail to freeze a busy process at the first try ("unable to
        # freeze"): retry a few times.
        for attempt in range(10):
            try:
                self.shards[name].container.pause()
                return
            except docker.errors.APIError:
                if attempt == 9:
                    raise
                time.sleep(0.2)

    def unpause(self, name: str) -> None:
        self.shards[name].container.unpause()

    def disconnect(self, name: str) -> None:
        self.network.disconnect(self.shards[name].container)

    def connect(self, name: str) -> None:
        self.network.connect(self.shards[name].container)

    # ---- proxy -------------------------------------------------------------------------
    def start_proxy(self, names: Sequence[str] | None = None) -> None:
        self.proxy_port = free_port()
        self.proxy = self.client.containers.create(
            self.image,
            command=[
                "beanrouter",
                "proxy",
                "--config",
                PROXY_CONFIG,
                "-l",
                "0.0.0.0",
                "-p",
                "11300",
            ],
            name=f"brtest-{self.run}-proxy",
            hostname="proxy",
            labels=self.labels,
            ports={"11300/tcp": ("127.0.0.1", self.proxy_port)},
            network=self.network.name,
        )
        self.write_proxy_config(self.config_yaml(internal=True, names=names))
        self.proxy.start()
        try:
            wait_answers(self.proxy_port, "the proxy")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{self.proxy_log()}") from None

    def write_proxy_config(self, text: str) -> None:
        assert self.proxy is not None
        data = text.encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("cluster.yaml")
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        assert self.proxy.put_archive("/etc/beanrouter", buf.getvalue())

    def reload_proxy(self, names: Sequence[str]) -> None:
        """New configuration file, then SIGHUP."""
        assert self.proxy is not None
        self.write_proxy_config(self.config_yaml(internal=True, names=names))
        self.proxy.kill(signal="SIGHUP")

    def restart_proxy(self) -> None:
        assert self.proxy is not None
        self.proxy.restart(timeout=10)

    def proxy_log(self, tail: int = 40) -> str:
        if self.proxy is None:
            return ""
        log: bytes = self.proxy.logs(tail=tail)
        return log.decode(errors="replace")

    # ---- teardown ----------------------------------------------------------------------
    def remove(self) -> None:
        containers: list[Any] = [s.container for s in self.shards.values()]
        if self.proxy is not None:
            containers.append(self.proxy)
        for c in containers:
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.APIError):
            self.network.remove()
        for v in self.client.volumes.list(filters={"label": f"{LABEL}={self.run}"}):
            with contextlib.suppress(docker.errors.APIError):
                v.remove(force=True)
