"""``beanrouter proxy --workers N``: N proxy processes on one port, supervised by this one.

Each worker is ``beanrouter proxy --reuse-port ...`` started through ``child.spawn`` (so it dies
with the supervisor) and binds its own SO_REUSEPORT socket: the kernel spreads new connections
over the workers. That is possible because global job ids are stateless: any worker can route any
id. Worker ``i`` serves the HTTP port ``P + i`` when ``--http-port P`` is given (scrape each).

The supervisor forwards SIGTERM/SIGINT (as SIGTERM), SIGHUP and SIGUSR1 to every worker; a worker
started after a drain starts draining. A worker that exits within ``START_GRACE`` seconds of its
start failed to start (bad configuration, port in use): the supervisor stops the others and exits
with its status. A worker that dies later is restarted after ``RESTART_DELAY``. After a stop the
supervisor waits for the workers (each has its own bounded grace period), SIGKILLs any still there
``KILL_AFTER`` seconds later, and exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Final

from . import unseen
from .child import spawn

__all__ = ["DRAIN_ENV", "run_workers"]

START_GRACE: Final = 10.0
SETTLED: Final = 2.0
"""A worker this old has installed its signal handlers (a drain sent earlier is sent again)."""
RESTART_DELAY: Final = 1.0
KILL_AFTER: Final = 5.0
POLL: Final = 0.05
DRAIN_ENV: Final = "BEANROUTER_START_DRAINING"
"""Set to 1 in a worker's environment: it starts in drain mode."""


def run_workers(count: int, worker_args: Callable[[int], list[str]], *, grace: float) -> int:
    """Run ``count`` workers (``beanrouter`` argv of worker ``i``: ``worker_args(i)``) until they
    stop; returns the exit status."""
    ledger = unseen.create()  # the workers' shared unseen counters (``proxy.unseen``)
    try:
        return _supervise(count, worker_args, grace, ledger)
    finally:
        os.close(ledger)


def _supervise(
    count: int, worker_args: Callable[[int], list[str]], grace: float, ledger: int
) -> int:
    procs: list[subprocess.Popen[bytes] | None] = [None] * count
    started = [0.0] * count
    restart_at: list[float | None] = [None] * count
    resent_drain = [False] * count
    state = {"stopping": False, "draining": False}
    status = 0
    stop_deadline = 0.0

    def send(signum: int) -> None:
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signum)

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_deadline
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not state["stopping"]:
                state["stopping"] = True
                stop_deadline = time.monotonic() + grace + KILL_AFTER
            send(signal.SIGTERM)
        else:
            if signum == signal.SIGUSR1:
                state["draining"] = True
            send(signum)

    def start(i: int) -> None:
        env = {unseen.UNSEEN_ENV: str(ledger)}
        if state["draining"]:
            env[DRAIN_ENV] = "1"
        procs[i] = spawn(worker_args(i), env=env, keep_fds=(ledger,))
        started[i] = time.monotonic()
        restart_at[i] = None
        resent_drain[i] = False

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, on_signal)
    for i in range(count):
        start(i)
    while True:
        now = time.monotonic()
        alive = 0
        for i, proc in enumerate(procs):
            if proc is None:
                at = restart_at[i]
                if at is not None and now >= at and not state["stopping"]:
                    start(i)
                    alive += 1
                continue
            rc = proc.poll()
            if rc is None:
                alive += 1
                # A drain signalled while the worker was still starting may have been missed.
                if state["draining"] and not resent_drain[i] and now - started[i] > SETTLED:
                    resent_drain[i] = True
                    proc.send_signal(signal.SIGUSR1)
                continue
            procs[i] = None
            if state["stopping"]:
                continue
            if now - started[i] < START_GRACE:
                print(
                    f"beanrouter proxy: worker {i} exited with status {rc} while starting;"
                    " stopping",
                    file=sys.stderr,
                )
                status = rc if rc > 0 else 1
                state["stopping"] = True
                stop_deadline = now + grace + KILL_AFTER
                send(signal.SIGTERM)
            else:
                print(
                    f"beanrouter proxy: worker {i} exited with status {rc}; restarting it",
                    file=sys.stderr,
                )
                restart_at[i] = now + RESTART_DELAY
        if state["stopping"]:
            if alive == 0:
                return status
            if now > stop_deadline:
                send(signal.SIGKILL)
        time.sleep(POLL)
