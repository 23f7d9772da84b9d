"""The bundled server's persistence (``-b DIR``): a checksummed binlog with beanstalkd's semantics.

- ``format``: the bytes of a file (header, records, CRC-32 per record); no I/O.
- ``wal``: the files at run time: space reserved ahead, buffered writes, fsync, compaction, gc.
- ``recover``: start-up: read the files back into the engine, judge damage (torn tail vs. not).
- ``lock``: one server per directory.

``open_binlog`` ties them together for the CLI. Part of the server shell (docs/architecture.md,
*Layers*): imports the server's own modules and the standard library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .lock import DirLockError, lock_dir
from .recover import Recovered, RecoveryError, load
from .wal import Allocate, Wal, WalError, default_allocate

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = [
    "DirLockError",
    "Recovered",
    "RecoveryError",
    "Wal",
    "WalError",
    "open_binlog",
]


def open_binlog(
    engine: Engine,
    directory: str,
    *,
    file_size: int,
    fsync: bool,
    salvage: bool = False,
    allocate: Allocate = default_allocate,
    log: Callable[[str], None] | None = None,
) -> tuple[Wal, Recovered]:
    """Lock ``directory``, read it back into ``engine`` and attach a Wal as its journal.

    Raises:
        DirLockError: missing directory, or another server holds it.
        RecoveryError: damage that is not a torn tail (see recover.py).
        WalError: no room to open the log.
    """
    lock_dir(directory)  # held (descriptor left open) until the process exits
    wal = Wal(directory, file_size=file_size, fsync=fsync, allocate=allocate, log=log)
    found = load(engine, wal, salvage=salvage, log=wal.log)
    return wal, found
