"""Differential conformance harness: scripted sessions, server processes, transcripts.

A ``Case`` is a list of ``Step``s (send bytes on a named connection, read n whole replies, sleep,
half-close, ...). The same case runs against the real beanstalkd (the reference) and against the
implementation under test; the two transcripts must be identical after ``normalise``. Steps may
also carry literal expected replies taken from the spec, checked on every implementation, so a
test cannot pass merely because both servers are wrong in the same way.

Invariants: every case runs on a fresh server unless ``Case.shared`` says its replies do not depend
on server state; connections are opened lazily in step order, so connection counters agree.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Final, Literal

import pytest

from tests.ports import free_port

from .wire import PeerClosed, ReplyTimeout, Session

HOST: Final = "127.0.0.1"
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BEANSTALKD: Final = "beanstalkd"
BEANROUTER: Final = "beanrouter"
CLUSTER1: Final = "cluster1"
"""``beanrouter cluster --shards 1``: the proxy over one bundled shard (id 0), byte-identical."""
CLUSTER3: Final = "cluster3"
"""``beanrouter cluster --shards 3``: compared after mapping global job ids to the reference's."""
CLUSTERS: Final = {CLUSTER1: 1, CLUSTER3: 3}
SHARDED: Final = frozenset({CLUSTER3})
"""Implementations whose job ids are compared after mapping (``IdMap``)."""
_LIST_ORDER: Final = (
    "list-tubes order: one beanstalkd lists tubes in creation order, a removed tube's slot taken"
    " by the last one; the cluster merges its shards' lists (each in its own such order) in"
    " shard order, and no shard sees the others' creations and removals (docs/compatibility.md)"
)
SHARDED_SKIPS: Final[Mapping[str, str]] = {
    "list-tubes-order-after-removal": _LIST_ORDER,
    "tube-lives-while-another-connection-uses-it": _LIST_ORDER,
    "restart-tubes": _LIST_ORDER,
}
"""Cases that cannot pass on a sharded cluster by nature of sharding, with the reason
(docs/compatibility.md lists them too). Skipped for ``SHARDED`` implementations only."""


def skip_if_sharded(impl: str, name: str) -> None:
    """Skip case ``name`` on a sharded cluster when ``SHARDED_SKIPS`` lists it."""
    if impl in SHARDED and name in SHARDED_SKIPS:
        pytest.skip(f"{impl}: {SHARDED_SKIPS[name]}")


IMPLEMENTATIONS: Final = (BEANSTALKD, BEANROUTER, CLUSTER1, CLUSTER3)

CLOSED: Final = b"<closed>"
OPEN: Final = b"<still open>"
TIMEOUT: Final = b"<timeout>"

Mode = Literal["steps", "pipelined", "bytewise"]


# -- servers ---------------------------------------------------------------------------------


class ServerStartError(Exception):
    """The server process could not be started or never accepted a connection."""


def beanstalkd_binary() -> str:
    """Path of the real beanstalkd: ``$BEANSTALKD_BIN`` or ``/usr/bin/beanstalkd``."""
    return os.environ.get("BEANSTALKD_BIN", "/usr/bin/beanstalkd")


def server_command(impl: str, port: int, flags: Sequence[str]) -> list[str]:
    """The argv starting ``impl`` on ``HOST:port`` with extra ``flags``."""
    listen = ["-l", HOST, "-p", str(port), *flags]
    if impl == BEANSTALKD:
        binary = beanstalkd_binary()
        if not os.access(binary, os.X_OK):
            raise ServerStartError(
                f"real beanstalkd not found at {binary}: install it (apt-get install beanstalkd)"
                " or set BEANSTALKD_BIN"
            )
        return [binary, *listen]
    if impl == BEANROUTER:
        return [sys.executable, "-m", "beanrouter", "server", *listen]
    if impl in CLUSTERS:
        shards = str(CLUSTERS[impl])
        return [sys.executable, "-m", "beanrouter", "cluster", "--shards", shards, *listen]
    raise ValueError(f"unknown implementation {impl!r}")


