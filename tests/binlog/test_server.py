"""The asyncio shell with a binlog, in process: group commit, the fsync timer, a full disk.

A ``Watch`` wraps every transport write of the server and checks, at that moment, what the
fsync mode promises: with ``-f 0`` no reply leaves before every record so far is fsynced; in
every mode no reply leaves before its records were handed to the kernel.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from beanrouter.server.app import Server, ServerProtocol
from beanrouter.server.binlog.recover import load
from beanrouter.server.binlog.wal import Wal, default_allocate
from beanrouter.server.commit import GroupCommit
from beanrouter.server.engine import Engine


class Disk:
    """Injected allocate (can be full) and fsync (counted)."""

    def __init__(self) -> None:
        self.full = False
        self.syncs: list[float] = []

    def allocate(self, fd: int, size: int) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        default_allocate(fd, size)

    def fsync(self, fd: int) -> None:
        self.syncs.append(time.monotonic())  # the loop's clock


class Watch:
    """Checks each reply write against the Wal's state."""

    def __init__(self, wal: Wal, fsync_ms: int | None) -> None:
        self.wal = wal
        self.fsync_ms = fsync_ms
        self.writes = 0
        self.problems: list[str] = []

    def wrap(self, proto: ServerProtocol) -> None:
        transport = proto.transport
        assert transport is not None
        real = transport.write

        def write(data: bytes | bytearray | memoryview) -> None:
            self.writes += 1
            if self.wal.has_buffered:
                self.problems.append(f"reply before its records were written: {bytes(data)!r}")
            if self.fsync_ms == 0 and self.wal.unsynced:
                self.problems.append(f"reply before its records were synced: {bytes(data)!r}")
            real(data)

        transport.write = write  # type: ignore[method-assign]


Scenario = Callable[[int, Engine, Wal, Disk], Awaitable[None]]


def run(
    tmp_path: Path, fsync_ms: int | None, scenario: Scenario, file_size: int = 1 << 20
) -> Watch:
    """Serve on a loopback port with a binlog in ``tmp_path`` while ``scenario`` runs."""
    disk = Disk()
    engine = Engine()
    wal = Wal(
        str(tmp_path),
        file_size=file_size,
        fsync=fsync_ms is not None,
        allocate=disk.allocate,
        sync_file=disk.fsync,
        log=lambda m: None,
    )
    load(engine, wal)
    watch = Watch(wal, fsync_ms)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(engine, loop, GroupCommit(wal, loop, fsync_ms))

        class Watched(ServerProtocol):
            __slots__ = ()

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                watch.wrap(self)

        def factory() -> ServerProtocol:
            return Watched(server)

        listener = await loop.create_server(factory, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            await asyncio.wait_for(scenario(port, engine, wal, disk), 30)
        finally:
            listener.close()
            for proto in list(server.protocols):
                if proto.transport is not None:
                    proto.transport.abort()
            assert server.commit is not None
            server.commit.close()

    asyncio.run(main())
    assert watch.problems == []
    return watch


async def reply(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    words = line.split()
    if words and words[0] in (b"RESERVED", b"FOUND", b"OK"):
        line += await reader.readexactly(int(words[-1]) + 2)
    return line


def put(body: bytes, delay: int = 0) -> bytes:
    return b"put 0 %d 60 %d\r\n%s\r\n" % (delay, len(body), body)


def test_f0_one_fsync_covers_a_whole_read(tmp_path: Path) -> None:
    async def scenario(port: int, engine: Engine, wal: Wal, disk: Disk) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        disk.syncs.clear()
        writer.write(b"".join(put(b"job %d" % i) for i in range(200)))
        for i in range(200):
            assert await reply(reader) == b"INSERTED %d\r\n" % (i + 1)
        # 200 puts, a handful of reads: far fewer fsyncs than puts (beanstalkd: one per put)
        assert 1 <= len(disk.syncs) <= 10, len(disk.syncs)
        writer.close()

    watch = run(tmp_path, 0, scenario)
    assert watch.writes >= 1


def test_f0_woken_reserve_waits_for_the_sync(tmp_path: Path) -> None:
    async def scenario(port: int, engine: Engine, wal: Wal, disk: Disk) -> None:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"reserve\r\n")
        await asyncio.sleep(0.05)
        assert engine.waiting_ct == 1
        w2.write(put(b"for the worker"))
        assert await reply(r2) == b"INSERTED 1\r\n"
        assert await reply(r1) == b"RESERVED 1 14\r\nfor the worker\r\n"
        w1.close()
        w2.close()

    run(tmp_path, 0, scenario)  # Watch checks the RESERVED left after the sync


def test_f_ms_syncs_on_a_timer_and_replies_do_not_wait(tmp_path: Path) -> None:
    async def scenario(port: int, engine: Engine, wal: Wal, disk: Disk) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        disk.syncs.clear()
        started = loop.time()
        n = 0
        while loop.time() - started < 0.5:  # a steady trickle of puts for half a second
            writer.write(put(b"x"))
            await reply(reader)
            n += 1
        elapsed = loop.time() - started
        await asyncio.sleep(0.1)  # the last write is synced within 30 ms
        assert not wal.unsynced
        assert n > len(disk.syncs) >= 2
        assert len(disk.syncs) <= (elapsed + 0.1) / 0.030 + 2
        gaps = [b - a for a, b in zip(disk.syncs, disk.syncs[1:], strict=False)]
        assert min(gaps) >= 0.030 - 0.002  # at most one fsync per 30 ms
        writer.close()

    run(tmp_path, 30, scenario, file_size=64 << 20)  # no new file: its header's fsync


def test_never_fsync(tmp_path: Path) -> None:
    async def scenario(port: int, engine: Engine, wal: Wal, disk: Disk) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(put(b"j") for _ in range(50)))
        for _ in range(50):
            await reply(reader)
        await asyncio.sleep(0.05)
        writer.close()

    disk_syncs: list[float] = []

    def check_no_sync(port: int, engine: Engine, wal: Wal, disk: Disk) -> Awaitable[None]:
        disk_syncs.extend(disk.syncs)
        return scenario(port, engine, wal, disk)

    run(tmp_path, None, check_no_sync)
    assert disk_syncs == []


