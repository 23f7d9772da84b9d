"""Binlog format: the bytes of one binlog file, encoded and decoded without any I/O.

A file ``beanrouter-binlog.N`` is a header followed by records, then zeros (preallocated, never
written) or the end of the file. All integers are little-endian.

Header, format 2, 104 bytes::

    0   80s ``MAGIC``: a line of ASCII text naming beanrouter, the format and where it is
            described ("beanrouter binlog, format 2 (not beanstalkd's): see docs/server.md",
            padded with spaces to 79 bytes, then a newline), so that ``head -1`` on a file says
            what it is, and beanstalkd's "unknown version" would show "bean" (1851876706)
    80  u32 file index N (the N of the file's name)
    84  u64 next job id when the file was made (ids are never reused across restarts)
    92  i64 creation time, ns since the Unix epoch
    100 u32 CRC-32 (zlib.crc32) of bytes 0..99

Format 1 (files named ``binlog.N``, beanstalkd's own names, written until format 2 came; still
read, and converted at start-up) had the same records after a 36-byte header::

    0   8s  magic b"BRBINLOG"
    8   u32 format version (1)
    12  u32 file index N
    16  u64 next job id when the file was made
    24  i64 creation time, ns since the Unix epoch
    32  u32 CRC-32 of bytes 0..31

Record: a 12-byte head and a payload of ``length`` bytes::

    0   u32 CRC-32 of every byte after this field: head bytes 4..11 and the payload
    4   u16 magic 0xB10C (lets a scan find the next record after damage)
    6   u8  kind: 1 = JOB (full: job fields, tube name, body), 2 = STATE (job fields only)
    7   u8  tube name length (1..200 for JOB, 0 for STATE)
    8   u32 payload length
    12  payload: job fields (68 bytes), then for JOB the tube name and the body

Job fields, 68 bytes: u64 id, u32 pri, u32 delay (s), u32 ttr (s), u8 state (0 deleted,
1 ready, 2 reserved, 3 buried, 4 delayed, as in beanstalkd), 3 zero bytes, i64 created_at (ns),
i64 deadline_at (ns; a delayed job's absolute due time), u64 bury_seq (orders the buried FIFO),
then the five u32 counters reserves, timeouts, releases, buries, kicks.

A STATE record is always ``STATE_SIZE`` (80) bytes: the space reserved for a job's later delete.

Reading: ``RecordReader`` yields records until the data ends (only zeros, or nothing, left) or a
record is bad; then ``end`` is where reading stopped and ``error`` says why (``None``: clean end).
``find_record`` finds the next offset where a valid record starts, to tell a torn tail (nothing
valid after the damage) from damage in the middle. Readers for each format version live in
``READERS`` so files written by an older version stay readable.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "HEADER_SIZE",
    "HEADER_SIZE_V1",
    "JOB",
    "JOB_FIXED_SIZE",
    "MAGIC",
    "MAGIC_V1",
    "RECORD_HEAD_SIZE",
    "STATE",
    "STATE_SIZE",
    "VERSION",
    "BadHeader",
    "BadRecord",
    "FileHeader",
    "Record",
    "RecordReader",
    "decode_header",
    "encode_header",
    "encode_job",
    "encode_state",
    "fields",
    "find_record",
    "job_record",
    "job_record_size",
    "state_record",
]

MAGIC_PREFIX: Final = b"beanrouter binlog, format "
MAGIC: Final = (MAGIC_PREFIX + b"2 (not beanstalkd's): see docs/server.md").ljust(79) + b"\n"
"""The first 80 bytes of a format-2 file (see the module docstring)."""
MAGIC_V1: Final = b"BRBINLOG"
VERSION: Final = 2
"""The format written; ``READERS`` lists those read."""
RECORD_MAGIC: Final = 0xB10C
JOB: Final = 1
STATE: Final = 2
MAX_NAME: Final = 200
MAX_STATE: Final = 4  # DELAYED

_HEADER = struct.Struct("<80sIQq")
_HEADER_V1 = struct.Struct("<8sIIQq")
_HEADER_CRC = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size + _HEADER_CRC.size  # 104
HEADER_SIZE_V1: Final = _HEADER_V1.size + _HEADER_CRC.size  # 36

# crc, magic, kind, name length, payload length, then the job fields
_RECORD = struct.Struct("<IHBBIQIIIB3xqqQ20s")
_HEAD = struct.Struct("<IHBBI")
_TAIL = struct.Struct("<HBBIQIIIB3xqqQ20s")  # the record after its CRC
_NO_COUNTS: Final = bytes(20)
RECORD_HEAD_SIZE: Final = _HEAD.size  # 12
JOB_FIXED_SIZE: Final = _RECORD.size - _HEAD.size  # 68
STATE_SIZE: Final = _RECORD.size  # 80
_MAGIC_BYTES: Final = struct.pack("<H", RECORD_MAGIC)
_NONZERO = re.compile(rb"[^\x00]")

Fields: TypeAlias = tuple[int, int, int, int, int, int, int, int, int]
"""id, pri, delay, ttr, state, created_at, deadline_at, bury_seq, counts (five u32 packed as in
``Job.counts``)."""


class BadHeader(Exception):
    """A file header is missing, damaged, or of an unknown format; ``reason`` says which."""

    def __init__(
        self, reason: str, *, blank: bool = False, foreign: bool = False, beanstalkd: int = 0
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.blank = blank  # the file holds nothing but zeros (or nothing at all)
        self.foreign = foreign  # another program's file (e.g. beanstalkd's own binlog)
        self.beanstalkd = beanstalkd  # beanstalkd's format number if it is beanstalkd's


@dataclass(frozen=True, slots=True)
class BadRecord:
    """Why reading stopped at ``offset`` before the data ended."""

    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class FileHeader:
    version: int
    index: int
    next_id: int
    created_ns: int
    size: int = HEADER_SIZE
    """Bytes the header takes: the records start there."""


RawRecord: TypeAlias = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, bytes]
"""A record's head and job fields as unpacked: crc, magic, kind, name length, payload length,
id, pri, delay, ttr, state, created_at, deadline_at, bury_seq, counters (20 bytes); see R_*."""
R_CRC: Final = 0
R_MAGIC: Final = 1
R_KIND: Final = 2
R_NAME_LEN: Final = 3
R_LENGTH: Final = 4
R_ID: Final = 5
R_PRI: Final = 6
R_DELAY: Final = 7
R_TTR: Final = 8
R_STATE: Final = 9
R_CREATED: Final = 10
R_DEADLINE: Final = 11
R_BURY_SEQ: Final = 12
R_COUNTS: Final = 13
Record: TypeAlias = tuple[int, int, RawRecord, bytes, bytes]
"""One decoded record: (offset, size, raw, tube name, body); name and body are empty for STATE
records. ``fields(raw)`` gives the job fields."""


# -- header ----------------------------------------------------------------------------------


def encode_header(index: int, next_id: int, created_ns: int, version: int = VERSION) -> bytes:
    """The header of file N = ``index``, in format ``version`` (2; 1 to make old files)."""
    if version == 1:
        head = _HEADER_V1.pack(MAGIC_V1, 1, index, next_id, created_ns)
    elif version == 2:
        head = _HEADER.pack(MAGIC, index, next_id, created_ns)
    else:
        raise ValueError(f"no binlog format {version}")
    return head + _HEADER_CRC.pack(zlib.crc32(head))


def decode_header(data: bytes | memoryview) -> FileHeader:
    """Parse the header at the start of ``data`` (format 2, or format 1).

    Raises:
        BadHeader: too short, all zeros (``blank``), another program's file (``foreign``: a
            beanstalkd binlog says so and what to do), bad CRC, or a format this code cannot
            read.
    """
    head = bytes(data[:HEADER_SIZE])
    if not _NONZERO.search(head):
        raise BadHeader("empty file header (all zeros)", blank=True)
    if head.startswith(MAGIC_PREFIX) or MAGIC.startswith(head):
        if head[: len(MAGIC)] != MAGIC[: len(head)]:
            line = head.split(b"\n", 1)[0].decode("ascii", "replace").rstrip()
            raise BadHeader(f"{line!r}: not a format this server reads ({sorted(READERS)})")
        struct_, version = _HEADER, 2
    elif head.startswith(MAGIC_V1) or MAGIC_V1.startswith(head):
        struct_, version = _HEADER_V1, 1
    elif len(head) >= 4:
        (word,) = struct.unpack_from("<i", head)
        if word in (5, 7):
            raise BadHeader(
                f"a beanstalkd binlog (its format {word}), not a beanrouter one; the formats "
                "are not interchangeable: run beanstalkd on this directory, or give beanrouter "
                "server a directory of its own (see docs/server.md)",
                foreign=True,
                beanstalkd=word,
            )
        raise BadHeader("not a beanrouter binlog file (bad magic)", foreign=True)
    else:
        raise BadHeader(f"file header cut short ({len(head)} bytes)")
    size = struct_.size + _HEADER_CRC.size
    if len(head) < size:
        raise BadHeader(f"file header cut short ({len(head)} of {size} bytes)")
    (crc,) = _HEADER_CRC.unpack_from(head, struct_.size)
    if crc != zlib.crc32(head[: struct_.size]):
        raise BadHeader("file header checksum mismatch")
    if version == 1:
        _, version, index, next_id, created = _HEADER_V1.unpack_from(head)
        if version not in READERS:
            raise BadHeader(
                f"binlog format version {version} (this server reads {sorted(READERS)})"
            )
    else:
        _, index, next_id, created = _HEADER.unpack_from(head)
    return FileHeader(version, index, next_id, created, size)


def header_size_guess(data: bytes) -> int:
    """Where the records of a file with a damaged header probably start (for a salvage)."""
    return HEADER_SIZE_V1 if data.startswith(MAGIC_V1) else HEADER_SIZE


# -- records ---------------------------------------------------------------------------------


def job_record_size(tube: bytes, body: bytes) -> int:
    """Bytes taken by a JOB record with this tube name and body."""
    return STATE_SIZE + len(tube) + len(body)


def job_record(
    tube: bytes,
    body: bytes,
    job_id: int,
    pri: int,
    delay: int,
    ttr: int,
    state: int,
    created: int,
    deadline: int,
    bury_seq: int,
    counts: int,
) -> bytes:
    """``encode_job`` with the fields as arguments: the put path's encoder (no checks)."""
    tail = (
        _TAIL.pack(
            RECORD_MAGIC,
            JOB,
            len(tube),
            JOB_FIXED_SIZE + len(tube) + len(body),
            job_id,
            pri,
            delay,
            ttr,
            state,
            created,
            deadline,
            bury_seq,
            _NO_COUNTS if not counts else counts.to_bytes(20, "little"),
        )
        + tube
        + body
    )
    return _HEADER_CRC.pack(zlib.crc32(tail)) + tail


