"""``beanrouter status``: the console's overview as a table in the terminal, or as JSON.

From a running proxy's HTTP port (``--url``: ``GET /api/overview``) or straight from the shards
of a configuration file (``--config``: the same ``ClusterView``, with placement computed from the
file; no proxy, so no clients' counts and no proxy health: the shards' own counts are shown).
Errors are ``StatusError`` with a message for the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ...core.cluster import Cluster
from ...core.config import ClusterConfig
from .view import JOB_STATES, ClusterView

__all__ = ["ConfigStatus", "StatusError", "from_config", "from_url", "render"]


class StatusError(Exception):
    """The overview could not be had; the message says why."""


def from_url(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """``/api/overview`` of the proxy whose HTTP port is at ``url`` (``http://HOST:PORT``)."""
    if not url.startswith(("http://", "https://")):
        raise StatusError(f"--url must start with http:// (got {url!r})")
    target = url.rstrip("/") + "/api/overview"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            doc = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("error", detail)
        raise StatusError(f"{target}: HTTP {exc.code}: {detail[:300]}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"cannot reach the proxy's HTTP port at {url}: {reason}") from None
    if not isinstance(doc, dict) or "shards" not in doc:
        raise StatusError(f"{target} did not answer with a cluster overview")
    return doc


class ConfigStatus:
    """The overview of ``config``'s shards, asked of them at each ``overview()``. Placement is the
    routing core's (``Cluster.route``, as the proxy's ``/route``); one ``ClusterView`` serves
    every refresh, so a shard's ``since`` and last error carry over from one to the next
    (``beanrouter status --config FILE --watch``)."""

    def __init__(self, config: ClusterConfig) -> None:
        self.cluster = Cluster(config)
        self.view = ClusterView(
            config,
            route=self.cluster.route,
            timeout=min(2.0, config.timeout),
            min_age=0.0,  # each refresh asks the shards
            cluster=self.cluster,
        )

    def overview(self) -> dict[str, Any]:
        doc = dict(asyncio.run(self.view.overview()))
        doc["proxy"] = None
        return doc


def from_config(config: ClusterConfig) -> dict[str, Any]:
    """The overview built from the shards of ``config`` themselves (once; ``ConfigStatus`` to
    refresh it)."""
    return ConfigStatus(config).overview()


def _table(headers: Sequence[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _binlog(b: dict[str, Any]) -> str:
    return f"{b['oldest-index']}..{b['current-index']} ({b['records-written']} rec)"


def render(doc: dict[str, Any], now: float | None = None) -> str:
    """The overview as plain-text tables."""
    now = time.time() if now is None else now
    shards = doc["shards"]
    tubes = doc["tubes"]
    jobs = doc["jobs"]
    head = (
        f"cluster: {doc['shards_up']}/{len(shards)} shards up, {len(tubes)} tubes, jobs: "
        + ", ".join(f"{jobs[s]} {s}" for s in JOB_STATES)
    )
    if doc.get("away"):
        head += f"; {doc['away']} away from their owner"
    proxy = doc.get("proxy")
    if proxy:
        head += f"\nproxy: pid {proxy['pid']}, up {_ago(proxy['uptime'])}, "
        head += f"{proxy['connections']} connections, {proxy['waiting']} waiting"
        head += ", draining" if proxy["draining"] else ""
    rows = []
    for s in shards:
        state = ("up" if s["up"] else "DOWN") + " " + _ago(now - s["since"])
        binlog = s.get("binlog")
        err = s.get("error")
        counts = [str(s["jobs"][k]) if s["answers"] else "-" for k in JOB_STATES]
        rows.append(
            [
                s["name"],
                str(s["id"]),
                s["address"],
                state,
                *counts,
                "-" if s["tubes"] is None else str(s["tubes"]),
                "-" if not binlog else _binlog(binlog),
                "" if not err else f"{err['message']} ({_ago(now - err['time'])} ago)",
            ]
        )
    out = [head, ""]
    headers = ["SHARD", "ID", "ADDRESS", "STATE", "READY", "RESERVED", "DELAYED", "BURIED"]
    out += _table([*headers, "TUBES", "BINLOG", "LAST ERROR"], rows, {1, 4, 5, 6, 7, 8})
    trows = []
    for t in tubes:
        counts = [str(t["jobs"][k]) for k in JOB_STATES]
        paused = f"{t['pause_left']}s" if t["paused"] else "no"
        trows.append(
            [
                t["name"],
                *counts,
                t["owner"],
                ",".join(t["failover"]) or "-",
                paused,
                str(t["watching"]),
                str(t["waiting"]),
                str(t["away"]),
            ]
        )
    out.append("")
    headers = ["TUBE", "READY", "RESERVED", "DELAYED", "BURIED", "OWNER", "FAILOVER", "PAUSED"]
    out += _table([*headers, "WATCHING", "WAITING", "AWAY"], trows, {1, 2, 3, 4, 8, 9, 10})
    return "\n".join(out) + "\n"
