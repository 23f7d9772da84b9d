"""Reading a cluster configuration: YAML text (or Python values) in, ``core.config``'s frozen
dataclasses out (pure: no sockets, no clock).

Format (see docs/config.md)::

    servers:                      # twemproxy-style lines, or mappings
      - 127.0.0.1:11301:1 alpha id=0
      - {host: 127.0.0.1, port: 11302, weight: 2, name: beta}
    failover: 1

Invariants: every error is a ``ConfigError`` naming the field (``servers[1].weight``) and, for YAML
text, the line (from the YAML node's mark; None for Python values: no line is made up); shard
names, addresses and numeric ids are unique; an id that is not given is derived from the name
(``ids.derive_shard_id``), never from list order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..core.config import DEFAULT_RETRY, DEFAULT_RETRY_MAX, ClusterConfig, ShardConfig
from ..core.errors import ConfigError
from ..core.ids import MAX_SHARD_ID, derive_shard_id

if TYPE_CHECKING:
    from pathlib import Path

    import yaml
    from yaml.nodes import Node

# PyYAML (and pathlib) are imported by the functions that read a configuration, not here: a
# process that builds its ``ClusterConfig`` from Python values (``beanrouter cluster``) starts
# without them.

__all__ = [
    "config_from_servers",
    "load_config",
    "parse_config",
    "parse_server_line",
]


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


_TOP_FIELDS = (
    "servers",
    "failover",
    "connect_timeout",
    "timeout",
    "server_failure_limit",
    "server_retry_timeout",
    "server_retry_timeout_max",
    "server_retry_jitter",
    "stray_scan_interval",
    "hash",
    "distribution",
)
_SERVER_FIELDS = ("address", "host", "port", "weight", "name", "id", "drain")


class _Ctx:
    """Error helper: remembers the source name."""

    def __init__(self, source: str | None) -> None:
        from yaml.constructor import SafeConstructor

        self.source = source
        self.constructor = SafeConstructor()

    @staticmethod
    def line(node: Node | None) -> int | None:
        """The node's 1-based line; None for nodes built from Python values (they have no mark)."""
        mark = None if node is None else node.start_mark
        return None if mark is None else mark.line + 1

    def error(self, message: str, node: Node | None, field: str | None) -> ConfigError:
        return ConfigError(message, line=self.line(node), field=field, source=self.source)

    def scalar(self, node: Node, field: str) -> Any:
        from yaml.constructor import ConstructorError
        from yaml.nodes import ScalarNode

        if not isinstance(node, ScalarNode):
            raise self.error("must be a single value", node, field)
        try:
            return self.constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise self.error(f"cannot read value: {exc.problem}", node, field) from None

    def integer(self, node: Node, field: str, low: int, high: int | None = None) -> int:
        value = self.scalar(node, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"must be an integer, got {value!r}", node, field)
        if value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise self.error(f"must be {bound}, got {value}", node, field)
        return value

    def seconds(self, node: Node, field: str) -> float:
        value = self.scalar(node, field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"must be a number of seconds, got {value!r}", node, field)
        if not math.isfinite(value) or value <= 0:
            raise self.error(f"must be a positive number of seconds, got {value}", node, field)
        return float(value)

    def fraction(self, node: Node, field: str) -> float:
        value = self.scalar(node, field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise self.error(f"must be a number in [0, 1), got {value!r}", node, field)
        return float(value)

    def string(self, node: Node, field: str) -> str:
        value = self.scalar(node, field)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.error(f"must be a string, got {value!r}", node, field)
        text = str(value)
        if not text or any(c.isspace() for c in text):
            raise self.error(f"must be a non-empty word without spaces, got {text!r}", node, field)
        return text

    def boolean(self, node: Node, field: str) -> bool:
        value = self.scalar(node, field)
        if not isinstance(value, bool):
            raise self.error(f"must be true or false, got {value!r}", node, field)
        return value

    def string_line(self, node: Node, field: str) -> str:
        value = self.scalar(node, field)
        if not isinstance(value, str):
            raise self.error(f"must be a server line 'host:port[:weight] [name]', got {value!r}",
                             node, field)  # fmt: skip
        return value

    def mapping(self, node: Node, field: str, allowed: Sequence[str]) -> dict[str, Node]:
        from yaml.nodes import MappingNode

        if not isinstance(node, MappingNode):
            raise self.error("must be a mapping", node, field or None)
        result: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, field)
            sub = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str) or key not in allowed:
                raise self.error(f"unknown field (expected one of: {', '.join(allowed)})",
                                 key_node, sub)  # fmt: skip
            if key in result:
                raise self.error("given twice", key_node, sub)
            result[key] = value_node
        return result


