"""Recovery: read a binlog directory back at start-up (beanstalkd's replay), judging any damage.

``read_binlog`` reads every ``binlog.N`` in order and folds the records into the jobs alive at
the end, as beanstalkd does: a JOB record makes or replaces a job (a migrated job's newer copy),
a STATE record updates a known job or deletes it (state 0), a STATE record for an unknown job
is ignored (its JOB record was in a file already deleted, so the job was deleted or migrated).
The restored state: reserved jobs are ready, buried ones keep their FIFO order (by their stamp,
where beanstalkd uses first-record order), delayed ones keep their absolute deadline, the next
id is above every id and every file header's next id (so ids are never reused, even when every
file was deleted). list-tubes follows beanstalkd's replay order: a tube is made when the first
job using it is read and goes when its last job is deleted, with ``ms_remove``'s hole filling.

Damage, found by the per-record checksum:
- A bad record with no valid record after it in its file, in the newest file that holds records,
  is a torn write (a crash mid-write): the file is cut there, a message names file and offset,
  and the server starts with everything before it.
- Any other damage (a bad record followed by good ones, a torn tail in an older file, a damaged
  file header) stops start-up with ``RecoveryError`` naming file and offset, unless ``salvage``:
  then the damaged bytes are skipped (each skip is logged), the damaged files are kept as
  ``binlog.N.damaged`` (hard links) and ``load`` rewrites every recovered job into the new file,
  so the damaged files leave the log.
- Files without records (spares made ahead of need, or a file whose header was never written)
  are deleted; trailing zeros (preallocated space) are cut off.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..job import INVALID, READY, RESERVED
from ..tube import ms_remove
from . import format as fmt
from .format import JOB, R_ID, R_KIND, R_STATE
from .wal import Wal, WalError, file_name

if TYPE_CHECKING:
    from ..engine import Engine, SavedJob

__all__ = ["Recovered", "RecoveryError", "load", "read_binlog"]

_FILE_RE = re.compile(r"binlog\.([0-9]+)")


class RecoveryError(Exception):
    """The binlog cannot be read back safely; the message names the file and offset."""


@dataclass
class FileInfo:
    """One file kept after reading: what the Wal needs to take it over."""

    index: int
    path: str
    size: int
    records: int = 0
    refs: int = 0
    ids: list[int] = field(default_factory=list)
    alive: int = 0


@dataclass
class Recovered:
    """What ``read_binlog`` found."""

    files: list[FileInfo]
    jobs: list[SavedJob]
    tubes: list[str]
    next_id: int
    next_index: int
    records: int
    salvaged: bool
    damaged: list[str]
    messages: list[str]


# Fold slots: tube name, body, raw record (the newest), file of the JOB record, its size.
_TUBE, _BODY, _RAW, _FILE, _SIZE = range(5)


def _list_files(directory: str) -> list[tuple[int, str]]:
    found = []
    for name in os.listdir(directory):
        m = _FILE_RE.fullmatch(name)
        if m is not None:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    found.sort()
    return found


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_binlog(
    directory: str,
    *,
    salvage: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> Recovered:
    """Read and judge every file of ``directory``; cut torn tails and drop empty files.

    Raises:
        RecoveryError: damage that is not a torn tail (and ``salvage`` is off), a foreign or
            unreadable file.
    """
    messages: list[str] = []

    def say(message: str) -> None:
        messages.append(message)
        log(message)

    jobs: dict[int, list[Any]] = {}
    tube_list = [b"default"]
    tube_refs: dict[bytes, int] = {b"default": 1}
    max_id = 0
    next_id = 1
    records = 0
    infos: list[FileInfo] = []
    ends: dict[int, int] = {}  # index -> where its good records end (cut there)
    tails: list[tuple[FileInfo, fmt.BadRecord]] = []
    damaged: list[str] = []
    salvaged = False
    paths = _list_files(directory)
    next_index = paths[-1][0] + 1 if paths else 1

    for index, path in paths:
        try:
            data = _read(path)
        except OSError as exc:
            raise RecoveryError(f"{path}: cannot read: {exc.strerror}") from exc
        info = FileInfo(index, path, len(data))
        start = fmt.HEADER_SIZE
        try:
            header = fmt.decode_header(data)
        except fmt.BadHeader as exc:
            if exc.blank and not re.search(rb"[^\x00]", data):
                infos.append(info)  # made, never written: no records, deleted below
                continue
            if exc.foreign:
                raise RecoveryError(f"{path}: {exc.reason}") from None
            if not salvage:
                raise RecoveryError(
                    f"{path}: offset 0: {exc.reason}; refusing to start "
                    "(--salvage reads the records that can be read: see docs/server.md)"
                ) from None
            say(f"{path}: offset 0: {exc.reason}; salvaging its records")
            damaged.append(path)
            salvaged = True
        else:
            next_id = max(next_id, header.next_id)
            if header.index != index:
                say(f"{path}: header says binlog.{header.index}; reading it as {file_name(index)}")
        pos = start
        while True:
            reader = fmt.RecordReader(data, pos)
            seen = 0
            for _off, size, raw, tube, body in reader:
                seen += 1
                job_id = raw[R_ID]
                if job_id > max_id:
                    max_id = job_id
                j = jobs.get(job_id)
                if raw[R_KIND] == JOB:
                    if j is None:
                        if raw[R_STATE] == INVALID:
                            continue
                        refs = tube_refs.get(tube)
                        if refs:
                            tube_refs[tube] = refs + 1
                        else:
                            tube_list.append(tube)
                            tube_refs[tube] = 1
                        jobs[job_id] = [tube, body, raw, index, size]
                        continue
                    j[_BODY] = body
                    j[_FILE] = index
                    j[_SIZE] = size
                elif j is None:
                    continue  # its JOB record was in a deleted file: deleted or migrated
                if raw[R_STATE] == INVALID:
                    del jobs[job_id]
                    name = j[_TUBE]
                    left = tube_refs[name] - 1
                    tube_refs[name] = left
                    if not left:
                        ms_remove(tube_list, name)
                else:
                    j[_RAW] = raw
            records += seen
            info.records += seen
            error = reader.error
            if error is None:
                ends[index] = reader.end
                break
            resume = fmt.find_record(data, error.offset + 1)
            if resume is None:
                ends[index] = error.offset
                tails.append((info, error))
                break
            where = f"{path}: offset {error.offset}: {error.reason}"
            if not salvage:
                raise RecoveryError(
                    f"{where}; valid records follow at offset {resume}, so this is damage, not "
                    "a torn write; refusing to start (--salvage skips the damaged bytes: see "
                    "docs/server.md)"
                )
            say(f"{where}; skipping {resume - error.offset} bytes to offset {resume}")
            if path not in damaged:
                damaged.append(path)
            salvaged = True
            pos = resume
        infos.append(info)

    # Torn tails: fine in the newest file that has records; damage anywhere else.
    newest = max((i.index for i in infos if i.records), default=0)
    for info, error in tails:
        where = f"{info.path}: offset {error.offset}: {error.reason}"
        if info.index >= newest:
            say(
                f"{where}: a torn write at the end of the log; discarding its "
                f"{info.size - error.offset} bytes and starting with the records before it"
            )
        elif not salvage:
            raise RecoveryError(
                f"{where}; newer files hold records, so this is damage, not a torn write at "
                "the end of the log; refusing to start (--salvage skips the damaged bytes: "
                "see docs/server.md)"
            )
        else:
            say(f"{where}; skipping the rest of the file")
            if info.path not in damaged:
                damaged.append(info.path)
            salvaged = True

    # Keep evidence of salvaged files, cut torn tails and zero padding, drop empty files.
    for path in damaged:
        keep = path + ".damaged"
        if not os.path.exists(keep):
            os.link(path, keep)
    kept: list[FileInfo] = []
    for info in infos:
        if not info.records:
            _unlink(info.path)
            continue
        end = ends.get(info.index, info.size)
        if end < info.size and info.path not in damaged:
            os.truncate(info.path, end)
            info.size = end
        kept.append(info)

    names = {raw: raw.decode("ascii", "replace") for raw in tube_refs}
    ids: dict[int, list[int]] = {info.index: info.ids for info in kept}
    alive = dict.fromkeys(ids, 0)
    saved: list[SavedJob] = []
    append = saved.append
    from_bytes = int.from_bytes
    zero = bytes(20)
    for tube, body, raw, index, size in jobs.values():
        (_, _, _, _, _, job_id, pri, delay, ttr, state, created, deadline, bury_seq, packed) = raw
        if state == RESERVED:
            state = READY  # reserve is not logged: a reserved job comes back ready
        ids[index].append(job_id)
        alive[index] += size
        counts = 0 if packed == zero else from_bytes(packed, "little")
        append(
            (
                job_id,
                names[tube],
                pri,
                delay,
                ttr,
                body,
                state,
                created,
                deadline,
                counts,
                bury_seq,
                index,
            )
        )
    for info in kept:
        info.refs = len(info.ids)
        info.alive = alive[info.index]
    tubes = [names[name] for name in tube_list if name != b"default"]
    return Recovered(
        files=kept,
        jobs=saved,
        tubes=tubes,
        next_id=max(next_id, max_id + 1),
        next_index=next_index,
        records=records,
        salvaged=salvaged,
        damaged=damaged,
        messages=messages,
    )


def load(
    engine: Engine,
    wal: Wal,
    *,
    salvage: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> Recovered:
    """Start-up: read ``wal``'s directory into ``engine``, then open the Wal for writing.

    After a salvage every job is rewritten into the new file and the old files go.

    Raises:
        RecoveryError: see ``read_binlog``.
        WalError: no room to reopen the log.
    """
    collecting = gc.isenabled()
    gc.disable()  # a million new objects would trigger collections that find nothing to free
    try:
        found = read_binlog(wal.directory, salvage=salvage, log=log)
        engine.restore(found.tubes, found.jobs)
    finally:
        if collecting:
            gc.enable()
    engine.next_id = max(engine.next_id, found.next_id)
    for info in found.files:
        wal.adopt(info.index, info.size, info.refs, info.ids, info.alive)
    wal.attach(engine)
    wal.start(found.next_index, len(found.jobs))
    if found.salvaged:
        for job in engine.jobs():
            if not wal.rewrite(job):
                raise WalError(f"no disk space in {wal.directory} to rewrite the salvaged jobs")
        wal.sync()
        log(
            f"salvage: {len(found.jobs)} jobs rewritten into {file_name(wal.current_index)}; "
            f"damaged files kept as {', '.join(p + '.damaged' for p in found.damaged)}"
        )
    return found


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
