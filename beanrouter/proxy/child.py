"""Supervised children: ``spawn(ARGS)`` runs ``beanrouter ARGS`` (``python -m beanrouter ARGS``) so
that it dies with its supervisor, and can be handed a listening socket.

Used by ``beanrouter cluster`` for its shards and by ``beanrouter proxy --workers`` for its
workers. The supervisor (``spawn``) passes, in the environment:

- ``BEANROUTER_PARENT_PID``: its pid. The child asks the kernel for SIGTERM when its parent dies
  (Linux ``prctl(PR_SET_PDEATHSIG)``, through ctypes; elsewhere a daemon thread polls
  ``getppid()`` once a second), then checks that the parent is still that pid, since it may have
  died before the request was made. So a supervisor killed with SIGKILL leaves no orphans.
- ``BEANROUTER_LISTEN_FD``: an inherited listening socket; the child moves it to fd 3 and
  announces it with ``LISTEN_PID``/``LISTEN_FDS`` (systemd socket activation, which the bundled
  server honours). The supervisor binds the socket, so there is no race for a free port and a
  restarted shard gets the same port with its backlog intact.

The child follows these instructions with ``adopt``, which ``python -m beanrouter``
(``beanrouter/__main__.py``) calls before the command line runs when ``BEANROUTER_PARENT_PID`` is
set. This module never imports the command line (``beanrouter.cli``): process supervision is the
layer below it (docs/architecture.md, *Layers*).

Children run in their own session, so a terminal's ^C (SIGINT to the foreground process group)
reaches only the supervisor, which stops them in order. Doing all this in the child rather than
in ``preexec_fn`` keeps spawning safe when the supervisor has threads. Standard library only, and
light: it runs before the child's own start-up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

__all__ = ["LISTEN_FD_ENV", "PARENT_ENV", "adopt", "die_with_parent", "spawn"]

PARENT_ENV = "BEANROUTER_PARENT_PID"
LISTEN_FD_ENV = "BEANROUTER_LISTEN_FD"
_PR_SET_PDEATHSIG = 1
_SD_LISTEN_FDS_START = 3


def _prctl_pdeathsig(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):  # pragma: no cover - no usable libc
        return False


def _watch_parent(parent: int, signum: int) -> None:  # pragma: no cover - non-Linux fallback
    def poll() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signum)

    threading.Thread(target=poll, name="parent-watch", daemon=True).start()


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Get ``signum`` when process ``parent`` (our parent) dies; exit now if it already has."""
    if not _prctl_pdeathsig(signum):  # pragma: no cover - non-Linux
        _watch_parent(parent, signum)
    if os.getppid() != parent:
        os._exit(1)


def _adopt_listen_fd(fd: int) -> None:
    if fd != _SD_LISTEN_FDS_START:
        os.dup2(fd, _SD_LISTEN_FDS_START)  # inheritable by default
        os.close(fd)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDS"] = "1"


def adopt() -> None:
    """Apply the supervisor's instructions in the environment (a child of ``spawn``, before the
    ``beanrouter`` command line runs)."""
    # Until the child installs its own handlers, a forwarded SIGHUP or SIGUSR1 must not end it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is not None and parent.isdigit():
        die_with_parent(int(parent))
    fd = os.environ.pop(LISTEN_FD_ENV, None)
    if fd is not None and fd.isdigit():
        _adopt_listen_fd(int(fd))


def spawn(
    args: Sequence[str],
    *,
    listen: socket.socket | None = None,
    env: Mapping[str, str] | None = None,
    keep_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start ``beanrouter ARGS`` as a child that dies with this process.

    Args:
        args: the ``beanrouter`` command line after the program name (``["server", "-p", …]``).
        listen: a listening socket the child serves on (passed as socket activation).
        env: extra environment variables.
        keep_fds: other descriptors the child inherits (named to it in ``env``).
    """
    environ = dict(os.environ)
    if env:
        environ.update(env)
    environ[PARENT_ENV] = str(os.getpid())
    # The child must import this very package: add a checkout it was imported from to its path
    # (never a site-packages directory, which would then come before the standard library).
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.basename(root) not in ("site-packages", "dist-packages"):
        path = environ.get("PYTHONPATH", "")
        environ["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    pass_fds: tuple[int, ...] = tuple(keep_fds)
    if listen is not None:
        environ[LISTEN_FD_ENV] = str(listen.fileno())
        pass_fds += (listen.fileno(),)
    else:
        environ.pop(LISTEN_FD_ENV, None)
    return subprocess.Popen(
        [sys.executable, "-m", "beanrouter", *args],  # __main__ calls ``adopt`` first
        env=environ,
        stdin=subprocess.DEVNULL,
        pass_fds=pass_fds,
        start_new_session=True,  # a terminal's ^C reaches the supervisor, which stops us in order
    )
