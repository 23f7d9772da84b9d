"""Recovery: read a binlog directory back at start-up (beanstalkd's replay), judging any damage.

``read_binlog`` reads every ``beanrouter-binlog.N`` (and format-1 ``binlog.N``) in order of N and
folds the records into the jobs alive at the end, as beanstalkd does: a JOB record makes or
replaces a job (a migrated job's newer copy), a STATE record updates a known job or deletes it
(state 0), a STATE record for an unknown job is ignored (its JOB record was in a file already
deleted, so the job was deleted or migrated).
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

Format 1: files of the first format are named ``binlog.N``, as beanstalkd's, and beanstalkd
started on such a directory deletes them (docs/server.md). When ``read_binlog`` finds any with
records (``Recovered.legacy``), ``load`` rewrites every job into the new (format 2,
``beanrouter-binlog.N``) file, fsyncs it whatever the fsync mode, and only then lets the old files
go: a crash in between leaves both, and the next start does the same again (a job's newer JOB
record replaces the older one). A ``binlog.N`` written by beanstalkd is refused, touched by
nothing.
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
from .wal import LEGACY_PREFIX, Wal, WalError, file_name

if TYPE_CHECKING:
    from ..engine import Engine, SavedJob

__all__ = ["Recovered", "RecoveryError", "load", "read_binlog"]

_FILE_RE = re.compile(r"(beanrouter-binlog\.|binlog\.)([0-9]+)")


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
    legacy: list[str] = field(default_factory=list)
    """Format-1 files (``binlog.N``) kept: ``load`` converts their jobs and they go."""


# Fold slots: tube name, body, raw record (the newest), file of the JOB record, its size.
_TUBE, _BODY, _RAW, _FILE, _SIZE = range(5)


def _list_files(directory: str) -> list[tuple[int, str]]:
    """(N, path) of every binlog file, by N; both names of one N is an error."""
    found: dict[int, str] = {}
    for name in os.listdir(directory):
        m = _FILE_RE.fullmatch(name)
        if m is None:
            continue
        index = int(m.group(2))
        path = os.path.join(directory, name)
        if index in found:
            raise RecoveryError(
                f"{directory}: both {os.path.basename(found[index])} and {name}: two files "
                "with one number; move away the one that does not belong (see docs/server.md)"
            )
        found[index] = path
    return sorted(found.items())


def _is_legacy(path: str) -> bool:
    return os.path.basename(path).startswith(LEGACY_PREFIX)


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
        start = fmt.header_size_guess(data)
        try:
            header = fmt.decode_header(data)
        except fmt.BadHeader as exc:
            if exc.blank and not re.search(rb"[^\x00]", data):
                infos.append(info)  # made, never written: no records, deleted below
                continue
            if exc.foreign:
                ours = [os.path.basename(p) for _, p in paths if not _is_legacy(p)]
                if ours and exc.beanstalkd:  # beanstalkd was run here: its files next to ours
                    raise RecoveryError(
                        f"{path}: a beanstalkd binlog (its format {exc.beanstalkd}) next to "
                        f"beanrouter's own files ({', '.join(ours)}), which beanstalkd leaves "
                        f"alone: beanstalkd was run on this directory. To start beanrouter "
                        f"server on its jobs, move beanstalkd's {LEGACY_PREFIX}N files elsewhere "
                        "(beanstalkd can be run on them there); see docs/server.md"
                    ) from None
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
            start = header.size
            next_id = max(next_id, header.next_id)
            if header.index != index:
                say(f"{path}: header says file {header.index}; reading it as file {index}")
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
        legacy=[info.path for info in kept if _is_legacy(info.path)],
    )


def load(
    engine: Engine,
    wal: Wal,
    *,
    salvage: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> Recovered:
    """Start-up: read ``wal``'s directory into ``engine``, then open the Wal for writing.

    After a salvage, or when format-1 files were read, every job is rewritten into the new file
    and the old files go.

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
        wal.adopt(info.index, info.size, info.refs, info.ids, info.alive, info.path)
    wal.attach(engine)
    wal.start(found.next_index, len(found.jobs))
    if found.salvaged or found.legacy:
        why = "salvaged" if found.salvaged else "format-1"
        first = wal.current_index
        for job in engine.jobs():
            if not wal.rewrite(job):
                raise WalError(f"no disk space in {wal.directory} to rewrite the {why} jobs")
        # The old files may be the only copy on disk of these jobs: the new one is synced first.
        wal.sync(force=True)
        last = wal.current_index
        into = f"{len(found.jobs)} jobs rewritten into {file_name(first)}"
        if last != first:
            into += f" to {file_name(last)}"
        if found.salvaged:
            kept = ", ".join(p + ".damaged" for p in found.damaged)
            log(f"salvage: {into}; damaged files kept as {kept}")
        else:
            names = ", ".join(os.path.basename(p) for p in found.legacy)
            log(
                f"{wal.directory}: format-1 binlog files ({names}, named as beanstalkd's, which "
                f"beanstalkd would delete): {into}, format 2; the old files are gone"
            )
    return found


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
