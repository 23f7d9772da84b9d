"""A pytest plugin loaded into a peer suite's run (``-p peer_ready``) for beanrouter's server and
cluster.

The suites start their server and connect after a fixed sleep (greenstalk: 0.1 s, then timed
checks with 50 ms of slack from the first command; pystalk 0.5.1: 0.25 s). A Python server's first
reply comes later than that on a loaded 2-core machine, and ``beanrouter cluster`` serves only
when its shards (three more Python processes) answer. So ``subprocess.Popen`` of
``$BEANSTALKD_PATH`` returns only once the server says it serves, by the readiness protocol of
systemd (``$NOTIFY_SOCKET``, ``READY=1``): no connection is made, so every counter the suites check
is untouched, and nothing else about the suites changes. Another program, or a server that never
reports, is waited for at most ``WAIT`` seconds, then the suite carries on as written.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from typing import Any

WAIT = 60.0  # seconds

_Popen = subprocess.Popen


class ReadyPopen(_Popen):  # type: ignore[type-arg]
    """``Popen`` that waits for ``READY=1`` from a spawned ``$BEANSTALKD_PATH``."""

    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        target = os.environ.get("BEANSTALKD_PATH")
        argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
        if not target or not argv or os.fspath(argv[0]) != target or kwargs.get("shell"):
            super().__init__(args, *rest, **kwargs)
            return
        with tempfile.TemporaryDirectory(prefix="peer-ready-") as tmp:
            path = os.path.join(tmp, "notify")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(path)
                env = dict(kwargs.pop("env", None) or os.environ)
                env["NOTIFY_SOCKET"] = path
                kwargs["env"] = env
                super().__init__(args, *rest, **kwargs)
                deadline = time.monotonic() + WAIT
                while self.poll() is None and time.monotonic() < deadline:
                    sock.settimeout(0.05)
                    try:
                        if b"READY=1" in sock.recv(4096).split(b"\n"):
                            return
                    except TimeoutError:
                        continue


def pytest_configure(config: object) -> None:
    subprocess.Popen = ReadyPopen  # type: ignore[misc]
