"""The console: an operator's pages and JSON endpoints on the proxy's HTTP port.

Routes (``Console.handle``; anything else is the plain HTTP port's, ``proxy/http.py``):

- ``GET /``: the page (``static/index.html``, with this process's admin token and mode);
  ``GET /console/app.js``, ``/console/app.css``: its script and style (no CDN, no build step).
- ``GET /api/overview``: shards, tubes, the proxy (``ClusterView.overview`` + ``proxy``).
- ``GET /api/series?seconds=N``: chart points of the last N seconds (``series.Series``).
- ``GET /api/tube?name=T``: one tube of the overview and a peek at its jobs on each shard.
- ``GET /api/job?id=N``: ``stats-job`` and body of the job with global id N.
- ``POST /api/action``: ``{"action": "kick", "tube": T, "bound": N}``, ``{"action":
  "kick-job", "id": N}``, ``{"action": "delete", "id": N}``, ``{"action": "pause", "tube": T,
  "delay": S}``. Only with ``--http-admin``, and only from the console's own page: see
  ``check_admin`` (docs/console.md, *Admin actions*).

Every console route refuses a ``Host`` that is not an IP address or ``localhost`` (a DNS
rebinding page would name its own domain). Bad input is a 4xx with a JSON ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import secrets
from importlib import resources
from typing import TYPE_CHECKING, Final

from ..metrics import Counter, Histogram
from ..seam import Introspective
from . import jobs
from .series import INTERVAL, Sample, Series
from .view import ClusterView
from .web import Request, Response, error, json_response

if TYPE_CHECKING:
    from ..app import ProxyServer

__all__ = ["TOKEN_HEADER", "Console", "host_allowed"]

log = logging.getLogger("beanrouter.proxy.console")

TOKEN_HEADER: Final = "x-beanrouter-token"
MAX_ACTION: Final = 4096
"""Largest action body (JSON)."""
_PAGE_HEADERS: Final = (
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
_STATIC: Final = {
    "/console/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/console/app.css": ("app.css", "text/css; charset=utf-8"),
}


def _asset(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


def host_allowed(host: str) -> bool:
    """``Host`` names this server by an IP address or ``localhost`` (with or without a port)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return False
    else:
        name, colon, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        if colon and not port.isdigit():
            return False
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Console:
    """The console of one proxy process (``admin``: the actions are allowed)."""

    def __init__(self, proxy: ProxyServer, *, admin: bool = False) -> None:
        self.proxy = proxy
        self.admin = admin
        self.token = secrets.token_urlsafe(32)
        backend = proxy.backend
        extra = backend if isinstance(backend, Introspective) else None
        config = proxy.config
        if config is None:
            raise ValueError("the console needs the proxy's configuration")
        self.view = ClusterView(
            config,
            route=backend.route,
            health=backend.shard_health,
            clients=None if extra is None else extra.clients_by_tube,
            errors=None if extra is None else extra.shard_errors,
            timeout=min(2.0, config.timeout),
        )
        self.series = Series(self._sample)
        self._sampler: asyncio.Task[None] | None = None
        self._page = _asset("index.html")
        self._assets = {path: (_asset(name), ctype) for path, (name, ctype) in _STATIC.items()}

    async def start(self) -> None:
        self.series.tick()
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def aclose(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            try:
                self.series.tick()
            except Exception:  # a bug: logged, the charts go on
                log.exception("console sample failed")

    def _sample(self) -> Sample:
        stats = self.proxy.stats
        registry = stats.metrics
        registry.collect()
        deliveries = registry.find("deliveries_total")
        wake = registry.find("reserve_wakeup_shard_seconds")
        buckets: tuple[float, ...] = ()
        wakeups: dict[str, list[float]] = {}
        if isinstance(wake, Histogram):
            buckets = wake.buckets
            wakeups = {labels[0]: list(row[:-1]) for labels, row in wake.data.items()}
        return Sample(
            time=self.view.clock(),
            commands=float(sum(stats.commands.values())),
            puts=float(stats.commands.get("put", 0)),
            deliveries=deliveries.value() if isinstance(deliveries, Counter) else 0.0,
            buckets=buckets,
            wakeups=wakeups,
        )

    @staticmethod
    def owns(path: str) -> bool:
        return path == "/" or path.startswith(("/console/", "/api/"))

    async def handle(self, req: Request) -> Response:
        """The response to a request for a console path (``owns``)."""
        if self.proxy.config is not None and self.proxy.config is not self.view.config:
            self.view.reconfigure(self.proxy.config)  # a reload (SIGHUP) changed the shards
        if not host_allowed(req.headers.get("host", "")):
            return error(403, "the console answers only requests to an IP address or localhost")
        if req.path == "/api/action":
            if req.method != "POST":
                return error(405, "use POST", ("Allow", "POST"))
            return await self._action(req)
        if req.method not in ("GET", "HEAD"):
            return error(405, "use GET", ("Allow", "GET, HEAD"))
        try:
            return await self._get(req)
        except jobs.ActionError as exc:
            return error(exc.status, str(exc))

    async def _get(self, req: Request) -> Response:
        path = req.path
        if path == "/":
            page = self._page.replace(b"{{TOKEN}}", self.token.encode())
            page = page.replace(b"{{ADMIN}}", b"on" if self.admin else b"off")
            return Response(200, "text/html; charset=utf-8", page, _PAGE_HEADERS)
        if path in self._assets:
            body, ctype = self._assets[path]
            return Response(200, ctype, body, _PAGE_HEADERS)
        if path == "/api/overview":
            return json_response(200, await self.overview())
        if path == "/api/series":
            seconds = _one(req, "seconds", "300")
            if not (seconds.isascii() and seconds.isdigit()) or not 10 <= int(seconds) <= 600:
                return error(400, "seconds must be 10..600")
            return json_response(200, self.series.points(int(seconds)))
        if path == "/api/tube":
            return json_response(200, await self._tube(jobs.check_tube(_one(req, "name"))))
        if path == "/api/job":
            return json_response(200, await jobs.job(self.view, jobs.parse_id(_one(req, "id"))))
        return error(404, f"no such page: {path[:100]}")

    async def overview(self) -> dict[str, object]:
        doc = dict(await self.view.overview())
        stats = self.proxy.stats
        doc["proxy"] = {
            "pid": stats.procinfo.pid,
            "version": stats.procinfo.version,
            "uptime": stats.uptime(),
            "connections": stats.current_connections,
            "waiting": stats.waiting,
            "draining": stats.draining,
            "stopping": self.proxy.stopping,
            "admin": self.admin,
        }
        return doc

    async def _tube(self, name: str) -> dict[str, object]:
        doc = await self.view.overview()
        tubes = doc["tubes"]
        assert isinstance(tubes, list)
        tube = next((t for t in tubes if t["name"] == name), None)
        if tube is None:
            raise jobs.ActionError(404, f"no shard has tube {name!r}")
        return {"tube": tube, "peek": await jobs.peeks(self.view, name, _tube_shards(tube))}

    def check_admin(self, req: Request) -> Response | None:
        """Why an action request is refused (None: allowed). An action needs ``--http-admin``,
        a JSON body, this process's token in ``X-Beanrouter-Token`` (it is only in the page,
        which another site cannot read), and no foreign ``Origin`` or ``Sec-Fetch-Site``. A
        custom header and a JSON content type also make a browser ask first (CORS preflight),
        which this server never allows."""
        if not self.admin:
            return error(403, "read-only console: start the proxy with --http-admin for actions")
        host = req.headers.get("host", "")
        origin = req.headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            return error(403, f"cross-origin request refused (Origin {origin[:100]})")
        site = req.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return error(403, f"cross-site request refused (Sec-Fetch-Site {site[:40]})")
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return error(415, "send the action as application/json")
        token = req.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return error(403, "missing or wrong X-Beanrouter-Token (reload the console page)")
        return None

    async def _action(self, req: Request) -> Response:
        refused = self.check_admin(req)
        if refused is not None:
            return refused
        if len(req.body) > MAX_ACTION:
            return error(413, f"action bodies are at most {MAX_ACTION} bytes")
        try:
            doc = json.loads(req.body)
        except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
            return error(400, "the body is not JSON")
        if not isinstance(doc, dict):
            return error(400, "the body must be a JSON object")
        try:
            result = await self._run(doc)
        except jobs.ActionError as exc:
            return error(exc.status, str(exc))
        self.view.invalidate()
        log.info("console action %s: %s", doc.get("action"), result)
        return json_response(200, {"ok": True, **result})

    async def _run(self, doc: dict[str, object]) -> dict[str, object]:
        action = doc.get("action")
        view = self.view
        if action in ("kick-job", "delete"):
            job_id = jobs.parse_id(str(doc.get("id", "")))
            if action == "delete":
                return await jobs.delete(view, job_id)
            return await jobs.kick_job(view, job_id)
        if action in ("kick", "pause"):
            tube = jobs.check_tube(str(doc.get("tube", "")))
            if action == "pause":
                return await jobs.pause(view, tube, _number(doc, "delay"))
            overview = await view.overview()
            tubes = overview["tubes"]
            assert isinstance(tubes, list)
            found = next((t for t in tubes if t["name"] == tube), None)
            if found is None:
                raise jobs.ActionError(404, f"no shard has tube {tube!r}")
            return await jobs.kick(view, tube, _number(doc, "bound"), _tube_shards(found))
        raise jobs.ActionError(400, "action must be kick, kick-job, delete or pause")


def _one(req: Request, name: str, default: str | None = None) -> str:
    values = req.query.get(name, [] if default is None else [default])
    if len(values) != 1:
        raise jobs.ActionError(400, f"give one {name}= parameter")
    return values[0]


def _number(doc: dict[str, object], key: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise jobs.ActionError(400, f"{key} must be an integer")
    return value


def _tube_shards(tube: dict[str, object]) -> list[str]:
    """The tube's owner, its other consumer shards, then any other shard holding it."""
    order: list[str] = [str(tube["owner"])]
    for key in ("consumers", "per_shard"):
        for name in tube[key]:  # type: ignore[attr-defined]
            if name not in order:
                order.append(name)
    return [name for name in order if name in tube["per_shard"]]  # type: ignore[operator]
