"""beanstalkc 0.4.0's own doctests (README.mkd, TUTORIAL.mkd, test/no-yaml.mkd) on Python 3.

beanstalkc is Python 2 code and its suite ran under nose (``doctest-fixtures``: start
``$BEANSTALKD -l 127.0.0.1 -p 14711``, sleep 0.5 s, SIGTERM after the file). Run here by pytest in
the fetched suite's root (``.peers/beanstalkc-0.4.0``), with shims applied at run time only, in
this process, and nothing of beanstalkc changed on disk:

- ``beanstalkc.py`` and the doctest examples go through ``lib2to3`` (as ``2to3`` and ``2to3 -d``
  would), in memory (lib2to3 is in the standard library up to Python 3.12);
- beanstalkc's socket sends and reads ``str``: its module sees a socket whose ``sendall`` encodes
  latin-1 and whose file decodes latin-1 (one character per byte, as Python 2's ``str``), into a
  ``str`` whose ``repr`` is Python 2's (``'\\x00\\x01\\xfe\\xff'``, not ``'\\x00\\x01þÿ'``);
- its exception classes print as Python 2 prints them (``CommandFailed: …``, no module prefix);
- PyYAML 6 wants a ``Loader``: beanstalkc's bare ``yaml.load(body)`` gets ``SafeLoader``.

The examples' expected output is compared as written (doctest ``ELLIPSIS`` where the files ask).
"""

from __future__ import annotations

import doctest
import os
import socket
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path.cwd()  # the suite's root: the harness runs pytest there
PORT = 14711
FILES = ("README.mkd", "TUTORIAL.mkd", "test/no-yaml.mkd")


def _refactoring_tool() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from lib2to3.refactor import RefactoringTool, get_fixers_from_package
        except ImportError:  # Python 3.13 removed it
            pytest.fail("beanstalkc's Python 2 code needs lib2to3 (Python <= 3.12)")
        return RefactoringTool(get_fixers_from_package("lib2to3.fixes"))


class Py2Str(str):
    """A latin-1 ``str`` standing for Python 2 bytes: ``repr`` as Python 2 shows them."""

    def __repr__(self) -> str:
        return repr(self.encode("latin-1"))[1:]


class _TextFile:
    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def readline(self) -> str:
        return Py2Str(self.raw.readline().decode("latin-1"))

    def read(self, size: int) -> str:
        return Py2Str(self.raw.read(size).decode("latin-1"))

    def close(self) -> None:
        self.raw.close()


class _Socket:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sock = socket.socket(*args, **kwargs)

    def sendall(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode("latin-1") if isinstance(data, str) else data)

    def makefile(self, *args: Any) -> _TextFile:
        return _TextFile(self.sock.makefile("rb"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.fixture(scope="module")
def beanstalkc() -> Iterator[types.ModuleType]:
    import yaml

    tool = _refactoring_tool()
    source = (ROOT / "beanstalkc.py").read_text(encoding="utf-8")
    module = types.ModuleType("beanstalkc")
    module.__file__ = str(ROOT / "beanstalkc.py")
    exec(compile(str(tool.refactor_string(source + "\n", "beanstalkc")), "beanstalkc.py", "exec"),
         module.__dict__)  # fmt: skip
    shim = types.ModuleType("socket")
    shim.__dict__.update(socket.__dict__)
    shim.socket = _Socket  # type: ignore[attr-defined]
    module.socket = shim  # type: ignore[attr-defined]
    for value in list(module.__dict__.values()):
        if (
            isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__ == "beanstalkc"
        ):
            value.__module__ = "builtins"
    load = yaml.load

    def load_safe(stream: Any, Loader: Any = yaml.SafeLoader) -> Any:
        return load(stream, Loader=Loader)

    yaml.load = load_safe
    sys.modules["beanstalkc"] = module
    try:
        yield module
    finally:
        yaml.load = load
        sys.modules.pop("beanstalkc", None)


@pytest.mark.parametrize("name", FILES)
def test_doctests(name: str, beanstalkc: types.ModuleType) -> None:
    tool = _refactoring_tool()
    text = tool.refactor_docstring((ROOT / name).read_text(encoding="utf-8"), name)
    server = os.environ.get("BEANSTALKD_PATH", "beanstalkd")
    proc = subprocess.Popen([server, "-l", "127.0.0.1", "-p", str(PORT)])
    time.sleep(0.5)  # the suite's fixture: "Give beanstalkd some time to ready."
    saved = sys.modules.get("yaml")
    try:
        if name == "test/no-yaml.mkd":
            sys.modules["yaml"] = None  # type: ignore[assignment]  # its fixture hides PyYAML
        test = doctest.DocTestParser().get_doctest(text, {}, name, name, 0)
        out: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        result = runner.run(test, out=out.append)
    finally:
        if saved is not None:
            sys.modules["yaml"] = saved
        proc.terminate()
        proc.wait()
    assert result.attempted > 0
    assert result.failed == 0, "".join(out)
