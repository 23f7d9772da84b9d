"""``check_config``: validate a configuration file and describe where tubes will go (pure text).

This is what ``beanrouter check-config FILE`` prints; errors are ``ConfigError`` with line and
field, for the command line to print and exit non-zero, and ``InvalidArgument`` for a tube name
beanstalkd would refuse (it is not placed: no put could ever reach it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..core.config import ClusterConfig
from ..core.errors import invalid_argument
from ..core.ring import Placement
from ..protocol import LocalProtocolError, Use
from .config import load_config

__all__ = ["check_config", "check_tube_names", "placement_summary"]

_SAMPLE_TUBES = ("default",)


def check_tube_names(tubes: Iterable[str]) -> tuple[str, ...]:
    """The tube names, each checked by the codec (as a ``use`` would be).

    Raises:
        InvalidArgument: the first name that is not a valid beanstalkd tube name.
    """
    names = tuple(tubes)
    for tube in names:
        try:
            Use(tube)
        except LocalProtocolError as exc:
            raise invalid_argument(exc, "tube") from exc
    return names


def placement_summary(config: ClusterConfig, tubes: Sequence[str] = _SAMPLE_TUBES) -> str:
    """A human-readable table of shards (id, address, weight, points, share of the ring) and the
    preference list of a few tubes.

    Raises:
        InvalidArgument: a tube name is not valid.
    """
    tubes = check_tube_names(tubes)
    placement = Placement.from_config(config)
    ring = placement.ring
    points = ring.point_counts()
    shares = ring.shares()
    source = config.source or "configuration"
    n = len(config.servers)
    drains = len(config.draining)
    depth = min(config.failover, n - drains - 1)
    lines = [
        f"{source}: OK, {n} shard{'s' if n != 1 else ''}, ketama/md5, {ring.points} points,"
        f" failover {config.failover}"
        + (
            f" (effective {depth}: only {n - drains} shards take puts)"
            if depth < config.failover
            else ""
        )
        + (f", {drains} draining" if drains else ""),
    ]
    rows = [("shard", "id", "address", "weight", "points", "share")]
    for s in config.servers:
        shard_id = f"{s.id}" + (" (derived)" if s.id_derived else "")
        if s.drain:
            rows.append((s.name, shard_id, s.address, str(s.weight), "-", "draining"))
            continue
        rows.append((s.name, shard_id, s.address, str(s.weight), str(points[s.name]),
                     f"{shares[s.name] * 100:.1f}%"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    lines.append(
        f"timeouts: connect {config.connect_timeout:g}s, reply {config.timeout:g}s;"
        f" a shard is down after {config.server_failure_limit} failures, probed after"
        f" {config.server_retry_timeout:g}s doubling to {config.server_retry_timeout_max:g}s"
        f" (jitter {config.server_retry_jitter:g})"
    )
    for tube in tubes:
        pref = placement.preference(tube)
        rest = f" (fails over to {', '.join(pref[1:])})" if len(pref) > 1 else ""
        drained = placement.consumers(tube)[len(pref) :]
        if drained:
            rest += f"; consumers also read {', '.join(drained)} until drained"
        lines.append(f"tube {tube!r} -> {pref[0]}{rest}")
    return "\n".join(lines) + "\n"


def check_config(path: str | Path, tubes: Sequence[str] = _SAMPLE_TUBES) -> str:
    """Validate the configuration file at ``path`` and return its placement summary.

    Raises:
        ConfigError: with ``line`` and ``field`` of the first mistake.
        InvalidArgument: a tube name is not valid.
    """
    return placement_summary(load_config(path), tubes)
