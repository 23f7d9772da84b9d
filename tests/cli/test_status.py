"""``beanrouter status``: the overview from a proxy's HTTP port (``--url``) or straight from the
shards of a configuration file (``--config``), as tables or JSON, once or ``--watch``."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from beanrouter.proxy.cluster import parse_cluster_args
from tests.ports import free_port, free_port_run

from .procs import REPO_ROOT, Proc, env, wait_for


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beanrouter", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env(None),
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[int, str, str]]:
    """A live ``beanrouter cluster`` (real core, HTTP port) with jobs in tube ``emails``: its
    port, its HTTP URL and a configuration file naming its shards."""
    port = free_port_run(2)
    p = Proc(
        ["cluster", "-p", str(port), "--shards", "3", "--http-port", str(port + 1), "-V"],
        backend=None,
    )
    try:
        wait_for(lambda: "listening on" in p.output(), "the cluster")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"use emails\r\nput 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\n")
            out = b""
            while out.count(b"INSERTED") < 2:
                out += s.recv(4096)
        shards = re.findall(r"(shard-\d) \(id (\d+)\) on ([\d.]+:\d+)", p.output())
        assert len(shards) == 3, p.output()
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "cluster.yaml"
            config.write_text(
                "servers:\n" + "".join(f"  - {addr} {name} id={i}\n" for name, i, addr in shards)
            )
            yield port, f"http://127.0.0.1:{port + 1}", str(config)
    finally:
        p.close()


def test_from_the_proxy(cluster: tuple[int, str, str]) -> None:
    _, url, _ = cluster
    done = status("--url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cluster: 3/3 shards up")
    assert "proxy: pid " in done.stdout
    for name in ("shard-0", "shard-1", "shard-2"):
        assert re.search(rf"^{name} +\d +127\.0\.0\.1:\d+ +up ", done.stdout, re.M), done.stdout
    assert re.search(r"^emails +2 +0 +0 +0 +shard-\d", done.stdout, re.M), done.stdout


def test_json_from_the_proxy_and_from_the_config(cluster: tuple[int, str, str]) -> None:
    _, url, config = cluster
    for args in (["--url", url + "/"], ["--config", config]):
        done = status(*args, "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert [s["name"] for s in doc["shards"]] == ["shard-0", "shard-1", "shard-2"]
        assert doc["shards_up"] == 3
        emails = next(t for t in doc["tubes"] if t["name"] == "emails")
        assert emails["jobs"]["ready"] == 2 and emails["failover"]
        assert (doc["proxy"] is None) == (args[0] == "--config")


def test_from_the_config_shows_a_shard_down(tmp_path: Path, cluster: tuple[int, str, str]) -> None:
    _, _, config = cluster
    text = Path(config).read_text() + f"  - 127.0.0.1:{free_port()} gone id=9\n"
    path = tmp_path / "with-a-dead-shard.yaml"
    path.write_text(text)
    done = status("--config", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cluster: 3/4 shards up")
    assert re.search(r"^gone +9 .* DOWN .*connection refused", done.stdout, re.M), done.stdout


def test_watch_refreshes_until_interrupted(cluster: tuple[int, str, str]) -> None:
    _, url, _ = cluster
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beanrouter", "status", "--url", url, "--watch",
             "--interval", "0.2"],
            cwd=REPO_ROOT, env=env(None), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:

            def refreshed() -> bool:
                out.seek(0)
                return out.read().count(b"cluster: 3/3 shards up") >= 2

            wait_for(refreshed, "two refreshes")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
            out.seek(0)
            assert b"Traceback" not in out.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_errors() -> None:
    done = status()
    assert done.returncode == 2 and "give either --config FILE or --url" in done.stderr
    done = status("--config", "x.yaml", "--url", "http://127.0.0.1:1")
    assert done.returncode == 2
    done = status("--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1 and "cannot reach the proxy's HTTP port" in done.stderr
    done = status("--url", "127.0.0.1:9300")
    assert done.returncode == 1 and "must start with http://" in done.stderr
    done = status("--config", "/nonexistent/cluster.yaml")
    assert done.returncode == 1 and "cluster.yaml" in done.stderr
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as bad:
        bad.write("servers: [\n")
        bad.flush()
        done = status("--config", bad.name)
        assert done.returncode == 1 and f"{bad.name}:" in done.stderr


def test_url_that_is_not_a_console() -> None:
    port = free_port()
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", port))
        srv.listen()
        proc = subprocess.Popen(
            [sys.executable, "-m", "beanrouter", "status", "--url", f"http://127.0.0.1:{port}"],
            cwd=REPO_ROOT, env=env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
        conn.close()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "HTTP 404" in err


def test_http_admin_flag() -> None:
    assert parse_cluster_args(["--http-admin"]).http_admin is True
    assert parse_cluster_args([]).http_admin is False
    done = subprocess.run(
        [sys.executable, "-m", "beanrouter", "proxy", "--help"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env(None),
    )  # fmt: skip
    assert "--http-admin" in done.stdout
