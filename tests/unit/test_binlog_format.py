"""Binlog format: exact sizes, round trips, and how the reader stops on damage (no I/O)."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from beanrouter.server.binlog import format as fmt

FIELDS = (7, 1023, 5, 60, 4, 1_700_000_000_000_000_000, 1_700_000_005_000_000_000, 3, 0)
H = fmt.HEADER_SIZE  # where the first record starts
COUNTS = 2 | (1 << 32) | (3 << 64) | (4 << 96) | (5 << 128)


def job(job_id: int = 7, body: bytes = b"hello", tube: bytes = b"default") -> bytes:
    return fmt.encode_job(tube, body, (job_id, *FIELDS[1:]))


def state(job_id: int = 7, st: int = 3) -> bytes:
    f = (job_id, *FIELDS[1:4], st, *FIELDS[5:8], COUNTS)
    return fmt.encode_state(f)


def file_of(*records: bytes, pad: int = 0) -> bytes:
    return fmt.encode_header(1, 1, 0) + b"".join(records) + bytes(pad)


def read(data: bytes) -> tuple[list[fmt.Record], fmt.RecordReader]:
    reader = fmt.RecordReader(data)
    return list(reader), reader


# -- header ----------------------------------------------------------------------------------


def test_header_round_trip() -> None:
    head = fmt.encode_header(12, 345, 678)
    assert len(head) == fmt.HEADER_SIZE == 104 and fmt.VERSION == 2
    assert fmt.decode_header(head + b"more") == fmt.FileHeader(2, 12, 345, 678, 104)


def test_header_starts_with_a_line_that_says_what_the_file_is() -> None:
    """``head -1`` on a file names beanrouter, the format and the docs; beanstalkd, reading it,
    would report "unknown version: 1851876706" ("bean"), not a number that looks like one."""
    head = fmt.encode_header(1, 1, 0)
    line = head.split(b"\n", 1)[0] + b"\n"
    assert line == fmt.MAGIC and len(line) == 80 and line.isascii()
    assert line.rstrip() == b"beanrouter binlog, format 2 (not beanstalkd's): see docs/server.md"
    assert struct.unpack_from("<i", head)[0] == 1851876706


def test_format_1_headers_are_still_read() -> None:
    head = fmt.encode_header(12, 345, 678, version=1)
    assert len(head) == fmt.HEADER_SIZE_V1 == 36 and head.startswith(b"BRBINLOG")
    assert fmt.decode_header(head + b"more") == fmt.FileHeader(1, 12, 345, 678, 36)
    records = head + job() + state()
    assert [r[0] for r in fmt.RecordReader(records, 36)] == [36, 36 + len(job())]


@pytest.mark.parametrize(
    ("data", "words", "blank", "foreign"),
    [
        (b"", "empty file header", True, False),
        (bytes(36), "empty file header", True, False),
        (struct.pack("<i", 7) + bytes(40), "a beanstalkd binlog (its format 7)", False, True),
        (b"NOTABINLOG" + bytes(30), "bad magic", False, True),
        (fmt.encode_header(1, 1, 0)[:20], "cut short", False, False),
        (fmt.encode_header(1, 1, 0)[:90], "cut short", False, False),
        (fmt.encode_header(1, 1, 0, version=1)[:20], "cut short", False, False),
        (b"BR", "cut short", False, False),
        (
            fmt.MAGIC.replace(b"format 2", b"format 3"),
            "not a format this server reads",
            False,
            False,
        ),
    ],
)
def test_bad_headers(data: bytes, words: str, blank: bool, foreign: bool) -> None:
    with pytest.raises(fmt.BadHeader) as info:
        fmt.decode_header(data)
    assert words in info.value.reason
    assert (info.value.blank, info.value.foreign) == (blank, foreign)


def test_header_checksum_and_version() -> None:
    for version, at in ((2, 90), (1, 20)):
        head = bytearray(fmt.encode_header(1, 1, 0, version=version))
        head[at] ^= 1
        with pytest.raises(fmt.BadHeader, match="checksum"):
            fmt.decode_header(bytes(head))
    raw = struct.pack("<8sIIQq", b"BRBINLOG", 99, 1, 1, 0)
    with pytest.raises(fmt.BadHeader, match="version 99"):
        fmt.decode_header(raw + struct.pack("<I", zlib.crc32(raw)))


# -- records ---------------------------------------------------------------------------------


def test_record_sizes() -> None:
    assert fmt.STATE_SIZE == 80 and fmt.JOB_FIXED_SIZE == 68 and fmt.RECORD_HEAD_SIZE == 12
    assert len(state()) == fmt.STATE_SIZE
    assert len(job(body=b"x" * 100)) == fmt.job_record_size(b"default", b"x" * 100) == 187


def test_round_trip_and_clean_end() -> None:
    data = file_of(job(1, b"a\r\nb"), state(1), job(2, b"", b"t" * 200), pad=1000)
    records, reader = read(data)
    assert reader.error is None
    assert reader.end == len(data) - 1000
    (o1, s1, r1, t1, b1), (o2, s2, r2, t2, b2), (o3, s3, _r3, t3, b3) = records
    assert (o1, t1, b1, r1[fmt.R_KIND]) == (H, b"default", b"a\r\nb", fmt.JOB)
    assert fmt.fields(r1) == (1, *FIELDS[1:])
    assert (o2, s2, t2, b2, r2[fmt.R_KIND]) == (o1 + s1, 80, b"", b"", fmt.STATE)
    assert fmt.fields(r2) == (1, *FIELDS[1:4], 3, *FIELDS[5:8], COUNTS)
    assert (o3, t3, b3) == (o2 + 80, b"t" * 200, b"")
    assert o3 + s3 == reader.end


def test_encode_rejects_bad_tube_names() -> None:
    with pytest.raises(ValueError, match="tube name of 0 bytes"):
        fmt.encode_job(b"", b"", FIELDS)
    with pytest.raises(ValueError, match="tube name of 201 bytes"):
        fmt.encode_job(b"x" * 201, b"", FIELDS)


@pytest.mark.parametrize("cut", [1, 11, 12, 50, 79, 80, 90])
def test_torn_record_at_the_end(cut: int) -> None:
    good = job(1)
    torn = job(2, b"y" * 30)[:cut]
    data = file_of(good, torn)
    records, reader = read(data)
    assert [r[0] for r in records] == [H]
    assert reader.end == H + len(good)
    assert reader.error is not None and reader.error.offset == reader.end
    assert fmt.find_record(data, reader.error.offset + 1) is None


def test_torn_record_followed_by_zeros() -> None:
    data = file_of(job(1), job(2, b"y" * 30)[:40], pad=500)
    records, reader = read(data)
    assert len(records) == 1 and reader.error is not None


def test_flipped_bit_is_a_checksum_error_and_the_next_record_is_found() -> None:
    first, second, third = job(1), job(2, b"body two"), state(2)
    data = bytearray(file_of(first, second, third))
    data[H + len(first) + 40] ^= 0x10  # inside the second record's fields
    records, reader = read(bytes(data))
    assert len(records) == 1
    assert reader.error == fmt.BadRecord(H + len(first), "record checksum mismatch")
    assert fmt.find_record(bytes(data), reader.error.offset + 1) == H + len(first) + len(second)


def test_zeros_then_data_is_damage() -> None:
    data = file_of(job(1), bytes(200), job(2))
    records, reader = read(data)
    assert len(records) == 1
    assert reader.error is not None and "zeros where a record should start" in reader.error.reason
    assert fmt.find_record(data, reader.error.offset + 1) == H + len(job(1)) + 200


@pytest.mark.parametrize("seed", range(40))
def test_random_damage_never_raises_and_never_invents_records(seed: int) -> None:
    rng = random.Random(seed)
    originals = [
        job(i, bytes(rng.randrange(256) for _ in range(rng.randrange(60)))) if i % 3 else state(i)
        for i in range(1, 30)
    ]
    clean = file_of(*originals, pad=rng.randrange(300))
    data = bytearray(clean)
    for _ in range(rng.randrange(1, 5)):
        at = rng.randrange(fmt.HEADER_SIZE, len(data))
        if rng.random() < 0.5:
            data[at] ^= 1 << rng.randrange(8)
        else:
            del data[at:]
            break
    damaged = bytes(data)
    valid = {o for o, _, _, _, _ in fmt.RecordReader(clean)}
    pos = fmt.HEADER_SIZE
    while True:  # read, resync, read... as a salvage does
        reader = fmt.RecordReader(damaged, pos)
        for offset, size, _raw, _tube, _body in reader:
            assert (
                offset in valid and damaged[offset : offset + size] == clean[offset : offset + size]
            )
        if reader.error is None:
            break
        nxt = fmt.find_record(damaged, reader.error.offset + 1)
        if nxt is None:
            break
        assert nxt > reader.error.offset
        pos = nxt
