"""``AsyncRouter`` behind ``Router``'s blocking API, so the router suite runs against both shells.

Each adapter runs its own event loop in a thread; every coroutine method is run there to its end;
``AsyncJob`` results come back wrapped with ``Job``'s blocking methods.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

from beanrouter.router.aio import AsyncJob, AsyncRouter


class SyncJob:
    """``Job``'s blocking API over an ``AsyncJob``."""

    def __init__(self, job: AsyncJob, run: Callable[[Any], Any]) -> None:
        self._job = job
        self._run = run

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._job, name)
        if inspect.iscoroutinefunction(value):
            return lambda *a, **k: self._run(value(*a, **k))
        return value

    def __repr__(self) -> str:
        return repr(self._job)


class SyncAsyncRouter:
    """``Router``'s blocking API over an ``AsyncRouter`` (same arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def make() -> AsyncRouter:
            return AsyncRouter(*args, **kwargs)

        self._router: AsyncRouter = self._run(make())
        self._closed = False

    def _run(self, coro: Any) -> Any:
        result = asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        if isinstance(result, AsyncJob):
            return SyncJob(result, self._run)
        return result

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._router, name)
        if inspect.iscoroutinefunction(value):
            return lambda *a, **k: self._run(value(*a, **k))
        return value

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run(self._router.close())
        self._run(_finish_tasks())  # as asyncio.run ends: no task left holding a transport
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> SyncAsyncRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _finish_tasks() -> None:
    """Cancel the loop's other tasks (background read-outs) and wait for them to end, so that
    their transports are closed before the loop is (else they leak: ResourceWarning)."""
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await asyncio.sleep(0)  # the closing transports' connection_lost callbacks
