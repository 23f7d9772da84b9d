"""One daemon thread that calls blocking routers back on time (their ``maintain``).

The blocking ``Router`` has no event loop, but the routing core wants ``maintain`` run on time
while the caller is busy elsewhere: waits left armed for the next reserve are cancelled when
their linger ends, jobs caught meanwhile are given back. ``Timers.at(delay, callback)`` schedules
a call on one shared thread (started on first use); callbacks are held weakly, so a forgotten
router is not kept alive by its timer. Callbacks must be quick and must not block on the caller:
a router's callback only tries its call lock and gives up when a call is running (that call does
the work as it ends).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Callable

__all__ = ["TIMERS", "Timers"]


class Timers:
    """A heap of (due, callback) served by one daemon thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, weakref.WeakMethod[Callable[[], None]]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, delay: float, callback: Callable[[], None]) -> None:
        """Call the bound method ``callback`` in ``delay`` seconds (from the timer thread)."""
        due = time.monotonic() + max(0.0, delay)
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), weakref.WeakMethod(callback)))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="beanrouter-timers", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = None if not self._heap else self._heap[0][0] - time.monotonic()
                    self._cond.wait(timeout)
                _, _, ref = heapq.heappop(self._heap)
            callback = ref()
            if callback is not None:
                # A callback's failure must not stop everyone's timers.
                with contextlib.suppress(Exception):
                    callback()


TIMERS = Timers()