def _split_host_port(text: str) -> tuple[str, str, str | None] | None:
    """``host:port[:weight]`` -> (host, port, weight) as text; IPv6 hosts in brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            return None
        host, rest = text[1:end], text[end + 2 :]
    else:
        host, sep, rest = text.partition(":")
        if not sep:
            return None
    port, _, weight = rest.partition(":")
    if not host or not port:
        return None
    return host, port, (weight if weight or rest.endswith(":") else None)


def _port(ctx: _Ctx, text: str, node: Node, field: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ctx.error(f"port must be 1..65535, got {text!r}", node, field)
    return int(text)


def parse_server_line(
    text: str, *, line: int | None = None, field: str = "servers[0]", source: str | None = None
) -> ShardConfig:
    """Parse ``host:port[:weight] [name] [id=N]`` (twemproxy's server line plus an optional id).

    Raises:
        ConfigError: the line is malformed.
    """
    from yaml.error import Mark
    from yaml.nodes import ScalarNode

    ctx = _Ctx(source)
    node = ScalarNode("tag:yaml.org,2002:str", text)
    if line is not None:
        node.start_mark = Mark(source or "", 0, line - 1, 0, None, 0)
    return _server_line(ctx, text, node, field)


def _server_line(ctx: _Ctx, text: str, node: Node, field: str) -> ShardConfig:
    tokens = text.split()
    if not tokens:
        raise ctx.error("empty server line", node, field)
    parts = _split_host_port(tokens[0])
    if parts is None:
        raise ctx.error(
            f"expected host:port[:weight] [name] [id=N], got {text!r}", node, field + ".address"
        )
    host, port_text, weight_text = parts
    port = _port(ctx, port_text, node, field + ".port")
    weight = 1
    if weight_text is not None:
        if not weight_text.isdigit() or int(weight_text) < 1:
            raise ctx.error(
                f"weight must be a positive integer, got {weight_text!r}", node, field + ".weight"
            )
        weight = int(weight_text)
    name: str | None = None
    shard_id: int | None = None
    drain: bool | None = None
    for token in tokens[1:]:
        if token.startswith("drain="):
            if drain is not None:
                raise ctx.error("drain given twice", node, field + ".drain")
            value = token[6:].lower()
            if value not in _BOOL_WORDS:
                raise ctx.error(f"drain must be true or false, got {token[6:]!r}", node,
                                field + ".drain")  # fmt: skip
            drain = _BOOL_WORDS[value]
        elif token.startswith("id="):
            if shard_id is not None:
                raise ctx.error("id given twice", node, field + ".id")
            digits = token[3:]
            if not digits.isdigit() or int(digits) > MAX_SHARD_ID:
                raise ctx.error(
                    f"id must be an integer 0..{MAX_SHARD_ID}, got {digits!r}", node, field + ".id"
                )
            shard_id = int(digits)
        elif name is None:
            name = token
        else:
            raise ctx.error(f"unexpected word {token!r} after the name", node, field)
    return _shard(host, port, weight, name, shard_id, ctx.line(node), bool(drain))


def _shard(
    host: str,
    port: int,
    weight: int,
    name: str | None,
    shard_id: int | None,
    line: int | None,
    drain: bool = False,
) -> ShardConfig:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = name if name is not None else address
    derived = shard_id is None
    return ShardConfig(
        name=name,
        host=host,
        port=port,
        weight=weight,
        id=derive_shard_id(name) if shard_id is None else shard_id,
        id_derived=derived,
        line=line,
        drain=drain,
    )


def _server_mapping(ctx: _Ctx, node: Node, field: str) -> ShardConfig:
    fields = ctx.mapping(node, field, _SERVER_FIELDS)
    host: str | None = None
    port: int | None = None
    weight = 1
    if "address" in fields:
        if "host" in fields or "port" in fields:
            raise ctx.error("give either address or host and port", node, field)
        anode = fields["address"]
        text = ctx.string(anode, field + ".address")
        parts = _split_host_port(text)
        if parts is None or parts[2] is not None:
            raise ctx.error(f"expected host:port, got {text!r}", anode, field + ".address")
        host, port = parts[0], _port(ctx, parts[1], anode, field + ".address")
    else:
        if "host" not in fields or "port" not in fields:
            raise ctx.error("needs address, or host and port", node, field)
        host = ctx.string(fields["host"], field + ".host").strip("[]")
        port = ctx.integer(fields["port"], field + ".port", 1, 65535)
    if "weight" in fields:
        weight = ctx.integer(fields["weight"], field + ".weight", 1)
    name = ctx.string(fields["name"], field + ".name") if "name" in fields else None
    shard_id = ctx.integer(fields["id"], field + ".id", 0, MAX_SHARD_ID) if "id" in fields else None
    drain = ctx.boolean(fields["drain"], field + ".drain") if "drain" in fields else False
    return _shard(host, port, weight, name, shard_id, ctx.line(node), drain)


def _check_unique(ctx: _Ctx, shards: Sequence[ShardConfig], nodes: Sequence[Node]) -> None:
    seen_name: dict[str, int] = {}
    seen_addr: dict[str, int] = {}
    seen_id: dict[int, int] = {}
    for i, (shard, node) in enumerate(zip(shards, nodes, strict=True)):
        if shard.name in seen_name:
            j = seen_name[shard.name]
            raise ctx.error(f"name {shard.name!r} is already used by servers[{j}]", node,
                            f"servers[{i}].name")  # fmt: skip
        seen_name[shard.name] = i
        if shard.address in seen_addr:
            j = seen_addr[shard.address]
            raise ctx.error(f"address {shard.address} is already used by servers[{j}]", node,
                            f"servers[{i}].address")  # fmt: skip
        seen_addr[shard.address] = i
        if shard.id in seen_id:
            j = seen_id[shard.id]
            other = shards[j]
            how = "derived from its name" if shard.id_derived else "given"
            other_how = "derived from its name" if other.id_derived else "given"
            if other.line is not None:
                other_how = f"line {other.line}, {other_how}"
            raise ctx.error(
                f"id {shard.id} ({how}) collides with servers[{j}] {other.name!r} ({other_how}): "
                + (
                    "ids must be unique"
                    if not (shard.id_derived or other.id_derived)
                    else "give one of them an explicit id"
                ),
                node,
                f"servers[{i}].id",
            )
        seen_id[shard.id] = i


def _build(ctx: _Ctx, root: Node | None) -> ClusterConfig:
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    if root is None:
        raise ctx.error("empty configuration: a 'servers:' list is required", None, None)
    fields = ctx.mapping(root, "", _TOP_FIELDS)
    if "servers" not in fields:
        raise ctx.error("a 'servers:' list is required", root, "servers")
    snode = fields["servers"]
    if not isinstance(snode, SequenceNode) or not snode.value:
        raise ctx.error("must be a non-empty list of servers", snode, "servers")
    shards: list[ShardConfig] = []
    for i, item in enumerate(snode.value):
        f = f"servers[{i}]"
        if isinstance(item, ScalarNode):
            shards.append(_server_line(ctx, ctx.string_line(item, f), item, f))
        elif isinstance(item, MappingNode):
            shards.append(_server_mapping(ctx, item, f))
        else:
            raise ctx.error("must be a server line or a mapping", item, f)
    _check_unique(ctx, shards, snode.value)
    if all(s.drain for s in shards):
        raise ctx.error("every shard is marked drain: at least one must take puts", snode,
                        "servers")  # fmt: skip
    kwargs: dict[str, Any] = {}
    if "failover" in fields:
        kwargs["failover"] = ctx.integer(fields["failover"], "failover", 0)
    for key in (
        "connect_timeout",
        "timeout",
        "server_retry_timeout",
        "server_retry_timeout_max",
        "stray_scan_interval",
    ):
        if key in fields:
            kwargs[key] = ctx.seconds(fields[key], key)
    if "server_failure_limit" in fields:
        kwargs["server_failure_limit"] = ctx.integer(
            fields["server_failure_limit"], "server_failure_limit", 1
        )
    if "server_retry_jitter" in fields:
        kwargs["server_retry_jitter"] = ctx.fraction(
            fields["server_retry_jitter"], "server_retry_jitter"
        )
    for key, only in (("hash", "md5"), ("distribution", "ketama")):
        if key in fields:
            value = ctx.string(fields[key], key)
            if value != only:
                raise ctx.error(f"only {only!r} is supported, got {value!r}", fields[key], key)
    retry = kwargs.get("server_retry_timeout", DEFAULT_RETRY)
    retry_max = kwargs.get("server_retry_timeout_max", DEFAULT_RETRY_MAX)
    if retry_max < retry:
        node = fields.get("server_retry_timeout_max", fields.get("server_retry_timeout"))
        raise ctx.error(f"must be >= server_retry_timeout ({retry})", node,
                        "server_retry_timeout_max")  # fmt: skip
    return ClusterConfig(servers=tuple(shards), source=ctx.source, **kwargs)


def parse_config(text: str, source: str | None = None) -> ClusterConfig:
    """Parse a YAML configuration.

    Args:
        text: the YAML document.
        source: file name used in error messages.

    Raises:
        ConfigError: with ``line`` and ``field`` set as precisely as possible.
    """
    import yaml

    ctx = _Ctx(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None
    return _build(ctx, root)


# PyYAML errors whose context is a construct left open: the mistake is where it starts (an
# unclosed ``[`` on line 3 is found at the next line's ``:`` or at the end of the file).
_OPENED_CONSTRUCTS = (
    "while parsing a flow sequence",
    "while parsing a flow mapping",
    "while scanning a quoted scalar",
    "while scanning a simple key",
)


def _yaml_error(exc: yaml.MarkedYAMLError, source: str | None) -> ConfigError:
    """``ConfigError`` for a YAML syntax error, on the line a reader should look at.

    PyYAML's ``problem_mark`` is where parsing stopped; for a construct left open that is after
    it (often the next line, or the end of the file), so the construct's start, ``context_mark``,
    is reported instead, and the message says where parsing stopped.
    """
    problem = exc.problem or str(exc)
    mark = exc.problem_mark
    context = exc.context_mark
    if exc.context in _OPENED_CONSTRUCTS and context is not None:
        if mark is not None and mark.line != context.line:
            problem += f" on line {mark.line + 1}"
        problem += f" ({exc.context.removeprefix('while ')} that starts on line {context.line + 1})"
        mark = context
    line = None if mark is None else mark.line + 1
    return ConfigError(f"not valid YAML: {problem}", line=line, source=source)


def load_config(path: str | Path) -> ClusterConfig:
    """Read and parse the configuration file at ``path``.

    Raises:
        ConfigError: unreadable file or invalid configuration.
    """
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration: {exc}", source=str(path)) from None
    return parse_config(text, source=str(path))


def config_from_servers(
    servers: Sequence[str | Mapping[str, Any]] | str, **options: Any
) -> ClusterConfig:
    """A configuration from a list of server lines (or mappings) and keyword options.

    ``config_from_servers(["127.0.0.1:11301", "127.0.0.1:11302 beta id=1"], failover=1)``.

    Raises:
        ConfigError: as ``parse_config``; fields are named as in a file.
    """
    if isinstance(servers, str):
        servers = [servers]
    from yaml.representer import RepresenterError, SafeRepresenter

    doc: dict[str, Any] = {"servers": list(servers), **options}
    # The values become YAML nodes directly (not text to parse): the same checks as a file, but
    # the nodes have no marks, so errors and shards carry no (made-up) line numbers.
    try:
        root = SafeRepresenter(sort_keys=False).represent_data(doc)
    except RepresenterError as exc:
        raise ConfigError(f"not a configuration value: {exc}") from None
    return _build(_Ctx(None), root)
