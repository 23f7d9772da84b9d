"""What the bundled server imports on its way to a first reply (no timing: module lists).

Its first reply after a start is mostly import time (docs/benchmarks.md, "First reply"): every
module on that path costs a harness that spawns it as ``$BEANSTALKD_PATH``. Each way of starting
it is run under ``-X importtime``, which names every module the process imports, up to its
reply to ``stats`` and its exit on SIGTERM; none of the router's, the proxy's or the CLI's
dependencies may be among them, nor ``dataclasses`` (the codec's events are ``_record.Record``
classes because building dataclasses was a third of the start-up). With ``-b`` the binlog
modules come in, and they may use dataclasses.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ports import free_port

NEVER = ("click", "yaml", "uhashring", "beanrouter.router", "beanrouter.proxy", "beanrouter.core")
"""Modules (and their submodules) the server's start path must not import, with or without -b."""
NOT_WITHOUT_BINLOG = ("dataclasses", "beanrouter.server.binlog", "beanrouter.server.commit")
PY = [sys.executable, "-X", "importtime"]
BIN = Path(sys.executable).parent
STARTS = {
    "python -m beanrouter server": ["-m", "beanrouter", "server"],
    "beanrouter server": [str(BIN / "beanrouter"), "server"],  # the console scripts
    "beanrouter-server": [str(BIN / "beanrouter-server")],
}
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$", re.M)


def imported_by(command: list[str]) -> list[str]:
    """Start ``command`` on a free port, get its reply to ``stats``, stop it; the modules it
    imported (from ``-X importtime``'s report on stderr)."""
    port = free_port()
    with subprocess.Popen(
        [*command, "-l", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, "the server exited"
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the server never listened"
                    time.sleep(0.01)
            with sock:
                sock.sendall(b"stats\r\n")
                assert sock.recv(65536).startswith(b"OK ")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err[-2000:]
    modules = [m.group(2) for m in IMPORTED.finditer(err)]
    assert "beanrouter.server.app" in modules and "asyncio" in modules, err[-2000:]
    return modules


def among(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.parametrize("how", STARTS)
def test_start_path_imports_nothing_it_does_not_need(how: str) -> None:
    args = STARTS[how]
    if args[0] != "-m" and not Path(args[0]).exists():
        pytest.skip(f"{args[0]} is not installed (make venv)")
    modules = imported_by([*PY, *args])
    assert among(modules, NEVER + NOT_WITHOUT_BINLOG) == []


def test_start_path_with_a_binlog_imports_no_router_nor_cli(tmp_path: Path) -> None:
    modules = imported_by([*PY, "-m", "beanrouter", "server", "-b", str(tmp_path)])
    assert "beanrouter.server.binlog" in modules
    assert among(modules, NEVER) == []


def test_the_check_sees_a_forbidden_import() -> None:
    """The check itself: a start that imports click and a dataclass is caught."""
    code = "import click, dataclasses, runpy; runpy.run_module('beanrouter', run_name='__main__')"
    modules = imported_by([*PY, "-c", code, "server"])
    found = among(modules, NEVER + NOT_WITHOUT_BINLOG)
    assert "click" in found and "dataclasses" in found
    assert {name.partition(".")[0] for name in found} == {"click", "dataclasses"}
