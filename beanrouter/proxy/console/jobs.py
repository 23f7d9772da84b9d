"""A tube's jobs and the admin actions, run on the shards themselves (``shardio.ask``).

Jobs are named by their global id (``core.ids``: shard id and the shard's own id), as clients
of the proxy see them. Peeks look at every shard that holds the tube; ``kick`` takes the tube's
owner first, then its other shards, until the bound is reached; ``pause`` pauses the tube on
every shard that has it. Errors are ``ActionError(status, message)``: the HTTP status to answer
(400 bad input, 404 nothing there, 409 not possible now, 503 a shard did not answer).
"""

from __future__ import annotations

from typing import Final

from ... import protocol as p
from ...core import ids
from ...core.config import ShardConfig
from ...core.errors import JobIdError
from .shardio import ShardError, ask, mapping
from .view import ClusterView

__all__ = ["BODY_PREVIEW", "ActionError", "delete", "job", "kick", "kick_job", "pause", "peeks"]

BODY_PREVIEW: Final = 4096
"""Bytes of a job body shown (the rest is cut, and the answer says so)."""
_PEEKS: Final = (("ready", p.PeekReady()), ("delayed", p.PeekDelayed()), ("buried", p.PeekBuried()))


class ActionError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def body_text(body: bytes, limit: int = BODY_PREVIEW) -> dict[str, object]:
    """A job body for display: text (undecodable bytes as U+FFFD), its size, cut or not."""
    return {
        "text": body[:limit].decode("utf-8", errors="replace"),
        "size": len(body),
        "truncated": len(body) > limit,
    }


def parse_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ActionError(400, f"malformed job id {text[:40]!r}: give a decimal job id")
    try:
        ids.decode(int(text))
    except JobIdError as exc:
        raise ActionError(400, str(exc)) from None
    return int(text)


def check_tube(name: str) -> str:
    if not p.is_valid_tube_name(name.encode("ascii", "replace")) or not name.isascii():
        raise ActionError(400, f"invalid tube name {name[:220]!r}")
    return name


def _shard_of(view: ClusterView, job_id: int) -> tuple[ShardConfig, int]:
    try:
        return view.shard_of(job_id)  # the routing core's Cluster.shard_of
    except JobIdError as exc:
        raise ActionError(404, str(exc)) from None


async def _ask(view: ClusterView, shard: ShardConfig, commands: list[p.Command]) -> list[p.Reply]:
    try:
        return await ask(shard.host, shard.port, commands, view.timeout)
    except ShardError as exc:
        raise ActionError(503, f"shard {shard.name} ({shard.address}): {exc}") from None


async def peeks(view: ClusterView, tube: str, shards: list[str]) -> dict[str, object]:
    """Per shard of ``shards``: the next ready, delayed and buried job of ``tube``."""
    out: dict[str, object] = {}
    for name in shards:
        shard = view.shard(name)
        if shard is None:
            continue
        try:
            replies = await ask(
                shard.host, shard.port, [p.Use(tube)] + [c for _, c in _PEEKS], view.timeout
            )
        except ShardError as exc:
            out[name] = {"error": str(exc)}
            continue
        found: dict[str, object] = {}
        for (state, _), reply in zip(_PEEKS, replies[1:], strict=True):
            if isinstance(reply, p.Found):
                found[state] = {
                    "id": ids.encode(shard.id, reply.id),
                    "body": body_text(reply.body, 512),
                }
            else:
                found[state] = None
        out[name] = found
    return out


async def job(view: ClusterView, job_id: int) -> dict[str, object]:
    """``stats-job`` and the body of one job."""
    shard, local = _shard_of(view, job_id)
    stats, body = await _ask(view, shard, [p.StatsJob(local), p.Peek(local)])
    if not isinstance(stats, p.Ok):
        raise ActionError(404, f"job {job_id} not found on shard {shard.name}")
    try:
        doc = mapping(stats)
    except ShardError as exc:
        raise ActionError(503, f"shard {shard.name}: {exc}") from None
    doc["id"] = job_id
    return {
        "id": job_id,
        "shard": shard.name,
        "stats": doc,
        "body": body_text(body.body) if isinstance(body, p.Found) else None,
    }


async def kick(view: ClusterView, tube: str, bound: int, shards: list[str]) -> dict[str, object]:
    """Kick up to ``bound`` jobs of ``tube``, shard after shard (``shards`` in order)."""
    if not 1 <= bound <= p.U32_MAX:
        raise ActionError(400, "kick bound must be 1..4294967295")
    left = bound
    kicked: dict[str, int] = {}
    for name in shards:
        shard = view.shard(name)
        if shard is None or left <= 0:
            continue
        replies = await _ask(view, shard, [p.Use(tube), p.Kick(left)])
        reply = replies[1]
        count = reply.count if isinstance(reply, p.Kicked) and reply.count is not None else 0
        kicked[name] = count
        left -= count
    return {"kicked": bound - left, "by_shard": kicked}


async def kick_job(view: ClusterView, job_id: int) -> dict[str, object]:
    shard, local = _shard_of(view, job_id)
    (reply,) = await _ask(view, shard, [p.KickJob(local)])
    if not isinstance(reply, p.Kicked):
        raise ActionError(404, f"job {job_id} is not buried or delayed on shard {shard.name}")
    return {"kicked": job_id, "shard": shard.name}


async def delete(view: ClusterView, job_id: int) -> dict[str, object]:
    """Delete a ready, delayed or buried job (not one a client holds)."""
    shard, local = _shard_of(view, job_id)
    (stats,) = await _ask(view, shard, [p.StatsJob(local)])
    if not isinstance(stats, p.Ok):
        raise ActionError(404, f"job {job_id} not found on shard {shard.name}")
    try:
        state = mapping(stats).get("state")
    except ShardError as exc:
        raise ActionError(503, f"shard {shard.name}: {exc}") from None
    if state not in ("ready", "delayed", "buried"):
        raise ActionError(409, f"job {job_id} is {state}: only ready, delayed or buried jobs")
    (reply,) = await _ask(view, shard, [p.Delete(local)])
    if reply != p.DELETED:
        raise ActionError(409, f"job {job_id} could not be deleted ({reply.encode()!r:.40})")
    return {"deleted": job_id, "shard": shard.name}


async def pause(view: ClusterView, tube: str, delay: int) -> dict[str, object]:
    """``pause-tube`` on every shard (0 un-pauses); 404 when no shard has the tube."""
    if not 0 <= delay <= p.U32_MAX:
        raise ActionError(400, "pause delay must be 0..4294967295 seconds")
    paused: list[str] = []
    failed: dict[str, str] = {}
    for shard in view.config.servers:
        try:
            (reply,) = await ask(shard.host, shard.port, [p.PauseTube(tube, delay)], view.timeout)
        except ShardError as exc:
            failed[shard.name] = str(exc)
            continue
        if reply == p.PAUSED:
            paused.append(shard.name)
    if not paused:
        if failed:
            raise ActionError(503, f"no shard paused {tube!r}; failed: {failed}")
        raise ActionError(404, f"no shard has tube {tube!r}")
    return {"paused": tube, "delay": delay, "shards": paused, "failed": failed}
