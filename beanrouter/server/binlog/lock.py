"""The binlog directory lock: one server per directory, as beanstalkd's ``DIR/lock``.

Two locks on ``DIR/lock``, both held until the process exits: a POSIX record lock (``F_SETLK``,
the one beanstalkd takes, so beanstalkd and beanrouter also exclude each other) and a BSD
``flock`` (which, unlike the POSIX lock, also excludes a second open in the same process). The
file holds the owner's pid for the error message; ``F_GETLK`` names the holder even when it is a
beanstalkd, which writes no pid. (POSIX drops a process's record locks when it closes any
descriptor of the file, so a failed second lock in the same process also drops the first one's
POSIX lock; its flock stays. Servers are one per process, so this only concerns tests.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct

__all__ = ["DirLockError", "lock_dir", "unlock_dir"]

_FLOCK = struct.Struct("hhqqi4x")  # Linux struct flock: type, whence, start, len, pid


class DirLockError(Exception):
    """The directory is missing, unusable, or locked by another server (``pid`` if known)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


def _holder(fd: int) -> int | None:
    """The pid holding a conflicting POSIX lock on ``fd``, if the kernel says."""
    with contextlib.suppress(OSError):
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
        if kind != fcntl.F_UNLCK and pid > 0:
            return int(pid)
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    return None


def lock_dir(directory: str) -> int:
    """Lock ``directory`` for this process; returns the lock file's descriptor (keep it open:
    closing any descriptor of the lock file drops the POSIX lock).

    Raises:
        DirLockError: the directory does not exist or the lock is held elsewhere.
    """
    if not os.path.isdir(directory):
        raise DirLockError(f"{directory}: not a directory (create it first)")
    path = os.path.join(directory, "lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DirLockError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise DirLockError(f"cannot lock {path}: {exc.strerror}") from exc
            pid = _holder(fd)
            who = f" (pid {pid})" if pid is not None else ""
            raise DirLockError(f"{directory} is locked by another server{who}", pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock_dir(fd: int) -> None:
    """Release a lock taken by ``lock_dir`` (tests; a server keeps its lock until it exits)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)
