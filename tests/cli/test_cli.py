"""The command line: ``beanrouter`` (click group) and ``beanrouter server`` (beanstalkd's flags)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import beanrouter
from beanrouter.cli import main
from tests.ports import free_port

PY = [sys.executable, "-m", "beanrouter"]


def run(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PY, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def talk(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    sock.settimeout(5.0)
    return sock.recv(65536)


def wait_connect(addr: str | tuple[str, int], proc: subprocess.Popen[bytes]) -> socket.socket:
    deadline = time.monotonic() + 15.0
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.connect(addr)
            return sock
        except OSError:
            sock.close()
            time.sleep(0.02)
    raise AssertionError(f"server never listened on {addr}")


def test_help_lists_commands() -> None:
    done = run("--help")
    assert done.returncode == 0
    assert "server" in done.stdout


@pytest.mark.parametrize("command", ["proxy", "check-config", "cluster"])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_of_ours_takes_help(command: str, flag: str) -> None:
    """Both help flags print the command's usage and exit 0 (``server`` alone keeps beanstalkd's
    parser, where ``--help`` is an unknown flag, exit 5)."""
    done = run(command, flag)
    assert done.returncode == 0, done.stderr
    assert f"beanrouter {command} [OPTIONS]" in done.stdout + done.stderr


def test_server_help_is_beanstalkds() -> None:
    assert run("server", "-h").returncode == 0
    done = run("server", "--help")
    assert done.returncode == 5 and "unknown flag: --help" in done.stderr


def test_version_option() -> None:
    done = run("--version")
    assert done.returncode == 0 and beanrouter.__version__ in done.stdout


def test_server_version_flag_like_beanstalkd() -> None:
    done = run("server", "-v")
    assert (done.returncode, done.stdout) == (0, "beanstalkd 1.12\n")


def test_server_bad_flag_exits_5_with_usage() -> None:
    done = run("server", "-x")
    assert done.returncode == 5
    assert "unknown flag: -x" in done.stderr and "Options:" in done.stderr


def test_server_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("server", "-p", str(port))
    assert done.returncode == 111  # beanstalkd's
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_main_dispatches_server_without_click(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["server", "-v"])
    assert info.value.code == 0
    assert capsys.readouterr().out == "beanstalkd 1.12\n"


def test_unix_socket_drain_and_sigterm(tmp_path: Path) -> None:
    path = str(tmp_path / "b.sock")
    with subprocess.Popen([*PY, "server", "-l", f"unix:{path}"]) as proc:
        try:
            sock = wait_connect(path, proc)
            assert talk(sock, b"put 0 0 10 1\r\nx\r\n") == b"INSERTED 1\r\n"
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.2)
            assert talk(sock, b"put 0 0 10 1\r\ny\r\n") == b"DRAINING\r\n"
            sock.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_socket_activation_uses_inherited_listener() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    code = (
        "import os, sys;"
        f"os.dup2({listener.fileno()}, 3);"
        "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid());"
        "sys.argv = ['beanrouter-server', '-p', '1'];"  # -p is ignored under activation
        "from beanrouter.server.cli import main; main()"
    )
    with subprocess.Popen([sys.executable, "-c", code], pass_fds=(listener.fileno(),)) as proc:
        listener.close()
        try:
            sock = wait_connect(("127.0.0.1", port), proc)
            assert talk(sock, b"list-tube-used\r\n") == b"USING default\r\n"
            sock.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_server_binds_loopback_by_default() -> None:
    port = free_port()
    with subprocess.Popen([*PY, "server", "-p", str(port)]) as proc:
        try:
            sock = wait_connect(("127.0.0.1", port), proc)
            assert sock.getpeername()[0] == "127.0.0.1"
            sock.close()
            listeners = Path("/proc/net/tcp").read_text()
            assert f"0100007F:{port:04X}" in listeners
            assert f"00000000:{port:04X}" not in listeners
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_options_defaults_agree_with_the_codec() -> None:
    from beanrouter import protocol
    from beanrouter.server import options

    assert options.DEFAULT_MAX_JOB_SIZE == protocol.DEFAULT_MAX_JOB_SIZE
    assert options.MAX_JOB_SIZE_LIMIT == protocol.MAX_JOB_SIZE_LIMIT
    assert os.environ.get("LISTEN_FDS") is None


def test_check_config_prints_placement_and_names_bad_lines(tmp_path: Path) -> None:
    good = tmp_path / "cluster.yaml"
    good.write_text("servers:\n  - 127.0.0.1:11301:1 one\n  - 127.0.0.1:11302:1 two\n")
    done = run("check-config", str(good), "--tube", "emails")
    assert done.returncode == 0, done.stderr
    assert "one" in done.stdout and "two" in done.stdout and "emails" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers:\n  - 127.0.0.1:11301 one\n  - 127.0.0.1:notaport two\n")
    done = run("check-config", str(bad))
    assert done.returncode == 1
    assert f"{bad}:3" in done.stderr
