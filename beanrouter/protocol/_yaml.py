"""The YAML bodies of ``OK`` replies, in beanstalkd's exact layout (no YAML library involved).

Mappings are ``---\\n`` then one ``key: value\\n`` per entry; lists are ``---\\n`` then one
``- item\\n`` per entry. Formatting is for the server role; parsing for the client role, which
turns values into ``int``, ``float`` (``rusage-*``), ``bool`` (``true``/``false``) or ``str``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ._errors import RemoteProtocolError

__all__ = ["format_list", "format_mapping", "parse_list", "parse_mapping"]

StatValue = int | float | str | bool

_QUOTED_KEYS = frozenset({"version"})
# Keys whose values are always strings, even when they look like numbers (a tube named "42").
_STRING_KEYS = frozenset({"name", "tube", "state", "hostname", "os", "platform"})
_ASCII_DIGITS = frozenset("0123456789")


def _fmt_value(key: str, value: StatValue) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if key in _QUOTED_KEYS:
        return f'"{value}"'
    if isinstance(value, float):
        return f"{value:.6f}"  # beanstalkd prints rusage as %d.%06d
    return str(value)


def format_mapping(stats: Mapping[str, StatValue]) -> bytes:
    """``---\\nkey: value\\n...`` in the mapping's order (``version`` quoted, like beanstalkd)."""
    parts = ["---\n"]
    parts.extend(f"{k}: {_fmt_value(k, v)}\n" for k, v in stats.items())
    return "".join(parts).encode("utf-8")


def format_list(items: Iterable[str]) -> bytes:
    """``---\\n- a\\n- b\\n``."""
    parts = ["---\n"]
    parts.extend(f"- {item}\n" for item in items)
    return "".join(parts).encode("utf-8")


def _is_digits(text: str) -> bool:
    return bool(text) and _ASCII_DIGITS.issuperset(text)


def _parse_value(raw: str) -> StatValue:
    if raw == "true":
        return True
    if raw == "false":
        return False
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1]
    digits = raw[1:] if raw[:1] == "-" else raw
    if _is_digits(digits) and (digits == "0" or digits[0] != "0"):
        return int(raw)  # only canonical numbers, so "0123" (a stats id) stays a string
    whole, dot, frac = raw.partition(".")
    if dot and _is_digits(whole) and _is_digits(frac):
        return float(raw)
    return raw


def _lines(body: bytes) -> list[str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"stats body is not UTF-8: {exc}") from None
    if not text.startswith("---\n"):
        raise RemoteProtocolError(f"stats body does not start with '---': {body[:40]!r}")
    lines = text[4:].split("\n")  # not splitlines(): it also splits at \x1c, \x85, \u2028...
    if lines[-1] == "":
        lines.pop()
    return lines


def parse_mapping(body: bytes) -> dict[str, StatValue]:
    """Parse a stats body into an ordered dict."""
    result: dict[str, StatValue] = {}
    for line in _lines(body):
        key, sep, value = line.partition(": ")
        if not sep:
            if line.endswith(":"):
                result[line[:-1]] = ""
                continue
            raise RemoteProtocolError(f"bad stats line {line!r}")
        result[key] = value if key in _STRING_KEYS else _parse_value(value)
    return result


def parse_list(body: bytes) -> list[str]:
    """Parse a list-tubes body into its names."""
    items: list[str] = []
    for line in _lines(body):
        if not line.startswith("- "):
            raise RemoteProtocolError(f"bad list line {line!r}")
        items.append(line[2:])
    return items
