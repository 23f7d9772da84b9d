"""The console's HTTP handlers: bad input gets a clear 4xx, actions need the opt-in and the
page's token. Fast: two bundled shards and the proxy (the real routing core) in this process."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from beanrouter.core import ids
from beanrouter.proxy.app import ProxyServer
from beanrouter.proxy.backend import make_backend
from beanrouter.proxy.console.app import host_allowed
from beanrouter.proxy.console.series import Sample, Series, quantile
from beanrouter.proxy.http import MAX_BODY, BadRequest, HttpEndpoint, parse_head
from beanrouter.proxy.stats import ProxyStats
from beanrouter.router.config import config_from_servers
from beanrouter.server.app import Server
from beanrouter.server.engine import Engine
from beanrouter.server.listen import bind

# -- pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET\r\n\r\n", 400),
        (b"GET / FTP/1\r\n\r\n", 400),
        (b"GET nopath HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n x: y\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET /?" + b"&".join(b"a%d=1" % i for i in range(30)) + b" HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_parse_head_refuses(head: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_head(head)
    assert caught.value.status == status


def test_parse_head() -> None:
    req, length = parse_head(
        b"POST /api/action?x=1&x=2 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nContent-Length: 12\r\n\r\n"
    )
    assert (req.method, req.path, req.query, length) == (
        "POST",
        "/api/action",
        {"x": ["1", "2"]},
        12,
    )
    assert req.headers["host"] == "127.0.0.1:9"


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:9300", True),
        ("127.0.0.1", True),
        ("localhost:1", True),
        ("[::1]:9300", True),
        ("10.1.2.3:80", True),
        ("evil.example:9300", False),
        ("localhost.evil.example", False),
        ("", False),
        ("127.0.0.1:x", False),
        ("[::1]x", False),
    ],
)
def test_host_allowed(host: str, ok: bool) -> None:
    assert host_allowed(host) is ok


def test_quantile_from_buckets() -> None:
    bounds = (0.001, 0.01, 0.1, math.inf)
    assert quantile(0.5, bounds, (0, 0, 0, 0)) is None
    assert quantile(0.5, bounds, (10, 0, 0, 0)) == pytest.approx(0.0005)
    assert quantile(0.5, bounds, (0, 10, 0, 0)) == pytest.approx(0.0055)
    assert quantile(0.99, bounds, (0, 0, 0, 5)) == 0.1  # +Inf: the largest finite bound


def test_series_rates_and_window() -> None:
    now = [100.0]
    counts = {"commands": 0.0, "puts": 0.0, "deliveries": 0.0}
    rows = {"a": [0.0, 0.0, 0.0]}

    def sample() -> Sample:
        return Sample(now[0], **counts, buckets=(0.01, 0.1, math.inf), wakeups={"a": rows["a"]})

    series = Series(sample)
    series.tick()
    for _ in range(20):
        now[0] += 1.0
        counts["commands"] += 10
        counts["puts"] += 2
        rows["a"] = [rows["a"][0] + 1, rows["a"][1], rows["a"][2]]
        series.tick()
    doc = series.points(300)
    points = doc["points"]
    assert isinstance(points, list) and len(points) == 20
    last = points[-1]
    assert last["commands"] == 10 and last["puts"] == 2 and last["deliveries"] == 0
    p50, p99 = last["wakeup"]["a"]
    assert 0 < p50 < p99 <= 0.01
    assert doc["shards"] == ["a"]
    assert len(series.points(10)["points"]) == 10  # type: ignore[arg-type]


# -- over loopback: bundled shards, the routing core, the HTTP port -------------------------------


class Env:
    def __init__(self, http_port: int, proxy_port: int, shard_ports: list[int]) -> None:
        self.http_port = http_port
        self.proxy_port = proxy_port
        self.shard_ports = shard_ports
        self.listeners: list[asyncio.Server] = []
        self.proxy: ProxyServer | None = None

    async def http(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        if raw is None:
            hdrs = {"Host": f"127.0.0.1:{self.http_port}", **(headers or {})}
            if body:
                hdrs.setdefault("Content-Length", str(len(body)))
            head = f"{method} {path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in hdrs.items()
            )
            raw = head.encode() + b"\r\n" + body
        writer.write(raw)
        data = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode().split("\r\n")
        got = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:])}
        return int(lines[0].split()[1]), got, rest

    async def json(self, path: str) -> tuple[int, object]:
        status, _, body = await self.http("GET", path)
        return status, json.loads(body)

    async def token(self) -> str:
        _, _, page = await self.http("GET", "/")
        found = re.search(rb'name="beanrouter-token" content="([^"]+)"', page)
        assert found is not None
        return found.group(1).decode()

    async def act(self, doc: object, **headers: str) -> tuple[int, object]:
        hdrs = {"Content-Type": "application/json", **headers}
        status, _, body = await self.http("POST", "/api/action", json.dumps(doc).encode(), hdrs)
        return status, json.loads(body)

    async def beanstalk(self, data: bytes, replies: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.proxy_port)
        writer.write(data)
        out = b""
        while out.count(b"\r\n") < replies:
            out += await asyncio.wait_for(reader.read(65536), 20)
        writer.close()
        return out


@asynccontextmanager
async def console(admin: bool) -> AsyncIterator[Env]:
    loop = asyncio.get_running_loop()
    listeners = []
    ports = []
    for _ in range(2):
        sock = bind("127.0.0.1", 0)
        server = Server(Engine(), loop)
        listeners.append(await loop.create_server(server.protocol_factory, sock=sock))
        ports.append(sock.getsockname()[1])
    config = config_from_servers(
        [f"127.0.0.1:{ports[0]} s0 id=0", f"127.0.0.1:{ports[1]} s1 id=1"], connect_timeout=0.5
    )
    stats = ProxyStats()
    proxy = ProxyServer(make_backend(config), stats, config=config)
    psock, hsock = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
    await proxy.start(psock)
    http = HttpEndpoint(proxy, admin=admin)
    await http.start(hsock)
    env = Env(hsock.getsockname()[1], psock.getsockname()[1], ports)
    env.listeners = listeners
    env.proxy = proxy
    try:
        yield env
    finally:
        await http.aclose()
        await proxy.shutdown()
        await proxy.backend.aclose()
        for listener in listeners:
            listener.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario(), 60)

    asyncio.run(main())


def test_overview_tube_and_job() -> None:
    async def scenario() -> None:
        async with console(admin=False) as env:
            out = await env.beanstalk(b"use emails\r\nput 0 0 60 5\r\nhello\r\n", 2)
            job_id = int(out.split(b"INSERTED ")[1].split(b"\r\n")[0])
            status, doc = await env.json("/api/overview")
            assert status == 200 and isinstance(doc, dict)
            assert [s["name"] for s in doc["shards"]] == ["s0", "s1"]
            assert all(s["up"] for s in doc["shards"]) and doc["proxy"]["admin"] is False
            tube = next(t for t in doc["tubes"] if t["name"] == "emails")
            assert tube["jobs"]["ready"] == 1 and tube["away"] == 0
            assert tube["owner"] in ("s0", "s1") and tube["failover"]
            status, doc = await env.json("/api/tube?name=emails")
            assert status == 200 and isinstance(doc, dict)
            peek = doc["peek"][tube["owner"]]["ready"]
            assert peek["id"] == job_id and peek["body"]["text"] == "hello"
            status, doc = await env.json(f"/api/job?id={job_id}")
            assert status == 200 and isinstance(doc, dict)
            assert doc["stats"]["id"] == job_id and doc["stats"]["tube"] == "emails"
            assert doc["body"] == {"text": "hello", "size": 5, "truncated": False}
            status, doc = await env.json("/api/series?seconds=60")
            assert status == 200 and isinstance(doc, dict) and "points" in doc

    run(scenario)


def test_page_and_assets() -> None:
    async def scenario() -> None:
        async with console(admin=False) as env:
            status, headers, page = await env.http("GET", "/")
            assert status == 200 and headers["content-type"].startswith("text/html")
            assert b'content="off"' in page and b"{{TOKEN}}" not in page
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            for path in ("/console/app.js", "/console/app.css"):
                status, _, body = await env.http("GET", path)
                assert status == 200 and body
            status, _, body = await env.http("HEAD", "/")
            assert status == 200 and body == b""

    run(scenario)


BAD_GETS = [
    ("/api/tube", 400),
    ("/api/tube?name=-bad", 400),
    ("/api/tube?name=a&name=b", 400),
    ("/api/tube?name=nosuchtube", 404),
    ("/api/job?id=abc", 400),
    ("/api/job?id=-1", 400),
    ("/api/job?id=99999999999999999999999", 400),
    ("/api/job", 400),
    (f"/api/job?id={ids.encode(77, 1)}", 404),  # no shard has id 77
    ("/api/job?id=123", 404),  # shard 0, no such job
    ("/api/series?seconds=x", 400),
    ("/api/series?seconds=5", 400),
    ("/api/series?seconds=%C2%B2", 400),  # (a digit to str.isdigit, not to int)
    ("/api/nothing", 404),
    ("/console/other.js", 404),
]


def test_bad_input_gets_4xx() -> None:
    async def scenario() -> None:
        async with console(admin=True) as env:
            for path, want in BAD_GETS:
                status, _, body = await env.http("GET", path)
                assert status == want, (path, body)
                assert "error" in json.loads(body), path
            assert (await env.http("POST", "/api/overview", b"{}"))[0] == 405
            assert (await env.http("DELETE", "/"))[0] == 405
            assert (await env.http("GET", "/api/action"))[0] == 405
            assert (await env.http("POST", "/healthz", b"{}"))[0] == 405
            status, _, _ = await env.http("GET", "/", headers={"Host": "evil.example:80"})
            assert status == 403
            assert (await env.http("GET", "/", raw=b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\n\r\n"))[
                0
            ] == 431
            big = f"POST /api/action HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n"
            assert (await env.http("POST", "/", raw=big.encode()))[0] == 413
            assert (await env.http("GET", "/", raw=b"BREW\r\n\r\n"))[0] == 400
            # The proxy still serves.
            assert (await env.json("/api/overview"))[0] == 200

    run(scenario)


def test_actions_need_the_flag() -> None:
    async def scenario() -> None:
        async with console(admin=False) as env:
            await env.beanstalk(b"use t\r\nput 0 0 60 1\r\nx\r\n", 2)
            token = await env.token()
            status, doc = await env.act(
                {"action": "pause", "tube": "t", "delay": 5}, **{"X-Beanrouter-Token": token}
            )
            assert status == 403 and "--http-admin" in doc["error"]  # type: ignore[index]
            status, doc = await env.json("/api/tube?name=t")
            assert not doc["tube"]["paused"]  # type: ignore[index]

    run(scenario)


def test_actions_with_the_flag() -> None:
    async def scenario() -> None:
        async with console(admin=True) as env:
            out = await env.beanstalk(b"use t\r\nput 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\n", 3)
            first, second = (int(x) for x in re.findall(rb"INSERTED (\d+)", out))
            out = await env.beanstalk(
                f"watch t\r\nreserve-job {first}\r\nbury {first} 0\r\n".encode(), 4
            )
            assert out.endswith(b"BURIED\r\n"), out
            token = await env.token()
            good = {"X-Beanrouter-Token": token, "Origin": f"http://127.0.0.1:{env.http_port}"}
            pause = {"action": "pause", "tube": "t", "delay": 30}
            # Refused: no token, a wrong one, a foreign origin, a cross-site fetch, not JSON.
            assert (await env.act(pause))[0] == 403
            assert (await env.act(pause, **{"X-Beanrouter-Token": "x" * 43}))[0] == 403
            assert (await env.act(pause, **{**good, "Origin": "http://evil.example"}))[0] == 403
            assert (await env.act(pause, **{**good, "Sec-Fetch-Site": "cross-site"}))[0] == 403
            status, _, _ = await env.http(
                "POST", "/api/action", json.dumps(pause).encode(),
                {"Content-Type": "text/plain", "X-Beanrouter-Token": token},
            )  # fmt: skip
            assert status == 415
            status, _, _ = await env.http(
                "POST", "/api/action", b"{not json",
                {"Content-Type": "application/json", "X-Beanrouter-Token": token},
            )  # fmt: skip
            assert status == 400
            for body in (b"[" * 4000, b"\xff\xfe", b"x" * 5000):
                status, _, _ = await env.http(
                    "POST", "/api/action", body,
                    {"Content-Type": "application/json", "X-Beanrouter-Token": token},
                )  # fmt: skip
                assert status in (400, 413), body[:10]
            bads: list[object] = [
                [],
                {"action": "explode"},
                {"action": "kick", "tube": "t", "bound": "1"},
                {"action": "kick", "tube": "t", "bound": 0},
                {"action": "kick", "tube": "-x", "bound": 1},
                {"action": "delete", "id": "x"},
                {"action": "pause", "tube": "t", "delay": -1},
            ]
            for bad in bads:
                assert (await env.act(bad, **good))[0] == 400, bad
            assert (await env.act({"action": "kick", "tube": "nope", "bound": 1}, **good))[0] == 404
            assert (await env.act({"action": "delete", "id": 12345}, **good))[0] == 404
            # Allowed.
            status, doc = await env.act(pause, **good)
            assert status == 200 and doc["shards"], doc  # type: ignore[index]
            status, doc = await env.json("/api/tube?name=t")
            assert doc["tube"]["paused"]  # type: ignore[index]
            buried = first  # the reserve took the first put, then buried it
            status, doc = await env.json(f"/api/job?id={buried}")
            assert doc["stats"]["state"] == "buried"  # type: ignore[index]
            status, doc = await env.act({"action": "kick-job", "id": buried}, **good)
            assert status == 200, doc
            status, doc = await env.json(f"/api/job?id={buried}")
            assert doc["stats"]["state"] == "ready"  # type: ignore[index]
            status, doc = await env.act({"action": "delete", "id": str(second)}, **good)
            assert status == 200, doc
            assert (await env.json(f"/api/job?id={second}"))[0] == 404
            status, doc = await env.act({"action": "kick", "tube": "t", "bound": 5}, **good)
            assert status == 200 and doc["kicked"] == 0  # type: ignore[index]

    run(scenario)


def test_a_stopped_shard_shows_down() -> None:
    async def scenario() -> None:
        async with console(admin=False) as env:
            listener = env.listeners[1]
            listener.close()
            await listener.wait_closed()
            status, doc = await env.json("/api/overview")
            assert status == 200 and isinstance(doc, dict)
            s1 = doc["shards"][1]
            assert not s1["up"] and not s1["answers"] and s1["error"]["message"]
            assert doc["shards"][0]["up"] and doc["shards_up"] == 1

    run(scenario)


def test_a_reload_changes_the_shards_shown() -> None:
    async def scenario() -> None:
        async with console(admin=False) as env:
            assert env.proxy is not None and env.proxy.config is not None
            one = config_from_servers([f"127.0.0.1:{env.shard_ports[0]} s0 id=0"])
            await env.proxy.backend.reload(one)
            env.proxy.config = one  # (as ProxyServer.reload does once the backend took it)
            status, doc = await env.json("/api/overview")
            assert status == 200 and isinstance(doc, dict)
            assert [s["name"] for s in doc["shards"]] == ["s0"]

    run(scenario)
