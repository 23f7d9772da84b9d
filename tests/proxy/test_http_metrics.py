"""The metrics registry (pure) and the HTTP endpoints (over loopback, fake backend)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from beanrouter.proxy.http import HttpEndpoint
from beanrouter.proxy.metrics import Registry
from beanrouter.server.listen import bind

from .test_frame import proxy, request, run

SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+|\+Inf|NaN)$')


def test_registry_renders_prometheus_text() -> None:
    r = Registry()
    c = r.counter("failovers_total", "Puts sent past a down owner.", ["shard"])
    c.inc(("a",))
    c.inc(("a",), 2)
    c.inc(('we"ird\\\n',))
    g = r.gauge("links", "Open links.")
    g.set(3)
    h = r.histogram("wake_seconds", "Reserve wake-up latency.", buckets=[0.1, 1])
    for v in (0.05, 0.5, 5):
        h.observe(v)
    text = r.render()
    assert "# TYPE beanrouter_failovers_total counter" in text
    assert 'beanrouter_failovers_total{shard="a"} 3' in text
    assert 'beanrouter_failovers_total{shard="we\\"ird\\\\\\n"} 1' in text
    assert "beanrouter_links 3" in text
    assert 'beanrouter_wake_seconds_bucket{le="0.1"} 1' in text
    assert 'beanrouter_wake_seconds_bucket{le="1"} 2' in text
    assert 'beanrouter_wake_seconds_bucket{le="+Inf"} 3' in text
    assert "beanrouter_wake_seconds_count 3" in text and "beanrouter_wake_seconds_sum 5.55" in text
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line


def test_registry_rules() -> None:
    r = Registry()
    assert r.counter("x_total", "x") is r.counter("x_total", "x")
    with pytest.raises(ValueError, match="end in _total"):
        r.counter("no_suffix", "counters end in _total")
    with pytest.raises(ValueError, match="already registered as a counter"):
        r.gauge("x_total", "already a counter")
    with pytest.raises(ValueError, match="invalid metric name"):
        r.gauge("bad-name", "")
    with pytest.raises(ValueError, match="takes labels"):
        r.counter("y_total", "", ["a"]).inc(())
    with pytest.raises(ValueError, match="only goes up"):
        r.counter("z_total", "").inc((), -1)


async def http_get(port: int, target: str, method: str = "GET") -> tuple[int, str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    ctype = next(h.split(": ", 1)[1] for h in lines[1:] if h.lower().startswith("content-type"))
    return status, ctype, body


def test_http_endpoints() -> None:
    async def scenario() -> None:
        async with proxy() as px:
            http = HttpEndpoint(px.server)
            sock = bind("127.0.0.1", 0)
            port = sock.getsockname()[1]
            await http.start(sock)
            try:
                script = b"put 0 0 1 1\r\na\r\nput 0 0 1 1\r\nb\r\nbogus\r\nstats\r\n"
                await request(px.port, script)
                status, ctype, body = await http_get(port, "/healthz")
                assert status == 200 and ctype == "application/json"
                doc = json.loads(body)
                assert doc["shards_up"] == 1 and doc["shards"] == 2 and not doc["draining"]
                px.backend.health = [("a", False), ("b", False)]
                status, _, body = await http_get(port, "/healthz")
                assert status == 503 and json.loads(body)["status"] == "unavailable"

                status, ctype, body = await http_get(port, "/metrics")
                assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
                text = body.decode()
                assert 'beanrouter_commands_total{command="put"} 2' in text
                assert 'beanrouter_commands_total{command="stats"} 1' in text
                assert 'beanrouter_client_errors_total{reply="UNKNOWN_COMMAND"} 1' in text
                assert "beanrouter_connections_total 1" in text
                assert 'beanrouter_shard_up{shard="a"} 0' in text
                for line in text.splitlines():
                    assert line.startswith("# ") or SAMPLE.match(line), line
                    if line.startswith("# TYPE") and line.endswith(" counter"):
                        assert line.split()[2].endswith("_total")

                status, _, body = await http_get(port, "/route?tube=emails")
                assert status == 200 and json.loads(body) == {
                    "tube": "emails",
                    "owner": "a",
                    "fake": True,
                }
                for bad in ("/route", "/route?tube=-x", "/route?tube=a&tube=b"):
                    assert (await http_get(port, bad))[0] == 400, bad
                assert (await http_get(port, "/nope"))[0] == 404
                assert (await http_get(port, "/healthz", "POST"))[0] == 405
                status, _, body = await http_get(port, "/metrics", "HEAD")
                assert status == 200 and body == b""
            finally:
                await http.aclose()

    run(scenario)
