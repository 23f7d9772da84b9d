"""``beanrouter server`` is a drop-in for ``beanstalkd``: every flag's output and exit status are
compared with the real beanstalkd's (``$BEANSTALKD_BIN`` or /usr/bin/beanstalkd).

What may differ is named here: the program name, beanstalkd's ``file.c:LINE in function:``
prefixes, the usage text itself (our default address is 127.0.0.1 and we have ``--salvage``),
descriptor numbers in ``-V`` output, and the wording around a listen failure (the system's reason
is the same).
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conformance.harness import beanstalkd_binary
from tests.ports import free_port

pytestmark = pytest.mark.reference

OURS = [sys.executable, "-m", "beanrouter", "server"]
C_PREFIX = re.compile(r"\b\w+\.c:\d+ in \w+: ")


def argv(impl: str, args: list[str]) -> list[str]:
    return [beanstalkd_binary(), *args] if impl == "beanstalkd" else [*OURS, *args]


def run(impl: str, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv(impl, args),
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
        **kw,
    )


def normal(text: str, impl: str) -> str:
    """``text`` with the program name, C source prefixes and the usage text taken out."""
    name = beanstalkd_binary() if impl == "beanstalkd" else "beanrouter server"
    text = C_PREFIX.sub("", text.replace(name, "PROG"))
    head, usage, _ = text.partition("Use: PROG [OPTIONS]\n")
    return head + ("<usage>" if usage else "")


def outcome(impl: str, args: list[str]) -> tuple[int, str, str]:
    done = run(impl, args)
    return done.returncode, normal(done.stdout, impl), normal(done.stderr, impl)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--foo"],
        ["--"],
        ["-h"],
        ["-v"],
        ["-x"],
        ["-Vx"],
        ["-xV"],
        ["-"],
        ["stray"],
        ["-p"],
        ["-b"],
        ["-z", "abc"],
        ["-s", "abc"],
        ["-f", "abc"],
        ["-z", "2000000000", "-v"],
        ["-c", "-v"],
        ["-n", "-v"],
        ["-c", "-x"],
        ["-u", "no-such-user-here", "-l", "127.0.0.1", "-p", "0"],
    ],
    ids=" ".join,
)
def test_flag_output_and_status_match_beanstalkd(args: list[str]) -> None:
    assert outcome("beanrouter", args) == outcome("beanstalkd", args)


def test_missing_binlog_dir_exits_10_with_our_own_message() -> None:
    """Same status; beanstalkd says ``open: No such file or directory``, we say what to do."""
    args = ["-b", "/nonexistent/dir", "-l", "127.0.0.1", "-p", "0"]
    ours, theirs = run("beanrouter", args), run("beanstalkd", args)
    assert ours.returncode == theirs.returncode == 10
    assert "failed to lock wal dir /nonexistent/dir" in theirs.stderr
    assert "/nonexistent/dir: not a directory (create it first)" in ours.stderr


def test_usage_names_the_command_it_was_run_as() -> None:
    done = run("beanrouter", ["-h"])
    assert done.stderr.startswith("Use: beanrouter server [OPTIONS]\n")
    script = Path(sys.executable).with_name("beanrouter-server")
    if script.exists():
        done = subprocess.run([str(script), "-h"], capture_output=True, text=True, timeout=20)
        assert done.stderr.startswith("Use: beanrouter-server [OPTIONS]\n")


def test_size_help_matches_what_a_file_gets() -> None:
    """The usage says ``-s`` is rounded up to a multiple of 4096; tests/binlog checks files are."""
    assert "rounded up to a multiple of 4096" in run("beanrouter", ["-h"]).stderr


@pytest.mark.parametrize("port", ["abc", "-1", "0x10"])
def test_port_that_is_no_service_exits_111(port: str) -> None:
    ours = run("beanrouter", ["-l", "127.0.0.1", "-p", port])
    theirs = run("beanstalkd", ["-l", "127.0.0.1", "-p", port])
    assert ours.returncode == theirs.returncode == 111
    assert "Servname not supported" in ours.stderr and "Servname not supported" in theirs.stderr


def test_address_that_does_not_resolve_exits_111_like_beanstalkd() -> None:
    """``-l a..b``: the resolver's error, as beanstalkd reports it (Python's idna codec used to
    refuse the name before the resolver saw it, with a traceback and status 1)."""
    ours = run("beanrouter", ["-l", "a..b", "-p", "0"])
    theirs = run("beanstalkd", ["-l", "a..b", "-p", "0"])
    assert ours.returncode == theirs.returncode == 111
    reason = theirs.stderr.splitlines()[0].rpartition(": ")[2]  # "Name or service not known"
    assert ours.stderr.strip() == f"beanrouter server: cannot listen on a..b:0: {reason}"


def test_port_in_use_exits_111() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        ours = run("beanrouter", ["-l", "127.0.0.1", "-p", port])
        theirs = run("beanstalkd", ["-l", "127.0.0.1", "-p", port])
    assert ours.returncode == theirs.returncode == 111
    assert "Address already in use" in theirs.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in ours.stderr


def wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("never listened")


def served(impl: str, args: list[str], session: bytes) -> tuple[str, Path]:
    """Start ``impl`` with ``args`` on a free port, probe it, run ``session`` on a second
    connection, stop it with SIGTERM; returns its stdout and its /proc status while running."""
    port = free_port()
    full = [*args, "-l", "127.0.0.1", "-p", str(port)]
    with subprocess.Popen(argv(impl, full), stdout=subprocess.PIPE, text=True) as proc:
        try:
            wait_listening(port, proc)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(session)
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
            time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
    return out, Path(status)


def test_verbose_prints_pid_bind_accept_close_like_beanstalkd() -> None:
    outputs = {}
    for impl in ("beanstalkd", "beanrouter"):
        out, _ = served(impl, ["-V"], b"list-tube-used\r\n")
        outputs[impl] = re.sub(r"\d+", "N", out.replace("127.0.0.1", "ADDR")).splitlines()
    # pid and bind first, then the probe's and the session's accept and close (a probe's close
    # and the next accept may come in either order, on both servers)
    assert outputs["beanstalkd"][:2] == outputs["beanrouter"][:2] == ["pid N", "bind N ADDR:N"]
    for lines in outputs.values():
        assert sorted(lines[2:]) == ["accept N", "accept N", "close N", "close N"], lines


def free_low_port() -> int:
    for port in range(1023, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024")


def status_ids(status: str) -> tuple[str, str]:
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M)
    gid = re.search(r"^Gid:\s+(\d+)", status, re.M)
    assert uid and gid
    return uid.group(1), gid.group(1)


@pytest.mark.skipif(os.geteuid() != 0, reason="-u needs root to change user")
def test_user_flag_drops_privileges_after_binding() -> None:
    nobody = pwd.getpwnam("nobody")
    want = (str(nobody.pw_uid), str(nobody.pw_gid))
    for impl in ("beanstalkd", "beanrouter"):
        # a port below 1024: binding needs root, so this only works if -u comes after bind
        port = free_low_port()
        full = argv(impl, ["-u", "nobody", "-l", "127.0.0.1", "-p", str(port)])
        with subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
            try:
                wait_listening(port, proc)  # type: ignore[arg-type]
                # It listens first and changes user just after (as beanstalkd): wait for that.
                deadline = time.monotonic() + 10
                status = Path(f"/proc/{proc.pid}/status").read_text()
                while status_ids(status) != want and time.monotonic() < deadline:
                    time.sleep(0.01)
                    status = Path(f"/proc/{proc.pid}/status").read_text()
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        assert status_ids(status) == want, impl
        groups = re.search(r"^Groups:\s*(.*)$", status, re.M)
        if impl == "beanrouter":  # beanstalkd keeps root's supplementary groups
            assert groups is not None and "0" not in groups.group(1).split()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as another user")
def test_user_flag_refused_exits_34_like_beanstalkd() -> None:
    """Started as nobody, ``-u root`` cannot setgid: both exit 34 with the same message."""
    nobody = pwd.getpwnam("nobody")
    ids = f"{nobody.pw_gid}, {nobody.pw_uid}"
    args = ["-u", "root", "-l", "127.0.0.1", "-p", "0"]

    def as_nobody() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    theirs = run("beanstalkd", args, preexec_fn=as_nobody)
    # Our interpreter and checkout may not be readable by nobody: import first, then drop.
    code = (
        "import encodings.idna, os, socket, sys, asyncio, pwd;"
        "from beanrouter.server.cli import main;"
        "import beanrouter.server.app, beanrouter.server.engine, beanrouter.server.binlog;"
        "import beanrouter.server.commit;"
        f"gid, uid = {ids}; os.setgid(gid); os.setuid(uid);"
        f"main({args!r}, progname={beanstalkd_binary()!r})"
    )
    ours = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert (ours.returncode, C_PREFIX.sub("", ours.stderr)) == (
        theirs.returncode,
        C_PREFIX.sub("", theirs.stderr),
    )
    assert theirs.returncode == 34


def test_binlog_file_size_is_rounded_up_like_beanstalkd(tmp_path: Path) -> None:
    sizes = {}
    for impl in ("beanstalkd", "beanrouter"):
        d = tmp_path / impl
        d.mkdir()
        port = free_port()
        full = argv(impl, ["-b", str(d), "-s", "5000", "-l", "127.0.0.1", "-p", str(port)])
        with subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
            try:
                wait_listening(port, proc)  # type: ignore[arg-type]
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"stats\r\n")
                    time.sleep(0.2)
                    stats = s.recv(65536)
                # while running: at an orderly exit we trim the current file, beanstalkd not
                names = "binlog.*" if impl == "beanstalkd" else "beanrouter-binlog.*"
                sizes[impl] = sorted(p.stat().st_size for p in d.glob(names))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        assert b"\nbinlog-max-size: 5000\n" in stats, impl
    assert sizes["beanrouter"] == sizes["beanstalkd"] == [8192]
