"""Wire-level rules shared by both roles: limits, tube names and beanstalkd's number readers.

The number readers reproduce beanstalkd 1.12's ``read_u32``/``read_u64`` (skip spaces, the first
character must be a digit, base 10, overflow is an error) and the ``strtol``/``strtoul`` calls it
makes for ``reserve-with-timeout`` and ``kick``. Each returns ``(value, end)`` or ``None``.
"""

from __future__ import annotations

LINE_MAX = 224
"""Longest command line, ``\\r\\n`` included (beanstalkd's LINE_BUF_SIZE)."""

MAX_TUBE_NAME = 200
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
URGENT_THRESHOLD = 1024
DEFAULT_MAX_JOB_SIZE = 65535
MAX_JOB_SIZE_LIMIT = 1_073_741_824

NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()")
_NAME_BYTES = bytes(sorted(NAME_CHARS))
_DIGITS = b"0123456789"
_SPACES = b" \t\n\v\f\r"


def is_valid_tube_name(name: bytes) -> bool:
    """True when ``name`` is 1..200 bytes of beanstalkd's name characters, not led by ``-``."""
    return (
        0 < len(name) <= MAX_TUBE_NAME
        and not name.translate(None, _NAME_BYTES)
        and name[0] != 0x2D  # '-'
    )


def name_span(buf: bytes, pos: int) -> int:
    """End of the run of name characters starting at ``pos`` (beanstalkd's ``strspn``)."""
    end = pos
    n = len(buf)
    while end < n and buf[end] in NAME_CHARS:
        end += 1
    return end


def _digits_end(buf: bytes, pos: int) -> int:
    end = pos
    n = len(buf)
    while end < n and 48 <= buf[end] <= 57:
        end += 1
    return end


def read_uint(buf: bytes, pos: int, limit: int) -> tuple[int, int] | None:
    """beanstalkd's read_u32/read_u64: skip spaces, digits, value <= limit. Returns (value, end)."""
    n = len(buf)
    while pos < n and buf[pos] == 0x20:
        pos += 1
    end = _digits_end(buf, pos)
    if end == pos:
        return None
    value = int(buf[pos:end])
    if value > limit:
        return None
    return value, end


def read_uint_to_end(buf: bytes, pos: int, limit: int) -> int | None:
    """read_uint that must consume the rest of ``buf`` (the C code's ``end == NULL`` form)."""
    rest = buf[pos:]
    if rest.isdigit():  # fast path: the common case has exactly one space and digits
        value = int(rest)
        return value if value <= limit else None
    got = read_uint(buf, pos, limit)
    if got is None or got[1] != len(buf):
        return None
    return got[0]


def _strto_prefix(buf: bytes, pos: int) -> tuple[int, int, bool] | None:
    """C strtol/strtoul scanning: whitespace, a sign, digits -> (magnitude, end, negative)."""
    n = len(buf)
    while pos < n and buf[pos] in _SPACES:
        pos += 1
    negative = False
    if pos < n and buf[pos] in b"+-":
        negative = buf[pos] == 0x2D
        pos += 1
    end = _digits_end(buf, pos)
    if end == pos:
        return None  # no conversion: strto* returns 0 and leaves end at the start
    return int(buf[pos:end]), end, negative


def read_strtol_int(buf: bytes, pos: int) -> int | None:
    """``int timeout = strtol(buf, &end, 10)`` as beanstalkd 1.12 does for reserve-with-timeout.

    No digits gives 0; trailing bytes are ignored; overflow of a C long is an error (None); the
    result is then narrowed to a C int the way gcc does (two's complement truncation).
    """
    got = _strto_prefix(buf, pos)
    if got is None:
        return 0
    magnitude, _end, negative = got
    value = -magnitude if negative else magnitude
    if not -(2**63) <= value <= 2**63 - 1:
        return None
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value & 0x8000_0000 else value


def read_strtoul_uint(buf: bytes, pos: int) -> int | None:
    """``uint count = strtoul(buf, &end, 10)`` as beanstalkd 1.12 does for kick.

    No digits is an error; trailing bytes are ignored; a minus sign negates modulo 2**64; overflow
    of a C unsigned long is an error; the result is narrowed to a C unsigned int.
    """
    got = _strto_prefix(buf, pos)
    if got is None:
        return None
    magnitude, _end, negative = got
    if magnitude > U64_MAX:
        return None
    value = (-magnitude) & U64_MAX if negative else magnitude
    return value & U32_MAX
