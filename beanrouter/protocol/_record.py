"""``Record``: the base of the protocol's event classes, a cheap stand-in for a frozen dataclass.

The events used to be ``@dataclass(frozen=True, slots=True)`` classes. Building about forty of
them (generating and compiling their methods, then making each class a second time for its
slots) was a third of the bundled server's start-up before its first reply. A record class
annotates its fields, lists them as ``__match_args__`` (and as ``__slots__`` where they are
defined), writes its ``__init__`` by hand, is decorated ``@record(frozen=True)`` (see
``record``), and inherits from ``Record`` what the dataclass generated:

- ``repr()`` as a dataclass's (``Put(priority=0, delay=0, ttr=60, body=b'x')``);
- ``==`` and ``hash()`` over the fields, between instances of the same class only;
- immutability: assigning or deleting an attribute raises ``dataclasses.FrozenInstanceError``;
- ``match`` by position, pickling and copying;
- ``dataclasses.fields()``, ``replace()``, ``asdict()`` and ``is_dataclass()`` keep working on
  the decorated classes (and not on the bases, ``Command`` and ``Reply``, as before):
  ``__dataclass_fields__`` is computed on first use (from ``__match_args__`` and the defaults
  of ``__init__``), which imports ``dataclasses`` only then.

Standard library only, and nothing imported at import time.
"""

from __future__ import annotations

TYPE_CHECKING = False  # ``typing`` costs start-up time; type checkers take this name as true
if TYPE_CHECKING:
    from dataclasses import Field
    from dataclasses import dataclass as record
    from typing import Any

__all__ = ["Record", "record"]

_set = object.__setattr__

if not TYPE_CHECKING:

    def record(**options):
        """``@record(frozen=True)`` on each record class: at run time it only gives the class
        a ``__dataclass_fields__`` (the ``dataclasses`` functions then take it for one). Type
        checkers see ``dataclasses.dataclass`` here instead, so to them the classes are the
        frozen dataclasses they behave as (read-only fields, ``__init__`` checked against the
        fields, equality between unrelated classes flagged, ``dataclasses.replace``
        accepted)."""
        return _mark


def _mark(cls: type) -> type:
    cls.__dataclass_fields__ = _FIELDS  # type: ignore[attr-defined]
    return cls


def _frozen(name: str) -> AttributeError:
    from dataclasses import FrozenInstanceError

    return FrozenInstanceError(f"cannot assign to field {name!r}")


class _DataclassFields:
    """``__dataclass_fields__`` of a record class: its fields as ``dataclasses.Field`` objects,
    made on first access per class. (Kept here, not stored on the class: a subclass that is
    asked first must still get its own.)"""

    def __init__(self) -> None:
        self.made: dict[type, dict[str, Field[Any]]] = {}

    def __get__(self, obj: object, cls: type[Record]) -> dict[str, Field[Any]]:
        made = self.made.get(cls)
        if made is not None:
            return made
        import dataclasses

        init = cls.__init__
        names = cls.__match_args__
        defaults = getattr(init, "__defaults__", None) or ()  # none: object.__init__
        first_default = len(names) - len(defaults)
        annotations = getattr(init, "__annotations__", {})
        spec: list[tuple[str, Any, Field[Any]]] = []
        for i, name in enumerate(names):
            if i >= first_default:
                field = dataclasses.field(default=defaults[i - first_default])
            else:
                field = dataclasses.field()
            spec.append((name, annotations.get(name, "Any"), field))
        # The same fields on a real (throwaway) dataclass: its Field objects are what the
        # ``dataclasses`` functions expect, made by ``dataclasses`` itself.
        twin = dataclasses.make_dataclass(cls.__name__, spec, frozen=True)
        fields = {f.name: f for f in dataclasses.fields(twin)}
        self.made[cls] = fields
        return fields


_FIELDS = _DataclassFields()


class Record:
    """Base class of the event classes (see the module docstring). Subclasses set
    ``__match_args__`` to their fields' names, in ``__init__``'s order."""

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __repr__(self) -> str:
        args = ", ".join([f"{name}={getattr(self, name)!r}" for name in self.__match_args__])
        return f"{type(self).__qualname__}({args})"

    if not TYPE_CHECKING:  # type checkers take the dataclass's (see ``record``)

        def __eq__(self, other):
            if other.__class__ is self.__class__:
                return self._values() == other._values()
            return NotImplemented

        def __hash__(self):
            return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(name)

    def __delattr__(self, name: str) -> None:
        raise _frozen(name)

    def __getstate__(self) -> list[object]:
        return [getattr(self, name) for name in self.__match_args__]

    def __setstate__(self, state: list[object]) -> None:
        for name, value in zip(self.__match_args__, state, strict=True):
            _set(self, name, value)
