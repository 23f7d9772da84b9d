"""Loopback ports for the servers the tests start.

Ports come from below the kernel's ephemeral range (32768+ on Linux), so no outgoing connection
(this test's clients, a proxy's shard links) can be given one between the moment it is picked and
the moment a server binds it; the start is random and each port is handed out once per process, so
two servers started back to back never race for the same one.
"""

from __future__ import annotations

import itertools
import random
import socket

HOST = "127.0.0.1"
LOW, HIGH = 20000, 32000

_next = itertools.count(random.randrange(HIGH - LOW))


def _bindable(ports: range) -> bool:
    socks: list[socket.socket] = []
    try:
        for port in ports:
            s = socket.socket()
            socks.append(s)
            s.bind((HOST, port))
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()
    return True


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive ports, free right now and not handed out before."""
    for _ in range(10 * (HIGH - LOW)):
        first = LOW + next(_next) % (HIGH - LOW - count)
        for _ in range(count - 1):
            next(_next)
        if _bindable(range(first, first + count)):
            return first
    raise RuntimeError(f"no run of {count} free ports in {LOW}..{HIGH}")


def free_port() -> int:
    """A loopback TCP port, free right now and not handed out before by this process."""
    return free_port_run(1)