def listener_owned_by(pid: int, port: int) -> bool:
    """Whether the socket listening on ``HOST:port`` belongs to ``pid`` or one of its children.

    Guards against talking to some other server that happens to hold the port. Reads Linux's
    /proc; elsewhere it trusts the port.
    """
    want = f"{socket.htonl(0x7F000001):08X}:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            lines = f.read().splitlines()[1:]
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return True
    sockets = {
        f"socket:[{fields[9]}]"
        for fields in (line.split() for line in lines)
        if fields[1] == want and fields[3] == "0A"
    }
    for owner in (str(pid), *children):
        fd_dir = Path(f"/proc/{owner}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(fd) in sockets:
                    return True
    return False


class Server:
    """One server subprocess on a free loopback port, started on first use.

    A failed start is remembered and re-raised, so a broken implementation fails every test
    quickly instead of being skipped.

    Args:
        impl: ``"beanstalkd"`` or ``"beanrouter"``.
        flags: extra command-line flags, e.g. ``("-z", "100")``.
    """

    def __init__(self, impl: str, flags: Sequence[str] = ()) -> None:
        self.impl = impl
        self.flags = tuple(flags)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._error: ServerStartError | None = None
        self._argv: list[str] = []
        self._ready = False

    def launch(self) -> None:
        """Spawn the process without waiting for it (idempotent); ``start`` finishes the job."""
        if self._proc is not None or self._error is not None:
            return
        self.port = free_port()
        self._argv = server_command(self.impl, self.port, self.flags)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        # closed in stop(); a file, not a pipe, so a chatty server can never block on it
        self._log = tempfile.NamedTemporaryFile(prefix=f"{self.impl}-", suffix=".log")  # noqa: SIM115
        self._proc = subprocess.Popen(
            self._argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._ready = False

    def start(self) -> None:
        """Launch the process if needed and wait until it serves (idempotent)."""
        if self._error is not None:
            raise self._error
        try:
            for attempt in range(3):
                try:
                    self.launch()
                    self._await_ready()
                    return
                except ServerStartError as exc:
                    # Retry only when the free port was taken in the meantime.
                    in_use = "in use" in str(exc).lower()
                    self.stop()
                    if attempt == 2 or not in_use:
                        raise
        except ServerStartError as exc:
            self._error = exc
            raise

    def _await_ready(self) -> None:
        assert self._proc is not None
        if self._ready:
            return
        argv = " ".join(self._argv)
        deadline = time.monotonic() + (5.0 if self.impl == BEANSTALKD else 15.0)
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerStartError(
                    f"{argv} exited with {self._proc.returncode}: {self.output()!r}"
                )
            if not listener_owned_by(self._proc.pid, self.port):
                time.sleep(0.01)
                continue
            try:
                probe = Session(HOST, self.port, timeout=1.0)
            except OSError:
                time.sleep(0.01)
                continue
            # Let the server close the probe itself, so it is gone from current-connections
            # before a case starts (it still counts in total-connections, on every server).
            # A cluster binds its socket before its shards are up and only then accepts the
            # connections waiting in its backlog: it serves once the probe's quit is answered.
            with probe:
                probe.send(b"quit\r\n")
                _, closed = probe.read_available(max(0.0, deadline - time.monotonic()))
            if not closed:
                break
            self._ready = True
            return
        raise ServerStartError(f"{argv} did not accept connections: {self.output()!r}")

    @property
    def pid(self) -> int:
        """The server's process id (starting it if needed)."""
        self.start()
        assert self._proc is not None
        return self._proc.pid

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if self._log is None:
            return ""
        return Path(self._log.name).read_bytes().decode(errors="replace")[-2000:]

    def connect(self, timeout: float | None = None) -> Session:
        """Start the server if needed and open a new client session."""
        self.start()
        return Session(HOST, self.port) if timeout is None else Session(HOST, self.port, timeout)

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server process, starting it first if needed."""
        self.start()
        assert self._proc is not None
        self._proc.send_signal(sig)

    def stop(self) -> None:
        """Kill the process (idempotent)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class ServerPool:
    """Hands out fresh servers, keeping a few spares per implementation already booting.

    A Python server takes a noticeable time to start; booting the next ones while the current
    test runs hides most of it. Only servers without extra flags are pooled.

    Args:
        depth: spares to keep booting per implementation.
    """

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._spares: dict[str, deque[Server]] = {}

    def take(self, impl: str, flags: Sequence[str] = ()) -> Server:
        """A server nobody has used yet; the caller stops it."""
        if flags:
            return Server(impl, flags)
        spares = self._spares.setdefault(impl, deque())
        srv = spares.popleft() if spares else Server(impl)
        while len(spares) < self.depth:
            spare = Server(impl)
            with contextlib.suppress(ServerStartError):  # reported when the spare is used
                spare.launch()
            spares.append(spare)
        return srv

    def close(self) -> None:
        """Stop the spares."""
        for spares in self._spares.values():
            for srv in spares:
                srv.stop()
        self._spares.clear()


# -- cases -----------------------------------------------------------------------------------


class Same(Enum):
    """Marker for a reply that is only compared with the reference, not with a literal."""

    SAME = "SAME"


SAME: Final = Same.SAME
Expect = bytes | Same

StepKind = Literal["io", "closed", "quiet", "sleep", "shutdown", "hangup", "waiting", "signal"]


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted action; build steps with ``io``, ``send``, ``closed``, ``quiet`` etc."""

    kind: StepKind
    conn: str = "a"
    data: bytes = b""
    expect: tuple[Expect, ...] = ()
    seconds: float = 0.0
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Case:
    """A scripted session.

    Args:
        name: test id.
        steps: the script.
        flags: extra server flags; a case with flags always gets a fresh server.
        shared: the case leaves no jobs behind and its replies do not depend on server state,
            so it may run on a server shared with other such cases (with the same flags).
        loose_job_times: blank ``age`` and ``time-left`` in ``stats-job`` replies.
        chunkable: may also run pipelined and bytewise (see ``test_chunking``).
    """

    name: str
    steps: tuple[Step, ...]
    flags: tuple[str, ...] = ()
    shared: bool = False
    loose_job_times: bool = False
    chunkable: bool = True

    @property
    def pipelinable(self) -> bool:
        """True when all input can be sent up front on one connection."""
        return self.chunkable and all(
            s.conn == "a" and s.kind in ("io", "closed") for s in self.steps
        )


def case(
    name: str,
    *steps: Step,
    flags: Sequence[str] = (),
    shared: bool = False,
    loose_job_times: bool = False,
    chunkable: bool = True,
) -> Case:
    """Build a ``Case`` from steps given as positional arguments."""
    return Case(name, tuple(steps), tuple(flags), shared, loose_job_times, chunkable)


def io(data: bytes, *expect: Expect, conn: str = "a", timeout: float | None = None) -> Step:
    """Send ``data`` and read one reply per ``expect`` item (bytes literal or ``SAME``)."""
    return Step("io", conn, data, tuple(expect), timeout=timeout)


def send(data: bytes, replies: int = 1, conn: str = "a", timeout: float | None = None) -> Step:
    """Send ``data`` and read ``replies`` replies, compared with the reference only."""
    return Step("io", conn, data, (SAME,) * replies, timeout=timeout)


def recv(*expect: Expect, conn: str = "a", timeout: float | None = None) -> Step:
    """Read replies without sending (e.g. a blocked reserve being answered)."""
    return Step("io", conn, b"", tuple(expect), timeout=timeout)


def closed(conn: str = "a") -> Step:
    """Expect the server to close ``conn`` with nothing more sent."""
    return Step("closed", conn)


def quiet(seconds: float, conn: str = "a") -> Step:
    """Expect nothing to arrive on ``conn`` for ``seconds``."""
    return Step("quiet", conn, seconds=seconds)


def sleep(seconds: float) -> Step:
    """Pause the script."""
    return Step("sleep", seconds=seconds)


def shutdown(conn: str = "a") -> Step:
    """Half-close ``conn`` (no more data from the client)."""
    return Step("shutdown", conn)


def hangup(conn: str) -> Step:
    """Close ``conn`` from the client side."""
    return Step("hangup", conn)


def drain() -> Step:
    """Send SIGUSR1 to the server (drain mode), then give it a moment to take effect."""
    return Step("signal", "_server", seconds=0.2)


def waiting(count: int, tube: bytes = b"default") -> Step:
    """Poll ``stats-tube`` on a control connection until ``current-waiting`` equals ``count``.

    This makes blocked reserves arrive in a known order. The polls add to ``cmd-stats-tube``
    and the control connection to the connection counters, so cases using it should not
    compare global ``stats``.
    """
    return Step("waiting", "_ctl", tube, (str(count).encode(),))


# -- replies ---------------------------------------------------------------------------------

BAD_FORMAT: Final = b"BAD_FORMAT\r\n"
UNKNOWN_COMMAND: Final = b"UNKNOWN_COMMAND\r\n"
NOT_FOUND: Final = b"NOT_FOUND\r\n"
TIMED_OUT: Final = b"TIMED_OUT\r\n"
DEADLINE_SOON: Final = b"DEADLINE_SOON\r\n"
EXPECTED_CRLF: Final = b"EXPECTED_CRLF\r\n"
JOB_TOO_BIG: Final = b"JOB_TOO_BIG\r\n"
DRAINING: Final = b"DRAINING\r\n"
DELETED: Final = b"DELETED\r\n"
RELEASED: Final = b"RELEASED\r\n"
BURIED: Final = b"BURIED\r\n"
KICKED: Final = b"KICKED\r\n"
TOUCHED: Final = b"TOUCHED\r\n"
PAUSED: Final = b"PAUSED\r\n"
NOT_IGNORED: Final = b"NOT_IGNORED\r\n"
USING_DEFAULT: Final = b"USING default\r\n"


def inserted(job_id: int) -> bytes:
    """``INSERTED <id>\\r\\n``."""
    return b"INSERTED %d\r\n" % job_id


def job(word: str, job_id: int, body: bytes) -> bytes:
    """``RESERVED``/``FOUND`` ``<id> <n>\\r\\n<body>\\r\\n``."""
    return b"%s %d %d\r\n%s\r\n" % (word.encode(), job_id, len(body), body)


def reserved(job_id: int, body: bytes) -> bytes:
    """The exact ``RESERVED`` reply."""
    return job("RESERVED", job_id, body)


def found(job_id: int, body: bytes) -> bytes:
    """The exact ``FOUND`` reply."""
    return job("FOUND", job_id, body)


def put(body: bytes, pri: int = 0, delay: int = 0, ttr: int = 10) -> bytes:
    """A well-formed ``put`` command with its body."""
    return b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body)


#: ``stats`` keys whose values differ between servers and runs; their values become ``X``.
STATS_VOLATILE: Final = frozenset(
    {
        b"pid",
        b"version",
        b"hostname",
        b"rusage-utime",
        b"rusage-stime",
        b"uptime",
        b"id",
        b"os",
        b"platform",
    }
)
JOB_TIMES: Final = frozenset({b"age", b"time-left"})
_OK = re.compile(rb"OK ([0-9]+)\r\n(---\n.*)\r\n", re.S)


def normalise(reply: bytes, loose_job_times: bool = False) -> bytes:
    """Blank the volatile values of a YAML reply and recompute its ``OK <n>`` count."""
    m = _OK.fullmatch(reply)
    if m is None or int(m.group(1)) != len(m.group(2)):
        return reply
    lines = m.group(2).split(b"\n")
    first = lines[1].partition(b":")[0] if len(lines) > 1 else b""
    if first == b"current-jobs-urgent":
        volatile = STATS_VOLATILE
    elif first == b"id" and loose_job_times:
        volatile = JOB_TIMES
    else:
        return reply
    out = []
    for line in lines:
        key, sep, _ = line.partition(b": ")
        out.append(key + b": X" if sep and key in volatile else line)
    body = b"\n".join(out)
    return b"OK %d\r\n%s\r\n" % (len(body), body)


def yaml_reply(lines: Iterable[str]) -> bytes:
    """``OK <n>`` + ``---\\n`` + one line each + ``\\r\\n``."""
    body = ("---\n" + "".join(f"{line}\n" for line in lines)).encode()
    return b"OK %d\r\n%s\r\n" % (len(body), body)


def list_reply(*names: str) -> bytes:
    """The exact ``list-tubes`` / ``list-tubes-watched`` reply for ``names``."""
    return yaml_reply(f"- {n}" for n in names)


def dict_reply(
    keys: Sequence[str], defaults: Mapping[str, object], over: Mapping[str, object]
) -> bytes:
    """A YAML mapping reply with keys in ``keys`` order."""
    unknown = set(over) - set(keys)
    assert not unknown, f"unknown keys {unknown}"
    values = {**defaults, **over}
    return yaml_reply(f"{k}: {values[k]}" for k in keys)


STATS_KEYS: Final = (
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
    "cmd-put",
    "cmd-peek",
    "cmd-peek-ready",
    "cmd-peek-delayed",
    "cmd-peek-buried",
    "cmd-reserve",
    "cmd-reserve-with-timeout",
    "cmd-delete",
    "cmd-release",
    "cmd-use",
    "cmd-watch",
    "cmd-ignore",
    "cmd-bury",
    "cmd-kick",
    "cmd-touch",
    "cmd-stats",
    "cmd-stats-job",
    "cmd-stats-tube",
    "cmd-list-tubes",
    "cmd-list-tube-used",
    "cmd-list-tubes-watched",
    "cmd-pause-tube",
    "job-timeouts",
    "total-jobs",
    "max-job-size",
    "current-tubes",
    "current-connections",
    "current-producers",
    "current-workers",
    "current-waiting",
    "total-connections",
    "pid",
    "version",
    "rusage-utime",
    "rusage-stime",
    "uptime",
    "binlog-oldest-index",
    "binlog-current-index",
    "binlog-records-migrated",
    "binlog-records-written",
    "binlog-max-size",
    "draining",
    "id",
    "hostname",
    "os",
    "platform",
)
STATS_DEFAULTS: Final[Mapping[str, object]] = {
    **dict.fromkeys(STATS_KEYS, 0),
    **dict.fromkeys((k.decode() for k in STATS_VOLATILE), "X"),
    "max-job-size": 65535,
    "current-tubes": 1,
    "current-connections": 1,
    # the harness's readiness probe plus the case's first connection
    "total-connections": 2,
    "binlog-max-size": 10485760,
    "draining": "false",
}
TUBE_KEYS: Final = (
    "name",
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
    "total-jobs",
    "current-using",
    "current-watching",
    "current-waiting",
    "cmd-delete",
    "cmd-pause-tube",
    "pause",
    "pause-time-left",
)
JOB_KEYS: Final = (
    "id",
    "tube",
    "state",
    "pri",
    "age",
    "delay",
    "ttr",
    "time-left",
    "file",
    "reserves",
    "timeouts",
    "releases",
    "buries",
    "kicks",
)
JOB_DEFAULTS: Final[Mapping[str, object]] = {
    **dict.fromkeys(JOB_KEYS, 0),
    "tube": "default",
    "state": "ready",
}


def stats_reply(**over: object) -> bytes:
    """The normalised ``stats`` reply of a fresh server with one client, with overrides.

    Keyword names use ``_`` for ``-``: ``stats_reply(cmd_put=1, current_jobs_ready=1)``.
    """
    return dict_reply(STATS_KEYS, STATS_DEFAULTS, _dashed(over))


def tube_reply(name: str = "default", **over: object) -> bytes:
    """The exact ``stats-tube`` reply for an idle tube, with overrides (``_`` for ``-``)."""
    defaults = {**dict.fromkeys(TUBE_KEYS, 0), "name": name}
    return dict_reply(TUBE_KEYS, defaults, _dashed(over))


def job_reply(**over: object) -> bytes:
    """The exact ``stats-job`` reply, defaults: ready job in ``default``, all counters 0."""
    return dict_reply(JOB_KEYS, JOB_DEFAULTS, _dashed(over))


def _dashed(over: Mapping[str, object]) -> dict[str, object]:
    return {k.replace("_", "-"): v for k, v in over.items()}


# -- job ids of a sharded cluster -----------------------------------------------------------

_ID_REPLY = re.compile(rb"(INSERTED|BURIED|RESERVED|FOUND) ([0-9]+)(?=[ \r])")
_ID_COMMAND = re.compile(
    rb"(delete|release|bury|touch|peek|kick-job|stats-job|reserve-job) ([0-9]+)(?=[ \r])"
)
_PUT_LINE = re.compile(rb"put [0-9]+ [0-9]+ [0-9]+ ([0-9]+)\r\n")
_JOB_STATS_ID = re.compile(rb"---\nid: ([0-9]+)\n")


def reply_ids(reply: bytes) -> list[int]:
    """The job ids a reply names: ``INSERTED``/``BURIED``/``RESERVED``/``FOUND`` and the ``id``
    of a ``stats-job`` body."""
    m = _ID_REPLY.match(reply)
    if m is not None:
        return [int(m.group(2))]
    ok = _OK.fullmatch(reply)
    if ok is not None:
        body = _JOB_STATS_ID.match(ok.group(2))
        if body is not None:
            return [int(body.group(1))]
    return []


class IdMap:
    """Maps a sharded cluster's global job ids to the reference's ids, in order of first
    appearance: the first id the cluster names is the first id beanstalkd named, and so on.

    Replies are rewritten to the reference's ids (``incoming``) and commands the script sends
    with a reference id are sent with the cluster's (``outgoing``), so a case scripted against
    beanstalkd's ids runs unchanged. An id the cluster names beyond the reference's is left
    as it is (the transcripts then differ).

    Args:
        reference: the reference transcript of the case (or of every life of a restart case).
    """

    def __init__(self, reference: Iterable[Entry]) -> None:
        order: list[int] = []
        for entry in reference:
            for reply in entry.replies:
                order.extend(i for i in reply_ids(reply) if i not in order)
        self._order = order
        self.to_ref: dict[int, int] = {}
        self.to_impl: dict[int, int] = {}
        self._pending: dict[str, bytes] = {}
        self._body: dict[str, int] = {}

    def _ref(self, gid: int) -> int:
        if gid not in self.to_ref:
            n = len(self.to_ref)
            ref = self._order[n] if n < len(self._order) else gid
            self.to_ref[gid] = ref
            self.to_impl.setdefault(ref, gid)
        return self.to_ref[gid]

    def incoming(self, reply: bytes) -> bytes:
        """``reply`` with the cluster's job id replaced by the reference's."""
        m = _ID_REPLY.match(reply)
        if m is not None:
            ref = self._ref(int(m.group(2)))
            return b"%s %d%s" % (m.group(1), ref, reply[m.end() :])
        ok = _OK.fullmatch(reply)
        if ok is None:
            return reply
        stats = _JOB_STATS_ID.match(ok.group(2))
        if stats is None:
            return reply
        ref = self._ref(int(stats.group(1)))
        body = b"---\nid: %d\n%s" % (ref, ok.group(2)[stats.end() :])
        return b"OK %d\r\n%s\r\n" % (len(body), body)

    def outgoing(self, conn: str, data: bytes) -> bytes:
        """``data`` as sent on ``conn``, with job ids of job commands replaced by the cluster's.

        Put bodies are skipped (a body may look like commands), also across sends. A line split
        across sends goes out as it comes, untranslated."""
        out: list[bytes] = []
        sent = self._pending.pop(conn, b"")  # the start of a line, sent already
        buf = sent + data
        pos = 0
        partial = bool(sent)
        skip = self._body.pop(conn, 0)
        while pos < len(buf):
            if skip:
                take = min(skip, len(buf) - pos)
                out.append(buf[pos : pos + take])
                pos += take
                skip -= take
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                self._pending[conn] = buf[pos:]
                out.append(buf[pos:])
                break
            line = buf[pos : end + 2]
            pos = end + 2
            put_line = _PUT_LINE.fullmatch(line)
            cmd = _ID_COMMAND.match(line)
            if put_line is not None:
                skip = int(put_line.group(1)) + 2
            elif cmd is not None and not partial and int(cmd.group(2)) in self.to_impl:
                gid = self.to_impl[int(cmd.group(2))]
                line = b"%s %d%s" % (cmd.group(1), gid, line[cmd.end() :])
            partial = False
            out.append(line)
        if skip:
            self._body[conn] = skip
        joined = b"".join(out)
        return joined[len(sent) :]


# -- running ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """What one step produced."""

    index: int
    conn: str
    sent: bytes
    replies: tuple[bytes, ...]


@dataclass(slots=True)
class Run:
    """Executes one case against one server."""

    server: Server
    case: Case
    mode: Mode = "steps"
    ids: IdMap | None = None
    """Set for a sharded cluster: its job ids are mapped to the reference's (``IdMap``)."""
    conns: dict[str, Session] = field(default_factory=dict)

    def session(self, name: str) -> Session:
        if name not in self.conns:
            self.conns[name] = self.server.connect()
        return self.conns[name]

    def close(self) -> None:
        for s in self.conns.values():
            s.close()
        self.conns.clear()

    def execute(self) -> list[Entry]:
        try:
            if self.mode == "pipelined":
                return self._pipelined()
            out: list[Entry] = []
            for i, step in enumerate(self.case.steps):
                entry = self._step(i, step)
                out.append(entry)
                last = entry.replies[-1] if entry.replies else b""
                if step.kind == "io" and last.endswith((TIMEOUT, CLOSED)):
                    break  # the rest of the script would only add noise
            return out
        finally:
            self.close()

    def _pipelined(self) -> list[Entry]:
        assert self.case.pipelinable, f"{self.case.name} cannot be pipelined"
        s = self.session("a")
        data = b"".join(step.data for step in self.case.steps)
        if self.ids is not None:  # sent before any reply: only ids learned before translate
            data = self.ids.outgoing("a", data)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.send(data)
        out = []
        for i, step in enumerate(self.case.steps):
            if step.kind == "io":
                out.append(Entry(i, "a", step.data, self._replies(s, step)))
                if out[-1].replies and out[-1].replies[-1].endswith((TIMEOUT, CLOSED)):
                    break
            else:
                out.append(Entry(i, "a", b"", self._closed(s)))
        return out

    def _step(self, i: int, step: Step) -> Entry:
        replies: tuple[bytes, ...] = ()
        if step.kind == "io":
            s = self.session(step.conn)
            data = step.data if self.ids is None else self.ids.outgoing(step.conn, step.data)
            try:
                if self.mode == "bytewise":
                    s.send_chunked(data, size=1)
                elif data:
                    s.send(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server hung up; the replies below show what it said before
            replies = self._replies(s, step)
        elif step.kind == "closed":
            replies = self._closed(self.session(step.conn))
        elif step.kind == "quiet":
            data, eof = self.session(step.conn).read_available(step.seconds)
            replies = (data, CLOSED) if eof else (data,)
        elif step.kind == "sleep":
            time.sleep(step.seconds)
        elif step.kind == "shutdown":
            self.session(step.conn).shutdown_write()
        elif step.kind == "hangup":
            self.session(step.conn).close()
            # give the server a moment to notice, so later steps see the effect
            time.sleep(0.1)
        elif step.kind == "signal":
            self.server.send_signal(signal.SIGUSR1)
            time.sleep(step.seconds)
        elif step.kind == "waiting":
            replies = (self._wait_for_waiting(step.data, step.expect[0]),)
        return Entry(i, step.conn, step.data, replies)

    def _replies(self, s: Session, step: Step) -> tuple[bytes, ...]:
        out = []
        for _ in step.expect:
            try:
                reply = s.reply(step.timeout)
                if self.ids is not None:
                    reply = self.ids.incoming(reply)
                out.append(normalise(reply, self.case.loose_job_times))
            except ReplyTimeout as exc:
                out.append(exc.partial + TIMEOUT)
                break
            except PeerClosed as exc:
                out.append(exc.partial + CLOSED)
                break
        return tuple(out)

    @staticmethod
    def _closed(s: Session) -> tuple[bytes, ...]:
        data, eof = s.read_available(2.0)
        return (data + (CLOSED if eof else OPEN),)

    def _wait_for_waiting(self, tube: bytes, count: Expect) -> bytes:
        assert isinstance(count, bytes)
        ctl = self.session("_ctl")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            ctl.send(b"stats-tube " + tube + b"\r\n")
            try:
                body = ctl.reply()
            except (ReplyTimeout, PeerClosed) as exc:
                return b"<stats-tube failed: %s>" % str(exc).encode()
            if b"\ncurrent-waiting: " + count + b"\n" in body:
                return count
            time.sleep(0.01)
        return b"<never reached current-waiting " + count + b">"


def run_case(
    server: Server, c: Case, mode: Mode = "steps", ids: IdMap | None = None
) -> list[Entry]:
    """Run ``c`` against ``server`` and return its transcript (job ids mapped by ``ids``)."""
    return Run(server, c, mode, ids).execute()


def literal_mismatches(c: Case, transcript: Sequence[Entry]) -> list[str]:
    """Describe every step whose replies differ from its literal expectations."""
    problems = []
    by_index = {e.index: e for e in transcript}
    for i, step in enumerate(c.steps):
        if step.kind not in ("io", "closed", "waiting") or all(x is SAME for x in step.expect):
            continue
        entry = by_index.get(i)
        got = entry.replies if entry else ("<step not reached>",)
        if step.kind == "closed":
            if got != (CLOSED,):
                problems.append(f"step {i} [{step.conn}]: expected close, got {got!r}")
            continue
        for k, want in enumerate(step.expect):
            have = got[k] if k < len(got) else b"<missing>"
            if want is not SAME and have != want:
                problems.append(
                    f"step {i} [{step.conn}] sent {step.data[:80]!r}: reply {k}:\n"
                    f"    want {want!r}\n    got  {have!r}"
                )
    return problems


def describe_diff(reference: Sequence[Entry], actual: Sequence[Entry]) -> str:
    """A readable account of where two transcripts part ways."""
    lines = []
    for k in range(max(len(reference), len(actual))):
        ref = reference[k] if k < len(reference) else None
        act = actual[k] if k < len(actual) else None
        if ref == act:
            continue
        some = ref or act
        assert some is not None
        lines.append(f"step {some.index} [{some.conn}] sent {some.sent[:80]!r}")
        lines.append(f"    beanstalkd: {ref.replies if ref else '<not reached>'!r}")
        lines.append(f"    this impl : {act.replies if act else '<not reached>'!r}")
    return "\n".join(lines)


class Conformance:
    """Runs cases on one implementation and compares them with the real beanstalkd.

    Args:
        impl: the implementation under test.
        pool: where fresh servers come from.
        shared: session-wide servers per implementation and flags, for ``Case.shared`` cases.
        cache: reference (step-by-step) transcripts by case, shared across tests.
    """

    def __init__(
        self,
        impl: str,
        pool: ServerPool,
        shared: dict[tuple[str, tuple[str, ...]], Server],
        cache: dict[Case, list[Entry]],
    ) -> None:
        self.impl = impl
        self._pool = pool
        self._shared = shared
        self._cache = cache
        self._fresh: list[Server] = []

    def server(self, impl: str, c: Case) -> Server:
        """The shared server of ``impl`` for shared cases, else a fresh one."""
        if c.shared:
            key = (impl, c.flags)
            if key not in self._shared:
                self._shared[key] = Server(impl, c.flags)
            return self._shared[key]
        srv = self._pool.take(impl, c.flags)
        self._fresh.append(srv)
        return srv

    def reference(self, c: Case) -> list[Entry]:
        """The transcript of ``c`` on the real beanstalkd, step by step."""
        if c not in self._cache:
            srv = self.server(BEANSTALKD, c)
            try:
                self._cache[c] = run_case(srv, c)
            finally:
                if not c.shared:
                    srv.stop()
            problems = literal_mismatches(c, self._cache[c])
            if problems:
                raise AssertionError(
                    f"the real beanstalkd does not match the literal expectations of {c.name}:\n"
                    + "\n".join(problems)
                )
        return self._cache[c]

    def check(self, c: Case, mode: Mode = "steps") -> None:
        """Run ``c`` on the implementation under test and assert it matches beanstalkd.

        Args:
            c: the case.
            mode: ``steps`` sends each step and reads its replies; ``pipelined`` sends all input
                at once; ``bytewise`` sends every byte in its own segment.
        """
        skip_if_sharded(self.impl, c.name)
        if self.impl == BEANSTALKD and mode == "steps" and c not in self._cache:
            expected = self.reference(c)
            actual = expected
        else:
            expected = self.reference(c)
            ids = IdMap(expected) if self.impl in SHARDED else None
            actual = run_case(self.server(self.impl, c), c, mode, ids)
        problems = literal_mismatches(c, actual)
        if actual != expected:
            problems.insert(
                0, "transcript differs from beanstalkd:\n" + describe_diff(expected, actual)
            )
        if problems:
            raise AssertionError(f"{self.impl} {c.name} ({mode}):\n" + "\n".join(problems))

    def close(self) -> None:
        """Stop the fresh servers this test started."""
        for srv in self._fresh:
            srv.stop()
        self._fresh.clear()
