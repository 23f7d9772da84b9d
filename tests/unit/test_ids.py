"""Global job ids: (shard_id << 48) | local_id, id 0 transparent, errors instead of wrong shards."""

from __future__ import annotations

import pytest

from beanrouter.core import ids
from beanrouter.core.errors import JobIdError, NotFound


def test_round_trip() -> None:
    for shard_id in (0, 1, 2, 1000, ids.MAX_SHARD_ID):
        for local in (1, 2, 12345, ids.MAX_LOCAL_ID):
            gid = ids.encode(shard_id, local)
            assert 0 <= gid <= ids.MAX_GLOBAL_ID < 2**63
            assert ids.decode(gid) == (shard_id, local)


def test_shard_zero_keeps_beanstalkd_ids() -> None:
    assert ids.encode(0, 1) == 1
    assert ids.encode(0, 987654) == 987654
    assert ids.decode(42) == (0, 42)


def test_layout() -> None:
    assert ids.encode(1, 1) == (1 << 48) + 1
    assert ids.MAX_GLOBAL_ID == 2**63 - 1


def test_local_id_too_large_is_an_error() -> None:
    with pytest.raises(JobIdError, match="48 bits"):
        ids.encode(3, 2**48)


@pytest.mark.parametrize("bad", [-1, 2**63, 2**64, "12", 1.0, True])
def test_bad_global_ids(bad: object) -> None:
    with pytest.raises(JobIdError):
        ids.decode(bad)  # type: ignore[arg-type]


def test_job_id_error_is_not_found() -> None:
    assert issubclass(JobIdError, NotFound)


def test_bad_shard_id() -> None:
    with pytest.raises(JobIdError):
        ids.encode(ids.MAX_SHARD_ID + 1, 1)


def test_derived_ids_are_stable_and_never_zero() -> None:
    # Fixed vectors: a change here would re-address every job of a derived-id cluster.
    assert ids.derive_shard_id("alpha") == 29035
    assert ids.derive_shard_id("beta") == 17536
    assert ids.derive_shard_id("127.0.0.1:11301") == 11620
    values = {ids.derive_shard_id(f"shard-{i}") for i in range(5000)}
    assert 0 not in values
    assert all(1 <= v <= ids.MAX_SHARD_ID for v in values)


def test_derived_id_vectors() -> None:
    # md5(name)[:8] big-endian mod 32767 + 1
    import hashlib

    for name in ("alpha", "beta", "10.0.0.1:11300"):
        digest = hashlib.md5(name.encode()).digest()
        assert ids.derive_shard_id(name) == int.from_bytes(digest[:8], "big") % 32767 + 1
