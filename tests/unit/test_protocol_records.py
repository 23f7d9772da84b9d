"""The codec's event classes behave as the frozen, slotted dataclasses they replaced.

``_record.Record`` stands in for ``@dataclass(frozen=True, slots=True)`` (cheaper to define at
start-up). Each event is compared here with a real frozen slotted dataclass of the same name and
fields: repr, equality, hash, immutability, slots, pickling, copying, pattern matching and the
``dataclasses`` functions.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from typing import Any

import pytest

from beanrouter import protocol as p
from beanrouter.protocol._record import Record

SAMPLES: list[Record] = [
    p.Put(1, 2, 3, b"body"),
    p.Use("a"),
    p.Watch("a"),
    p.Ignore("a"),
    p.StatsTube("a"),
    p.ReserveJob(7),
    p.Delete(7),
    p.Touch(7),
    p.Peek(7),
    p.KickJob(7),
    p.StatsJob(7),
    p.Release(7, 2, 3),
    p.Bury(7, 2),
    p.ReserveWithTimeout(-1),
    p.Kick(5),
    p.PauseTube("a", 3),
    p.Reserve(),
    p.PeekReady(),
    p.PeekDelayed(),
    p.PeekBuried(),
    p.Stats(),
    p.ListTubes(),
    p.ListTubeUsed(),
    p.ListTubesWatched(),
    p.Quit(),
    p.Word("DELETED"),
    p.ErrorReply("BAD_FORMAT"),
    p.Inserted(3),
    p.Buried(),
    p.Buried(4),
    p.Using("a"),
    p.Watching(2),
    p.Kicked(),
    p.Kicked(3),
    p.Reserved(1, b"job"),
    p.Found(1, b"job"),
    p.Ok(b"---\n"),
    p.Rejected(p.BAD_FORMAT),
    p.Rejected(p.JOB_TOO_BIG, "cmd-put", True),
    p.PutStarted(True),
]
BASES = {p.Command, p.Reply}


def values(record: Record) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in record.__match_args__)


def reference(record: Record) -> Any:
    """An instance of a real frozen slotted dataclass with ``record``'s name and fields."""
    cls: Any = type(record)
    spec = [(f.name, Any, dataclasses.field(default=f.default)) for f in dataclasses.fields(cls)]
    ref = dataclasses.make_dataclass(cls.__name__, spec, frozen=True, slots=True)
    ref.__qualname__ = cls.__qualname__
    return ref(*values(record))


def test_samples_cover_every_exported_event_class() -> None:
    exported = {
        obj
        for name in p.__all__
        if isinstance(obj := getattr(p, name), type) and issubclass(obj, Record)
    }
    assert exported - BASES == {type(s) for s in SAMPLES}


@pytest.mark.parametrize("record", SAMPLES, ids=repr)
def test_behaves_as_the_frozen_slotted_dataclass(record: Record) -> None:
    ref = reference(record)
    cls = type(record)
    assert repr(record) == repr(ref)
    assert hash(record) == hash(ref)
    same = cls(*values(record))
    assert record == same and not record != same  # noqa: SIM202 - __ne__ too
    assert record.__eq__(ref) is NotImplemented and record != ref
    assert list(inspect.signature(cls).parameters) == list(cls.__match_args__)
    assert cls.__match_args__ == type(ref).__match_args__
    assert not hasattr(record, "__dict__")
    for name in (*cls.__match_args__, "other"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, name, 1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(record, name)
    for clone in (pickle.loads(pickle.dumps(record)), copy.copy(record), copy.deepcopy(record)):
        assert type(clone) is cls and clone == record
    assert dataclasses.is_dataclass(record)
    assert [f.name for f in dataclasses.fields(record)] == list(cls.__match_args__)
    assert dataclasses.asdict(record) == dataclasses.asdict(ref)
    assert dataclasses.astuple(record) == dataclasses.astuple(ref)
    assert dataclasses.replace(record) == record


def test_different_classes_with_equal_fields_differ() -> None:
    assert p.Use("a") != p.Watch("a")  # type: ignore[comparison-overlap]
    assert p.Word("BAD_FORMAT") != p.ErrorReply("BAD_FORMAT")
    assert p.Reserved(1, b"x") != p.Found(1, b"x")  # type: ignore[comparison-overlap]
    assert len({p.Reserve(), p.Stats(), p.Quit(), p.Reserve()}) == 3


def test_the_bases_are_no_dataclasses_and_asking_them_changes_nothing() -> None:
    bases: list[Any] = [Record, p.Command, p.Reply]
    for base in bases:
        assert not dataclasses.is_dataclass(base)
        with pytest.raises(TypeError):
            dataclasses.fields(base)
    assert dataclasses.is_dataclass(p.Use) and dataclasses.is_dataclass(p.Watch)
    assert [f.name for f in dataclasses.fields(p.Watch)] == ["tube"]  # a subclass asked first
    assert [f.name for f in dataclasses.fields(p.Release)] == ["id", "priority", "delay"]


def test_defaults_replace_and_validation() -> None:
    assert dataclasses.fields(p.Buried)[0].default is None
    assert [f.default for f in dataclasses.fields(p.Rejected)][1:] == [None, False]
    assert dataclasses.fields(p.Put)[0].default is dataclasses.MISSING
    assert dataclasses.replace(p.Put(1, 2, 3, b"x"), ttr=9) == p.Put(1, 2, 9, b"x")
    with pytest.raises(p.LocalProtocolError):
        dataclasses.replace(p.Put(1, 2, 3, b"x"), ttr=-1)  # replace goes through __init__
    assert p.Put(priority=1, delay=2, ttr=3, body=b"x") == p.Put(1, 2, 3, b"x")
    with pytest.raises(TypeError):
        p.Put(1, 2, 3)  # type: ignore[call-arg]


def test_pattern_matching_by_position() -> None:
    match p.Put(1, 2, 3, b"x"):
        case p.Put(pri, delay, ttr, body):
            assert (pri, delay, ttr, body) == (1, 2, 3, b"x")
        case _:
            pytest.fail("no match")
    match p.Reserved(4, b"y"):
        case p.Found():
            pytest.fail("matched the wrong class")
        case p.Reserved(job_id, body):
            assert (job_id, body) == (4, b"y")
        case _:
            pytest.fail("no match")
