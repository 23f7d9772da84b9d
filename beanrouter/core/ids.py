"""Global job ids: one integer < 2**63 that names the shard and the shard's own job id.

    global id = (shard_id << 48) | local_id        shard_id < 2**15, local_id < 2**48

Invariants: encoding is pure and depends only on the shard's *stable* numeric id (from the
configuration, or derived from the shard's name, never from list order), so the same job has the
same global id through the library and the proxy, across restarts and processes. Shard id 0 keeps
beanstalkd's own ids: a one-shard cluster whose shard has id 0 is id-transparent. A local id that
does not fit 48 bits, or a global id outside 0..2**63-1, is an error, never a wrong shard.
"""

from __future__ import annotations

import hashlib

from .errors import JobIdError

__all__ = [
    "LOCAL_BITS",
    "MAX_GLOBAL_ID",
    "MAX_LOCAL_ID",
    "MAX_SHARD_ID",
    "SHARD_BITS",
    "decode",
    "derive_shard_id",
    "encode",
]

SHARD_BITS = 15
LOCAL_BITS = 48
MAX_SHARD_ID = (1 << SHARD_BITS) - 1
"""Largest shard id (32767)."""
MAX_LOCAL_ID = (1 << LOCAL_BITS) - 1
"""Largest beanstalkd job id a shard may hand out and still be routable (2**48 - 1)."""
MAX_GLOBAL_ID = (1 << (SHARD_BITS + LOCAL_BITS)) - 1
"""Largest global id (2**63 - 1): global ids fit a signed 64-bit integer."""
_LOCAL_MASK = MAX_LOCAL_ID


def encode(shard_id: int, local_id: int) -> int:
    """The global id of job ``local_id`` on shard ``shard_id``.

    Raises:
        JobIdError: ``local_id`` does not fit 48 bits (the shard has handed out more than 2**48
            ids: that shard must be given a fresh id space) or ``shard_id`` is out of range.
    """
    if not 0 <= shard_id <= MAX_SHARD_ID:
        raise JobIdError(f"shard id {shard_id} is outside 0..{MAX_SHARD_ID}")
    if not 0 <= local_id <= MAX_LOCAL_ID:
        raise JobIdError(
            f"job id {local_id} of shard id {shard_id} does not fit {LOCAL_BITS} bits:"
            " it cannot be given a global id"
        )
    return (shard_id << LOCAL_BITS) | local_id


def decode(global_id: int) -> tuple[int, int]:
    """``(shard_id, local_id)`` of a global id.

    Raises:
        JobIdError: ``global_id`` is not an integer in 0..2**63-1.
    """
    if isinstance(global_id, bool) or not isinstance(global_id, int):
        raise JobIdError(f"job id must be an integer, got {global_id!r}")
    if not 0 <= global_id <= MAX_GLOBAL_ID:
        raise JobIdError(f"job id {global_id} is outside 0..{MAX_GLOBAL_ID}")
    return global_id >> LOCAL_BITS, global_id & _LOCAL_MASK


def derive_shard_id(name: str) -> int:
    """A stable shard id in 1..32767 derived from the shard's name (first 8 bytes of its MD5).

    Never 0: id 0 (beanstalkd's own ids) is only ever given explicitly.
    """
    digest = hashlib.md5(name.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % MAX_SHARD_ID + 1
