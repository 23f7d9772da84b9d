"""The console in headless Chromium, against a live ``beanrouter cluster`` (and, to see a shard
stay down, ``beanrouter proxy`` in front of shards this test starts and kills)."""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

import pytest

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - the test extra installs it
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("Playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

from tests.cli.procs import Proc, talk, wait_for
from tests.ports import free_port, free_port_run
from tests.router.cluster import start_all

from .conftest import http_json, screenshot, wait_http


def start_cluster(procs: list[Proc], *extra: str, shards: int = 3) -> tuple[int, str]:
    """A ``beanrouter cluster`` with the real routing core; its port and HTTP base URL."""
    port = free_port_run(2)
    p = Proc(
        ["cluster", "-p", str(port), "--shards", str(shards), "--http-port", str(port + 1), *extra],
        backend=None,
    )
    procs.append(p)
    return port, wait_http(p, port + 1)


def beanstalk(port: int, script: bytes, until: bytes = b"\r\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        return talk(s, script, until)


def put_jobs(port: int, tube: str, bodies: list[bytes], delay: int = 0) -> list[int]:
    script = b"use %b\r\n" % tube.encode()
    for body in bodies:
        script += b"put 0 %d 60 %d\r\n%b\r\n" % (delay, len(body), body)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(script)
        out = b""
        while out.count(b"\r\n") < 1 + len(bodies):
            chunk = s.recv(65536)
            assert chunk, out
            out += chunk
    return [int(x) for x in re.findall(rb"INSERTED (\d+)", out)]


def test_overview_shows_the_cluster_and_follows_puts(procs: list[Proc], page: Page) -> None:
    port, base = start_cluster(procs)
    put_jobs(port, "emails", [b"hello", b"world"])
    page.goto(base + "/")
    shards = page.locator("#shards tbody tr")
    expect(shards).to_have_count(3)
    for i in range(3):
        expect(page.locator(f'#shards tr[data-shard="shard-{i}"] .c-state')).to_contain_text("up")
    row = '#tubes tr[data-tube="emails"]'
    expect(page.locator(f"{row} .c-ready")).to_have_text("2")
    expect(page.locator("#mode")).to_have_text("read-only")
    # The numbers follow the cluster without reloading the page.
    put_jobs(port, "emails", [b"three"])
    put_jobs(port, "reports", [b"r"])
    expect(page.locator(f"{row} .c-ready")).to_have_text("3")
    expect(page.locator('#tubes tr[data-tube="reports"] .c-ready')).to_have_text("1")
    # A worker woken by a put: the wake-up chart gets a line for the shard that delivered.
    got: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as worker:
        # (It watches wake and default, which live on different shards: a cross-shard wait.)
        worker.sendall(b"watch wake\r\nreserve-with-timeout 20\r\n")
        waiter = threading.Thread(target=lambda: got.append(_read_reserved(worker)))
        waiter.start()
        wait_for(lambda: http_json(base + "/api/overview")["proxy"]["waiting"] == 1, "a waiter")
        # Put with a delay: its acknowledgement is surely in before the job wakes the worker.
        put_jobs(port, "wake", [b"w"], delay=1)
        waiter.join(30)
    assert got and got[0].startswith(b"WATCHING"), got
    expect(page.locator('#chart-wakeup path[data-series$="p50"]')).to_have_count(1)
    expect(page.locator('#chart-commands path[data-series="commands"]')).to_have_attribute(
        "d", re.compile(r"^M.*L")
    )
    screenshot(page, "overview")


def _read_reserved(sock: socket.socket) -> bytes:
    out = b""
    while b"RESERVED" not in out or not out.endswith(b"\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def test_tube_page_is_read_only_without_the_flag(procs: list[Proc], page: Page) -> None:
    port, base = start_cluster(procs)
    (job,) = put_jobs(port, "emails", [b"<b>not html</b>"])
    page.goto(base + "/#/tube/emails")
    expect(page.locator("#tube-name")).to_have_text("emails")
    expect(page.locator("#readonly-note")).to_contain_text("--http-admin")
    expect(page.locator("#kick-form")).to_have_count(0)
    page.locator(f'a[data-job="{job}"]').first.click()
    expect(page.locator('#job-stats td[data-stat="state"]')).to_have_text("ready")
    expect(page.locator("#job-body")).to_have_text("<b>not html</b>")  # as text, not markup
    expect(page.locator("#job-actions button")).to_have_count(0)
    # The page's own token does not help: the proxy refuses actions without the flag.
    status = page.evaluate(
        """async () => (await fetch('/api/action', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-Beanrouter-Token':
                      document.querySelector('meta[name="beanrouter-token"]').content},
            body: JSON.stringify({action: 'pause', tube: 'emails', delay: 60})})).status"""
    )
    assert status == 403


def test_admin_actions_with_the_flag(procs: list[Proc], page: Page) -> None:
    port, base = start_cluster(procs, "--http-admin")
    first, second, _ = put_jobs(port, "emails", [b"one", b"two", b"three"])
    page.goto(base + "/#/tube/emails")
    expect(page.locator("#mode")).to_have_text("admin actions on")
    owner_row = page.locator("#tube-shards tbody tr").first
    expect(owner_row.locator(".c-ready")).to_have_text("3")
    # Delete the next ready job.
    page.locator(f'a[data-job="{first}"]').first.click()
    expect(page.locator('#job-stats td[data-stat="state"]')).to_have_text("ready")
    page.locator("#delete-job").click()
    expect(page.locator("#message")).to_contain_text("delete: done")
    expect(owner_row.locator(".c-ready")).to_have_text("2")
    # Pause the tube, then resume it.
    page.locator('#pause-form input[name="delay"]').fill("120")
    page.locator('#pause-form button[type="submit"]').click()
    expect(page.locator("#tube-info")).to_contain_text("yes")
    page.locator(f'a[data-job="{second}"]').first.click()
    expect(page.locator('#job-stats td[data-stat="id"]')).to_have_text(str(second))
    screenshot(page, "tube")
    page.locator("#pause-form button[type=button]").click()
    expect(page.locator("#tube-info dd").nth(4)).to_have_text("no")
    # Bury a job through the proxy, then kick it from the console.
    out = beanstalk(port, b"reserve-job %d\r\nbury %d 0\r\n" % (second, second), b"BURIED\r\n")
    assert out.endswith(b"BURIED\r\n"), out
    expect(owner_row.locator(".c-buried")).to_have_text("1")
    page.locator('#kick-form input[name="bound"]').fill("5")
    page.locator('#kick-form button[type="submit"]').click()
    expect(page.locator("#message")).to_contain_text('"kicked":1')
    expect(owner_row.locator(".c-buried")).to_have_text("0")
    expect(owner_row.locator(".c-ready")).to_have_text("2")


def test_a_killed_shard_shows_down(procs: list[Proc], page: Page, tmp_path: Path) -> None:
    shards = start_all("bundled", 2)
    try:
        config = tmp_path / "cluster.yaml"
        config.write_text(
            "servers:\n" + "".join(f"  - {s.address} s{i} id={i}\n" for i, s in enumerate(shards))
        )
        port, http = free_port(), free_port()
        p = Proc(
            ["proxy", "--config", str(config), "-p", str(port), "--http-port", str(http)],
            backend=None,
        )
        procs.append(p)
        base = wait_http(p, http)
        page.goto(base + "/")
        expect(page.locator('#shards tr[data-shard="s1"] .c-state')).to_contain_text("up")
        shards[1].kill()
        expect(page.locator('#shards tr[data-shard="s1"] .c-state')).to_contain_text("down")
        expect(page.locator('#shards tr[data-shard="s1"]')).to_contain_text("refused")
        expect(page.locator('#shards tr[data-shard="s0"] .c-state')).to_contain_text("up")
        expect(page.locator("#summary")).to_contain_text("1/2 shards up")
        # A put to a tube s1 owns fails over to s0: the job shows as away from its owner.
        tube = next(
            t for t in (f"t{i}" for i in range(100))
            if http_json(f"{base}/route?tube={t}")["owner"] == "s1"
        )  # fmt: skip
        put_jobs(port, tube, [b"stray"])
        row = page.locator(f'#tubes tr[data-tube="{tube}"]')
        expect(row.locator(".c-away")).to_have_text("1")
        expect(row).to_contain_text("s0: r1")
        screenshot(page, "down")
    finally:
        for s in shards:
            s.stop()


def test_another_site_cannot_run_actions(procs: list[Proc], page: Page) -> None:
    """A page from elsewhere, in the operator's browser, tries the actions of a console that
    allows them: a JSON POST with a guessed token (stopped by the CORS preflight, or refused),
    and a plain form-like POST (refused: foreign Origin, no token). Nothing is paused."""
    port, base = start_cluster(procs, "--http-admin")
    put_jobs(port, "emails", [b"x"])
    page.route(
        "http://evil.test/",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<p>hi</p>"),
    )
    page.goto("http://evil.test/")
    outcome = page.evaluate(
        """async (url) => {
            const body = JSON.stringify({action: 'pause', tube: 'emails', delay: 600});
            const out = [];
            try {
                const r = await fetch(url, {method: 'POST', body,
                    headers: {'Content-Type': 'application/json', 'X-Beanrouter-Token': 'guess'}});
                out.push('json ' + r.status);
            } catch (e) { out.push('json blocked'); }
            try {
                await fetch(url, {method: 'POST', mode: 'no-cors', body,
                                  headers: {'Content-Type': 'text/plain'}});
                out.push('simple sent');
            } catch (e) { out.push('simple blocked'); }
            return out;
        }""",
        base + "/api/action",
    )
    assert outcome[0] in ("json blocked", "json 403"), outcome
    tube = http_json(base + "/api/tube?name=emails")["tube"]
    assert tube["paused"] is False, (outcome, tube)
