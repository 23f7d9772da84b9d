"""Configuration parsing: both server forms, every field, and errors that name line and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from beanrouter.core import ids
from beanrouter.router import (
    ConfigError,
    InvalidArgument,
    Router,
    check_config,
    load_config,
    parse_config,
    placement_summary,
)
from beanrouter.router.config import config_from_servers, parse_server_line
from beanrouter.router.summary import check_tube_names


def test_full_config() -> None:
    config = parse_config(
        """\
# a cluster
servers:
  - 127.0.0.1:11301:1 alpha id=0
  - 127.0.0.1:11302:2 beta
  - {host: 10.0.0.3, port: 11300, weight: 3, name: gamma, id: 7}
  - {address: "[::1]:11304"}
hash: md5
distribution: ketama
failover: 2
connect_timeout: 0.5
timeout: 2
server_failure_limit: 3
server_retry_timeout: 0.25
server_retry_timeout_max: 10
server_retry_jitter: 0.1
""",
        "c.yaml",
    )
    a, b, c, d = config.servers
    assert (a.name, a.host, a.port, a.weight, a.id, a.id_derived, a.line) == (
        "alpha", "127.0.0.1", 11301, 1, 0, False, 3,
    )  # fmt: skip
    assert (b.weight, b.id, b.id_derived) == (2, ids.derive_shard_id("beta"), True)
    assert (c.host, c.port, c.weight, c.id, c.line) == ("10.0.0.3", 11300, 3, 7, 5)
    assert (d.host, d.port, d.name, d.address) == ("::1", 11304, "[::1]:11304", "[::1]:11304")
    assert config.failover == 2
    assert config.connect_timeout == 0.5 and config.timeout == 2.0
    assert config.server_failure_limit == 3
    assert config.server_retry_timeout == 0.25 and config.server_retry_timeout_max == 10
    assert config.server_retry_jitter == 0.1


def test_defaults() -> None:
    config = parse_config("servers: [127.0.0.1:11300]")
    (s,) = config.servers
    assert (s.name, s.weight, s.id) == ("127.0.0.1:11300", 1, ids.derive_shard_id(s.name))
    assert config.failover == 1 and config.timeout == 5.0 and config.connect_timeout == 1.0
    # a shard back from a long outage is probed again within ~5 s (x 1 + jitter), not 30
    assert (config.server_retry_timeout, config.server_retry_timeout_max) == (0.5, 5.0)
    assert config_from_servers(["127.0.0.1:11300"]).server_retry_timeout_max == 5.0


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    return info.value


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("", None, None, "servers"),
        ("failover: 1\n", 1, "servers", "required"),
        ("servers: []\n", 1, "servers", "non-empty"),
        ("servers:\n  - 127.0.0.1\n", 2, "servers[0].address", "host:port"),
        ("servers:\n  - a:1\n  - a:99999 b\n", 3, "servers[1].port", "1..65535"),
        ("servers:\n  - a:1:0 x\n", 2, "servers[0].weight", "positive"),
        ("servers:\n  - a:1:x x\n", 2, "servers[0].weight", "positive"),
        ("servers:\n  - a:1 x id=40000\n", 2, "servers[0].id", "0..32767"),
        ("servers:\n  - a:1 x y\n", 2, "servers[0]", "unexpected word"),
        ("servers:\n  - a:1 x\n  - b:2 x\n", 3, "servers[1].name", "already used"),
        ("servers:\n  - a:1 x\n  - a:1 y\n", 3, "servers[1].address", "already used"),
        ("servers:\n  - a:1 x id=5\n  - b:1 y id=5\n", 3, "servers[1].id", "collides"),
        ("servers:\n  - {host: a, port: 1, wieght: 2}\n", 2, "servers[0].wieght", "unknown"),
        ("servers:\n  - {host: a}\n", 2, "servers[0]", "host and port"),
        ("servers:\n  - {address: a:1, port: 2}\n", 2, "servers[0]", "either"),
        ("servers:\n  - {host: a, port: 1, weight: -2}\n", 2, "servers[0].weight", ">= 1"),
        ("servers:\n  - {host: a, port: 1, id: true}\n", 2, "servers[0].id", "integer"),
        ("servers:\n  - [a, b]\n", 2, "servers[0]", "server line or a mapping"),
        ("servers:\n  - 12\n", 2, "servers[0]", "server line"),
        ("servers: [a:1]\nfailover: -1\n", 2, "failover", ">= 0"),
        ("servers: [a:1]\nfailover: one\n", 2, "failover", "integer"),
        ("servers: [a:1]\ntimeout: 0\n", 2, "timeout", "positive"),
        ("servers: [a:1]\nconnect_timeout: fast\n", 2, "connect_timeout", "seconds"),
        ("servers: [a:1]\nserver_retry_jitter: 1.5\n", 2, "server_retry_jitter", "[0, 1)"),
        ("servers: [a:1]\nserver_failure_limit: 0\n", 2, "server_failure_limit", ">= 1"),
        ("servers: [a:1]\nhash: fnv1a_64\n", 2, "hash", "only 'md5'"),
        ("servers: [a:1]\ndistribution: modula\n", 2, "distribution", "only 'ketama'"),
        (
            "servers: [a:1]\nserver_retry_timeout: 5\nserver_retry_timeout_max: 1\n",
            3,
            "server_retry_timeout_max",
            ">=",
        ),
        ("servers: [a:1]\nservres: 1\n", 2, "servres", "unknown field"),
        ("servers: [a:1]\nfailover: 1\nfailover: 2\n", 3, "failover", "twice"),
        ("servers: [a:1\n", 1, None, "not valid YAML"),
        ("- a:1\n", 1, None, "mapping"),
    ],
)
def test_errors_name_line_and_field(
    text: str, line: int | None, field: str | None, words: str
) -> None:
    err = _error(text)
    assert err.line == line
    assert err.field == field
    assert words in str(err)
    assert str(err).startswith("c.yaml")


def test_derived_id_collision_is_reported() -> None:
    seen: dict[int, str] = {}
    for i in range(100_000):
        name = f"s{i}"
        sid = ids.derive_shard_id(name)
        if sid in seen:
            break
        seen[sid] = name
    err = _error(f"servers:\n  - a:1 {seen[sid]}\n  - b:1 {name}\n")
    assert err.field == "servers[1].id" and err.line == 3
    assert "explicit id" in str(err)


def test_server_line_parser() -> None:
    s = parse_server_line("host.example:11300:4 name id=12")
    assert (s.host, s.port, s.weight, s.name, s.id) == ("host.example", 11300, 4, "name", 12)
    with pytest.raises(ConfigError):
        parse_server_line("nope")


def test_config_from_servers() -> None:
    config = config_from_servers(["127.0.0.1:1 a id=0", {"host": "127.0.0.1", "port": 2}],
                                 failover=0)  # fmt: skip
    assert [s.name for s in config.servers] == ["a", "127.0.0.1:2"]
    assert config.failover == 0
    assert all(s.line is None for s in config.servers)
    with pytest.raises(ConfigError, match="failover"):
        config_from_servers(["127.0.0.1:1"], failover=-1)


def test_load_and_check_config(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("servers:\n  - 127.0.0.1:11301 alpha id=0\n  - 127.0.0.1:11302:2 beta\n")
    assert load_config(path).servers[1].weight == 2
    summary = check_config(path, ["default", "emails"])
    assert "2 shards" in summary and "alpha" in summary and "beta" in summary
    assert "tube 'default' -> " in summary and "tube 'emails' -> " in summary
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers:\n  - 127.0.0.1:11301 alpha\n  - 127.0.0.1:0 beta\n")
    with pytest.raises(ConfigError) as info:
        check_config(bad)
    assert info.value.line == 3 and info.value.field == "servers[1].port"
    assert str(info.value).startswith(str(bad) + ":3: servers[1].port:")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("servers", "options", "field", "words"),
    [
        (["127.0.0.1:1 a", "127.0.0.1:2 a"], {}, "servers[1].name", "already used"),
        (["127.0.0.1:1 a", "127.0.0.1:1 b"], {}, "servers[1].address", "already used"),
        ([], {}, "servers", "non-empty"),
        (["bad"], {}, "servers[0].address", "host:port"),
        ([{"host": "x", "port": 0}], {}, "servers[0].port", "1..65535"),
        ([{"host": "x", "port": "11300"}], {}, "servers[0].port", "integer"),
        ([["x", 1]], {}, "servers[0]", "server line or a mapping"),
        (["127.0.0.1:1"], {"failover": -1}, "failover", ">= 0"),
        (["127.0.0.1:1"], {"servres": 1}, "servres", "unknown field"),
        (["127.0.0.1:1"], {"timeout": float("inf")}, "timeout", "positive"),
    ],
)
def test_python_values_errors_have_no_line(
    servers: list[object], options: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_servers(servers, **options)  # type: ignore[arg-type]
    err = info.value
    assert (err.line, err.source, err.field) == (None, None, field)
    assert str(err) == f"{field}: {err.message}"
    assert words in err.message
    assert not re.search(r"line \d", str(err))


def test_router_with_python_values_reports_no_line() -> None:
    with pytest.raises(ConfigError) as info:
        Router([])
    assert info.value.line is None and str(info.value) == "servers: " + info.value.message
    with pytest.raises(ConfigError) as info:
        Router(["127.0.0.1:1 a", "127.0.0.1:2 a"])
    assert info.value.line is None and info.value.field == "servers[1].name"
    assert not str(info.value).startswith("line")


def test_id_collision_from_python_values_names_no_line() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_servers(["127.0.0.1:1 a id=5", "127.0.0.1:2 b id=5"])
    assert info.value.line is None and "collides with servers[0] 'a' (given)" in str(info.value)
    # In a file the other entry's line is named.
    err = _error("servers:\n  - a:1 x id=5\n  - b:1 y id=5\n")
    assert "collides with servers[0] 'x' (line 2, given)" in str(err)


def test_server_line_without_a_line_has_none() -> None:
    assert parse_server_line("127.0.0.1:1 a").line is None
    assert parse_server_line("127.0.0.1:1 a", line=7).line == 7
    with pytest.raises(ConfigError) as info:
        parse_server_line("127.0.0.1:0 a")
    assert info.value.line is None and str(info.value).startswith("servers[0].port: ")
    with pytest.raises(ConfigError) as info:
        parse_server_line("127.0.0.1:0 a", line=4, source="c.yaml")
    assert info.value.line == 4 and str(info.value).startswith("c.yaml:4: servers[0].port: ")


@pytest.mark.parametrize(
    ("text", "line", "stopped"),
    [
        # The construct left open is reported where it starts; the message says where parsing
        # stopped (PyYAML's problem_mark) when that is another line.
        ("servers:\n  - a:1 x\n  - [a:2 y\nfailover: 1\n", 3, "on line 4"),
        ("servers:\n  - a:1 x\n  - [a:2 y\n", 3, "on line 4"),
        ("servers:\n  - {host: a, port: 1\n  - b:1\n", 2, "on line 4"),
        ("servers:\n  - 'a:1 x\n  - b:2\n", 2, "on line 4"),
        ("servers:\n  - a:1\nfoo\nbar: 1\n", 3, "on line 4"),
        ("servers: [a: b: c]\n", 1, None),
        # Otherwise the line where parsing stopped is the mistake.
        ("servers:\n  - a:1\n failover: 1\n", 3, None),
        ("servers:\n\t- a:1\n", 2, None),
        ("servers: *nope\n", 1, None),
    ],
)
def test_yaml_syntax_errors_name_the_line_to_look_at(
    text: str, line: int, stopped: str | None
) -> None:
    err = _error(text)
    assert err.line == line and err.field is None
    assert str(err).startswith(f"c.yaml:{line}: not valid YAML: ")
    rest = str(err).replace(f"starts on line {line}", "")
    if stopped is None:
        assert " on line " not in rest
    else:
        assert stopped in rest and f"starts on line {line}" in str(err)


def test_placement_refuses_invalid_tube_names() -> None:
    config = config_from_servers(["127.0.0.1:1 a"])
    assert "tube 'ok-1' -> a" in placement_summary(config, ["ok-1"])
    for bad in ("bad name", "", "-lead", "x" * 201, "caf\u00e9"):
        with pytest.raises(InvalidArgument) as info:
            placement_summary(config, ["default", bad])
        assert repr(bad) in str(info.value)
        assert isinstance(info.value, ValueError)
    assert check_tube_names(["a", "b" * 200]) == ("a", "b" * 200)
