"""The blocking ``Router``'s maintenance timer (``Router._on_timer``): it runs on the shared
timer thread and never blocks on a router; one that fires while a call holds the router tries
again shortly rather than leaving a prefetched job unreturned until the next call."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from beanrouter import Router
from beanrouter.router import router as router_module
from beanrouter.router.timers import TIMERS


def test_a_timer_that_fires_during_a_call_tries_again(monkeypatch: pytest.MonkeyPatch) -> None:
    armed: list[tuple[float, Callable[[], None]]] = []
    monkeypatch.setattr(TIMERS, "at", lambda delay, cb: armed.append((delay, cb)))
    router = Router(["127.0.0.1:9"])
    try:
        with router._calls:  # a call runs on this thread
            fired = threading.Thread(target=router._on_timer)
            fired.start()
            fired.join(5)
            assert not fired.is_alive()  # it did not wait for the call
        assert armed == [(router_module.TIMER_RETRY, router._on_timer)]
        armed.clear()
        fired = threading.Thread(target=router._on_timer)  # the call is over: it runs now
        fired.start()
        fired.join(5)
        assert armed == []  # nothing due: nothing re-armed
    finally:
        router.close()
