"""The cluster configuration model: frozen dataclasses, no parsing (pure: no I/O, no YAML).

``ShardConfig`` is one shard, ``ClusterConfig`` a whole cluster. Reading a configuration (YAML
text or Python values, with errors naming the field and line) is ``beanrouter.router.config``'s
job; a process that builds its configuration in memory (``beanrouter cluster``) builds these
directly. See docs/config.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_RETRY", "DEFAULT_RETRY_MAX", "ClusterConfig", "ShardConfig"]

DEFAULT_RETRY = 0.5
DEFAULT_RETRY_MAX = 5.0


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """One shard (one beanstalkd server).

    Attributes:
        name: stable name hashed on the ring (default ``host:port``).
        host: host name or IP address.
        port: TCP port.
        weight: positive integer share of the ring.
        id: stable numeric id in 0..32767, encoded in global job ids.
        id_derived: True when ``id`` was derived from ``name`` rather than given.
        line: 1-based line of the entry in the configuration file; None for Python values.
        drain: True when the shard is being emptied: it is left off the ring (it takes no new
            puts, and tubes it owned go to the owners the ring without it gives), but consumers
            still look at it for the tubes it held until ``beanrouter rebalance`` has emptied it
            (``Placement.consumers``).
    """

    name: str
    host: str
    port: int
    weight: int = 1
    id: int = 0
    id_derived: bool = False
    line: int | None = None
    drain: bool = False

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A whole cluster.

    Attributes:
        servers: the shards, in configuration order.
        failover: successors after a tube's owner that take its puts while the owner is down and
            that its consumers also watch.
        connect_timeout: seconds to wait for a TCP connection.
        timeout: seconds to wait for a reply (blocking reserves excepted).
        server_failure_limit: consecutive failures that mark a shard down.
        server_retry_timeout: seconds before the first probe of a down shard (doubles per failed
            probe).
        server_retry_timeout_max: upper bound of the probe interval.
        server_retry_jitter: probe intervals are multiplied by a random factor in 1 +/- jitter.
        stray_scan_interval: seconds between two looks for jobs on shards outside their tube's
            consumer shards (``Session.scan``).
        hash: the key hash (only ``md5``, ketama's).
        distribution: the placement (only ``ketama``).
        source: the file the configuration came from, if any.
    """

    servers: tuple[ShardConfig, ...]
    failover: int = 1
    connect_timeout: float = 1.0
    timeout: float = 5.0
    server_failure_limit: int = 2
    server_retry_timeout: float = DEFAULT_RETRY
    server_retry_timeout_max: float = DEFAULT_RETRY_MAX
    server_retry_jitter: float = 0.2
    stray_scan_interval: float = 30.0
    hash: str = "md5"
    distribution: str = "ketama"
    source: str | None = field(default=None, compare=False)

    @property
    def draining(self) -> tuple[str, ...]:
        """Names of the shards marked ``drain: true`` (off the ring, still read by consumers)."""
        return tuple(s.name for s in self.servers if s.drain)