def state_record(
    job_id: int,
    pri: int,
    delay: int,
    ttr: int,
    state: int,
    created: int,
    deadline: int,
    bury_seq: int,
    counts: int,
) -> bytes:
    """``encode_state`` with the fields as arguments."""
    tail = _TAIL.pack(
        RECORD_MAGIC,
        STATE,
        0,
        JOB_FIXED_SIZE,
        job_id,
        pri,
        delay,
        ttr,
        state,
        created,
        deadline,
        bury_seq,
        _NO_COUNTS if not counts else counts.to_bytes(20, "little"),
    )
    return _HEADER_CRC.pack(zlib.crc32(tail)) + tail


def encode_job(tube: bytes, body: bytes, fields: Fields) -> bytes:
    """A JOB record: everything needed to recreate the job."""
    if not 0 < len(tube) <= MAX_NAME:
        raise ValueError(f"tube name of {len(tube)} bytes")
    return job_record(tube, body, *fields)


def encode_state(fields: Fields) -> bytes:
    """A STATE record (``STATE_SIZE`` bytes): the job's fields after a change or a delete."""
    return state_record(*fields)


def _check(data: bytes, pos: int, end: int) -> str | None:
    """Why the record at ``pos`` is not valid (None if it is)."""
    if end - pos < STATE_SIZE:
        return f"record cut short: {end - pos} bytes left, a record takes at least {STATE_SIZE}"
    crc, magic, kind, name_len, length = _HEAD.unpack_from(data, pos)
    if magic != RECORD_MAGIC:
        return f"bad record magic 0x{magic:04x}"
    if kind == STATE:
        if length != JOB_FIXED_SIZE or name_len:
            return f"bad STATE record length {length}"
    elif kind == JOB:
        if not 0 < name_len <= MAX_NAME or length < JOB_FIXED_SIZE + name_len:
            return f"bad JOB record (name length {name_len}, length {length})"
    else:
        return f"unknown record kind {kind}"
    stop = pos + RECORD_HEAD_SIZE + length
    if stop > end:
        return f"record of {length} bytes runs past the end of the data ({end - pos - 12} left)"
    if zlib.crc32(data[pos + 4 : stop]) != crc:
        return "record checksum mismatch"
    state = data[pos + 32]
    if state > MAX_STATE:
        return f"bad job state {state}"
    return None


