"""ProcInfo: the process facts that ``stats`` reports (pid, version, rusage, id, uname).

Kept apart from the engine so the engine stays pure and tests can inject fixed values.
Formats follow beanstalkd's ``fmt_stats``: rusage as ``%d.%06d``, ``id`` as 16 hex chars drawn at
start-up, hostname/os/platform from uname (nodename, version, machine).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

__all__ = ["BEANSTALKD_VERSION", "ProcInfo"]

BEANSTALKD_VERSION = "1.12"


def _fmt_timeval(seconds: float) -> str:
    usec_total = round(seconds * 1_000_000)
    return f"{usec_total // 1_000_000}.{usec_total % 1_000_000:06d}"


def _self_rusage() -> tuple[str, str]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return _fmt_timeval(ru.ru_utime), _fmt_timeval(ru.ru_stime)


class ProcInfo:
    """Process facts for ``stats``. All fields are plain values except ``rusage``, a callable.

    Args:
        pid: process id.
        version: server version, shown quoted in stats (``version: "1.12"``).
        instance_id: 16 lowercase hex chars, random per process.
        hostname: uname nodename.
        os: uname version (beanstalkd prints ``utsname.version`` as ``os``).
        platform: uname machine.
        rusage: returns (utime, stime) already formatted as ``%d.%06d``.
    """

    __slots__ = ("hostname", "instance_id", "os", "pid", "platform", "rusage", "version")

    def __init__(
        self,
        *,
        pid: int,
        version: str,
        instance_id: str,
        hostname: str,
        os: str,
        platform: str,
        rusage: Callable[[], tuple[str, str]],
    ) -> None:
        self.pid = pid
        self.version = version
        self.instance_id = instance_id
        self.hostname = hostname
        self.os = os
        self.platform = platform
        self.rusage = rusage

    @classmethod
    def current(cls, version: str = BEANSTALKD_VERSION) -> ProcInfo:
        """Facts of the running process, with a fresh random instance id."""
        u = os.uname()
        return cls(
            pid=os.getpid(),
            version=version,
            instance_id=os.urandom(8).hex(),  # not secrets: it imports hashlib (+4.6 MB RSS)
            hostname=u.nodename,
            os=u.version,
            platform=u.machine,
            rusage=_self_rusage,
        )

    @classmethod
    def fixed(cls) -> ProcInfo:
        """Deterministic facts for tests."""
        return cls(
            pid=1,
            version=BEANSTALKD_VERSION,
            instance_id="0123456789abcdef",
            hostname="localhost",
            os="#1 SMP",
            platform="x86_64",
            rusage=lambda: ("0.000000", "0.000000"),
        )
