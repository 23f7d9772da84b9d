"""The binlog directory lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from beanrouter.server.binlog.lock import DirLockError, lock_dir, unlock_dir


def test_lock_writes_our_pid_and_a_second_lock_fails(tmp_path: Path) -> None:
    fd = lock_dir(str(tmp_path))
    try:
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(DirLockError) as info:
            lock_dir(str(tmp_path))
        assert str(info.value) == f"{tmp_path} is locked by another server (pid {os.getpid()})"
        assert info.value.pid == os.getpid()
    finally:
        unlock_dir(fd)
    unlock_dir(lock_dir(str(tmp_path)))  # free again


def test_another_process_holding_the_lock_is_named(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from beanrouter.server.binlog.lock import lock_dir; "
            f"lock_dir({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    with holder:  # closes its stdout pipe and waits for it
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            match = rf"locked by another server \(pid {holder.pid}\)"
            with pytest.raises(DirLockError, match=match):
                lock_dir(str(tmp_path))
        finally:
            holder.kill()
    unlock_dir(lock_dir(str(tmp_path)))  # released when its holder died


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DirLockError, match="not a directory"):
        lock_dir(str(tmp_path / "missing"))
