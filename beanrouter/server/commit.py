"""GroupCommit: when the binlog's buffered records reach the disk, relative to the replies.

The asyncio shell (app.py) calls ``end_of_batch`` after running all the commands parsed from one
read and before writing their replies, so every reply leaves after its records:

- ``-f 0``: flush and fsync now: one fsync covers every command of the batch, and no reply
  leaves before its record is synced (group commit).
- ``-f MS``: flush now (one write; a crash of the process alone loses nothing acknowledged), and
  fsync on a timer, at most every MS ms and at most MS ms after a write.
- ``-F``: flush now, never fsync.

Compaction runs here too (``Wal.compact``: as beanstalkd, in proportion to what the batch
wrote). A failed write or fsync is fatal (``on_failure``): acknowledging jobs that are not logged
would break the promise the binlog makes, so the server stops instead (beanstalkd silently stops
logging and carries on).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

from .binlog import Wal, WalError

__all__ = ["GroupCommit"]


def _die(exc: BaseException) -> None:
    print(f"beanrouter server: {exc}; stopping", file=sys.stderr, flush=True)
    os._exit(1)


class GroupCommit:
    """Drives a ``Wal`` from the event loop.

    Args:
        wal: the binlog.
        loop: the running loop (timers for ``-f MS``).
        fsync_ms: 0 to sync every batch, MS for at most every MS ms, None (``-F``) never.
        on_failure: called with the WalError when the disk fails (default: print and exit 1).
    """

    __slots__ = ("_last_sync", "_timer", "fsync_ms", "loop", "on_failure", "wal")

    def __init__(
        self,
        wal: Wal,
        loop: asyncio.AbstractEventLoop,
        fsync_ms: int | None,
        on_failure: Callable[[BaseException], None] = _die,
    ) -> None:
        self.wal = wal
        self.loop = loop
        self.fsync_ms = fsync_ms
        self.on_failure = on_failure
        self._timer: asyncio.TimerHandle | None = None
        self._last_sync = 0.0

    def end_of_batch(self) -> None:
        """After a batch of commands, before their replies: make their records as durable as
        the mode promises."""
        wal = self.wal
        if not wal.has_buffered:
            return
        try:
            wal.compact(wal.batch_records)
            ms = self.fsync_ms
            if ms is None or ms == 0:
                wal.sync()  # -F: flush and gc; -f 0: flush, fsync, gc
                return
            wal.flush()
        except WalError as exc:
            self.on_failure(exc)
            return
        if self._timer is None and wal.unsynced:
            at = max(self.loop.time(), self._last_sync + ms / 1000)
            self._timer = self.loop.call_at(at, self._timed_sync)

    def _timed_sync(self) -> None:
        self._timer = None
        self._last_sync = self.loop.time()
        try:
            self.wal.sync()
        except WalError as exc:
            self.on_failure(exc)

    def close(self) -> None:
        """Orderly shutdown: everything written and synced, the current file closed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self.wal.close()
        except WalError as exc:
            self.on_failure(exc)
