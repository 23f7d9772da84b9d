"""beanstalkd-compatible flag parsing of ``beanrouter server`` (pure)."""

from __future__ import annotations

import pytest

from beanrouter.server.options import (
    DEFAULT_ADDR,
    DEFAULT_PORT,
    ServerOptions,
    UsageExit,
    parse_args,
    usage_text,
)


def test_defaults_bind_loopback() -> None:
    opts = parse_args([])
    assert (opts.addr, opts.port) == (DEFAULT_ADDR, DEFAULT_PORT) == ("127.0.0.1", 11300)
    assert opts.max_job_size == 65535
    assert opts.binlog_dir is None and opts.fsync_ms == 50


@pytest.mark.parametrize(
    "argv",
    [
        ["-l", "0.0.0.0", "-p", "4444"],
        ["-l0.0.0.0", "-p4444"],
    ],
)
def test_address_and_port_forms(argv: list[str]) -> None:
    opts = parse_args(argv)
    assert (opts.addr, opts.port) == ("0.0.0.0", 4444)


def test_unix_socket_address() -> None:
    assert parse_args(["-l", "unix:/tmp/b.sock"]).addr == "unix:/tmp/b.sock"


def test_binlog_flags() -> None:
    opts = parse_args(["-b", "/tmp/x", "-f", "0", "-s", "4096"])
    assert (opts.binlog_dir, opts.fsync_ms, opts.binlog_file_size) == ("/tmp/x", 0, 4096)
    assert parse_args(["-F"]).fsync_ms is None
    assert parse_args(["-F", "-f", "10"]).fsync_ms == 10


def test_salvage_is_a_long_option_of_our_own() -> None:
    assert parse_args([]).salvage is False
    opts = parse_args(["-b", "/tmp/x", "--salvage", "-f0"])
    assert (opts.salvage, opts.binlog_dir, opts.fsync_ms) == (True, "/tmp/x", 0)
    assert "--salvage" in usage_text("beanstalkd")
    with pytest.raises(UsageExit) as info:
        parse_args(["--salvage=yes"])
    assert info.value.code == 5


def test_grouped_flags_and_verbosity() -> None:
    opts = parse_args(["-VV", "-Fz", "100"])
    assert opts.verbose == 2 and opts.fsync_ms is None and opts.max_job_size == 100


def test_job_size_is_clamped_with_a_warning() -> None:
    opts = parse_args(["-z", "2000000000"])
    assert opts.max_job_size == 1073741824
    assert opts.warnings == ("beanstalkd: maximum job size was set to 1073741824",)


def test_version_flag() -> None:
    with pytest.raises(UsageExit) as info:
        parse_args(["-v"])
    assert info.value.code == 0 and info.value.stdout == "beanstalkd 1.12\n"


def test_help_goes_to_stderr_with_status_0() -> None:
    with pytest.raises(UsageExit) as info:
        parse_args(["-h"], progname="beanstalkd")
    assert info.value.code == 0
    assert info.value.stderr.startswith("Use: beanstalkd [OPTIONS]\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-x"], "unknown flag: -x"),
        (["stray"], "unknown argument: stray"),
        (["-p"], "flag requires an argument: -p"),
        (["-z", "abc"], "invalid size: abc"),
        (["--help"], "unknown flag: --help"),
        (["-Vx"], "unknown flag: Vx"),
        (["-xV"], "unknown flag: -xV"),
    ],
)
def test_errors_exit_5_with_usage(argv: list[str], message: str) -> None:
    with pytest.raises(UsageExit) as info:
        parse_args(argv, progname="beanstalkd")
    assert info.value.code == 5
    assert info.value.stderr.startswith(f"beanstalkd: {message}\n")
    assert usage_text("beanstalkd") in info.value.stderr


def test_removed_flags_warn_only() -> None:
    opts = parse_args(["-c"])
    assert isinstance(opts, ServerOptions)
    assert opts.warnings == ("beanstalkd: -c flag was removed. binlog is always compacted.",)


def test_port_text_is_kept_for_getaddrinfo() -> None:
    """As beanstalkd: a service name works, anything else fails when binding (exit 111)."""
    assert parse_args(["-p", "65535"]).port == 65535
    assert parse_args(["-p", "http"]).port == "http"
    assert parse_args(["-p", "99999"]).port == "99999"


def test_version_flag_still_prints_earlier_warnings() -> None:
    with pytest.raises(UsageExit) as info:
        parse_args(["-c", "-v"], progname="beanstalkd")
    assert (info.value.code, info.value.stdout) == (0, "beanstalkd 1.12\n")
    assert info.value.stderr == "beanstalkd: -c flag was removed. binlog is always compacted.\n"
