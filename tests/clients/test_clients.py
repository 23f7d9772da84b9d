"""Clients in other languages, unmodified, against beanrouter: the same transcript as beanstalkd's.

PHP's pheanstalk and Ruby's beaneater (Debian's packages) and Node.js's jackd (the npm registry,
pinned in tests/clients/node) each run one scripted session (``scenario.php``, ``scenario.rb``,
``scenario.js``; ``make test`` installs the clients when it can, tests/reference_server.py): a
Laravel-style worker counting attempts with ``stats-job`` ``reserves``, bury/kick/peek, a worker
watching tubes that a cluster spreads over its shards (priority order across them), PHP-FPM-style
short connections, a worker vanishing while it holds a job, stats, pause-tube (not with jackd:
its ``pause-tube`` lacks the CRLF) and errors. jackd also pipelines puts, watches, releases and
deletes on one connection. Job ids are printed as J1, J2, ... in order of first appearance, so
the transcript from the bundled server, from ``beanrouter cluster --shards 1`` and from
``--shards 3`` must equal the real beanstalkd's line for line.

Without a client its tests skip with the reason, except under ``CI``, where they fail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conformance.harness import BEANROUTER, BEANSTALKD, CLUSTER1, CLUSTER3, Server
from tests.reference_server import CLIENT_PACKAGES, clients_present, node_clients_present

HERE = Path(__file__).parent
CLIENTS = {"php-pheanstalk": ["php", str(HERE / "scenario.php")],
           "ruby-beaneater": ["ruby", str(HERE / "scenario.rb")],
           "node-jackd": ["node", str(HERE / "scenario.js")]}  # fmt: skip
IMPLS = (BEANROUTER, CLUSTER1, CLUSTER3)


def _require(client: str) -> None:
    if client == "node-jackd":
        if node_clients_present():
            return
        reason = "Node.js or its jackd client is missing (tests/clients/node: npm ci)"
    else:
        if clients_present():
            return
        reason = f"PHP's pheanstalk or Ruby's beaneater is missing ({' '.join(CLIENT_PACKAGES)})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI installs them (.ci/run, make test)")
    pytest.skip(f"{reason}; make test installs them")


def transcript(argv: list[str], impl: str) -> list[str]:
    server = Server(impl)
    try:
        server.start()
        done = subprocess.run(
            [*argv, str(server.port)],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    finally:
        server.stop()
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[-1:] == ["done"], (
        f"{argv[0]} against {impl} exited {done.returncode}:\n"
        f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )
    return lines


@pytest.fixture(scope="module", params=sorted(CLIENTS))
def reference(request: pytest.FixtureRequest) -> tuple[str, list[str]]:
    client: str = request.param
    _require(client)
    return client, transcript(CLIENTS[client], BEANSTALKD)


@pytest.mark.reference
@pytest.mark.parametrize("impl", IMPLS)
def test_same_transcript_as_beanstalkd(reference: tuple[str, list[str]], impl: str) -> None:
    client, expected = reference
    got = transcript(CLIENTS[client], impl)
    assert got == expected, f"{client} against {impl} differs from beanstalkd"
