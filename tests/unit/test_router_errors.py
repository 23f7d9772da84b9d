"""The router's argument errors: ``InvalidArgument`` and the codec-error conversion helpers."""

from __future__ import annotations

import pytest

import beanrouter
from beanrouter import router
from beanrouter.core.errors import argument_check, invalid_argument
from beanrouter.protocol import LocalProtocolError, Put, Release, ReserveWithTimeout, Use
from beanrouter.router import InvalidArgument, RouterError


def test_invalid_argument_is_a_router_error_and_a_value_error() -> None:
    assert issubclass(InvalidArgument, RouterError)
    assert issubclass(InvalidArgument, ValueError)
    assert not issubclass(InvalidArgument, LocalProtocolError)
    assert router.InvalidArgument is beanrouter.InvalidArgument is InvalidArgument


def _codec_error(build: object) -> LocalProtocolError:
    assert callable(build)
    with pytest.raises(LocalProtocolError) as info:
        build()
    return info.value


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: Use("bad name!"), "invalid tube name 'bad name!'"),
        (lambda: Put(0, 0, 60, 123), "bytes"),  # type: ignore[arg-type]
        (lambda: Put(-1, 0, 60, b"x"), "priority"),
        (lambda: Release(1, 2**32, 0), "priority"),
        (lambda: ReserveWithTimeout(2**40), "timeout"),
    ],
)
def test_invalid_argument_carries_the_codec_message(build: object, words: str) -> None:
    exc = _codec_error(build)
    err = invalid_argument(exc, "put")
    assert isinstance(err, InvalidArgument)
    assert str(err) == f"put: {exc}" and words in str(err)
    assert str(invalid_argument(exc)) == str(exc)


def test_argument_check_converts_only_codec_errors() -> None:
    match = r"^use: invalid tube name 'bad name!'$"
    with pytest.raises(InvalidArgument, match=match) as info, argument_check("use"):
        Use("bad name!")
    assert isinstance(info.value.__cause__, LocalProtocolError)
    with pytest.raises(InvalidArgument, match=r"^invalid tube name ''$"), argument_check():
        Use("")
    # Valid arguments pass through; other errors are not touched.
    with argument_check("use"):
        command = Use("good")
    assert command.tube == "good"
    with pytest.raises(KeyError), argument_check("use"):
        raise KeyError("x")
    with pytest.raises(ValueError, match="not the codec's") as plain, argument_check("use"):
        raise ValueError("not the codec's")
    assert not isinstance(plain.value, InvalidArgument)