def test_disk_full_over_the_wire(tmp_path: Path) -> None:
    async def scenario(port: int, engine: Engine, wal: Wal, disk: Disk) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        disk.full = True
        ids = []
        for _ in range(200):
            writer.write(put(b"y" * 100))
            line = await reply(reader)
            if line == b"OUT_OF_MEMORY\r\n":
                break
            ids.append(int(line.split()[1]))
        else:
            raise AssertionError("the disk never filled up")
        assert ids  # the current file took some
        writer.write(b"stats\r\n")
        assert (await reply(reader)).startswith(b"OK ")  # the server lives
        writer.write(b"".join(b"delete %d\r\n" % i for i in ids))
        for _ in ids:
            assert await reply(reader) == b"DELETED\r\n"  # deletes still work
        disk.full = False
        writer.write(put(b"room again"))
        assert (await reply(reader)).startswith(b"INSERTED ")
        writer.close()

    run(tmp_path, 0, scenario, file_size=4096)


def test_records_reach_the_disk_in_one_write_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = os.pwrite

    def pwrite(fd: int, data: bytes, at: int) -> int:
        writes.append(len(data))
        return real(fd, data, at)

    async def scenario(port: int, engine: Engine, wal: Wal, disk: Disk) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        monkeypatch.setattr(os, "pwrite", pwrite)
        writer.write(b"".join(put(b"j") for _ in range(100)))
        for _ in range(100):
            await reply(reader)
        assert 1 <= len(writes) <= 10  # one per read batch, not one per record
        assert sum(writes) == 100 * (80 + len("default") + 1)
        writer.close()

    run(tmp_path, 50, scenario)


def test_a_failing_fsync_stops_the_server_instead_of_acknowledging(tmp_path: Path) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    engine = Engine()
    wal = Wal(str(tmp_path), file_size=1 << 20, fsync=True, sync_file=lambda fd: None)
    load(engine, wal)
    wal.sync_file = broken
    failures: list[BaseException] = []
    loop = asyncio.new_event_loop()
    try:
        commit = GroupCommit(wal, loop, 0, on_failure=failures.append)
        engine.put(engine.connect(), 0, 0, 60, b"x")
        commit.end_of_batch()
    finally:
        loop.close()
    assert len(failures) == 1
    assert "binlog fsync failed" in str(failures[0]) and "Input/output error" in str(failures[0])