class RecordReader:
    """Iterate over the records of one file's data (formats 1 and 2), from ``start``.

    Yields ``Record`` tuples. After iteration, ``end`` is the offset where reading stopped: the
    end of the last good record. ``error`` is None when only zeros (or nothing) follow, else a
    ``BadRecord``. Replay reads millions of records, hence the plain tuples and the one long
    test per record.
    """

    def __init__(self, data: bytes, start: int = HEADER_SIZE) -> None:
        self.data = data
        self.start = start
        self.end = start
        self.error: BadRecord | None = None

    def __iter__(self) -> Iterator[Record]:
        data = self.data
        size = len(data)
        pos = self.start
        unpack = _RECORD.unpack_from
        crc32 = zlib.crc32
        mv = memoryview(data)
        last = size - STATE_SIZE
        while pos <= last:
            raw = unpack(data, pos)
            stop = pos + RECORD_HEAD_SIZE + raw[4]
            kind = raw[2]
            if not (
                raw[1] == RECORD_MAGIC
                and stop <= size
                and raw[9] <= MAX_STATE
                and (
                    (kind == STATE and stop - pos == STATE_SIZE and not raw[3])
                    or (
                        kind == JOB and 0 < raw[3] <= MAX_NAME and stop - pos >= STATE_SIZE + raw[3]
                    )
                )
                and crc32(mv[pos + 4 : stop]) == raw[0]
            ):
                break
            if kind == JOB:
                body_at = pos + STATE_SIZE + raw[3]
                yield (pos, stop - pos, raw, data[pos + STATE_SIZE : body_at], data[body_at:stop])
            else:
                yield (pos, STATE_SIZE, raw, b"", b"")
            pos = stop
            self.end = pos
        # Not a good record (or too little left for one): the clean end (zeros) or damage.
        if data.count(0, pos) == size - pos:
            return
        nonzero = _NONZERO.search(data, pos)
        first = nonzero.start() if nonzero is not None else size
        if first >= pos + RECORD_HEAD_SIZE:
            reason = f"zeros where a record should start, then data at {first}"
        else:
            reason = _check(data, pos, size) or "unreadable record"
        self.error = BadRecord(pos, reason)


def fields(raw: RawRecord) -> Fields:
    """The job fields of a record's raw tuple (``Record[2]``), counters as one packed int."""
    return (
        raw[R_ID],
        raw[R_PRI],
        raw[R_DELAY],
        raw[R_TTR],
        raw[R_STATE],
        raw[R_CREATED],
        raw[R_DEADLINE],
        raw[R_BURY_SEQ],
        int.from_bytes(raw[R_COUNTS], "little"),
    )


def find_record(data: bytes, start: int) -> int | None:
    """The offset of the first valid record at or after ``start``, or None."""
    end = len(data)
    pos = start
    buf = data
    while True:
        at = buf.find(_MAGIC_BYTES, pos + 4 if pos + 4 <= end else end)
        if at < 0:
            return None
        candidate = at - 4
        if candidate >= start and _check(buf, candidate, end) is None:
            return candidate
        pos = candidate + 1


# Readers by format version (a new version adds its reader; old files stay readable). Format 2
# changed the header only.
READERS: Final = {1: RecordReader, 2: RecordReader}
