"""The package surface: a fixed export list, loaded lazily, and nothing heavy for the server."""

from __future__ import annotations

import ast
import importlib
import importlib.resources
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import beanrouter
from beanrouter import router

REPO = Path(__file__).resolve().parents[2]
AIO = "beanrouter.router.aio"
AIO_NAMES = {"AsyncRouter", "AsyncJob"}
HEAVY = ("beanrouter.router", "yaml", "uhashring", "click")


def _aio_exists() -> bool:
    return importlib.util.find_spec(AIO) is not None


def _modules_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.mark.parametrize(
    "statement",
    [
        "import beanrouter",
        "import beanrouter.server.dispatch",
        "import beanrouter.server.cli",
        "from beanrouter import protocol",
        "import beanrouter; hasattr(beanrouter, 'protocol'); hasattr(beanrouter, 'nothing')",
    ],
)
def test_server_imports_load_no_router(statement: str) -> None:
    # A submodule's ``from .. import protocol`` probes the package's attributes first: that must
    # not go through the lazy loader.
    assert _modules_after(statement) == []


def test_first_access_loads_the_router() -> None:
    loaded = _modules_after("from beanrouter import Router")
    assert loaded == ["beanrouter.router", "uhashring"]  # PyYAML: when a configuration is read
    loaded = _modules_after("from beanrouter import parse_config; parse_config('servers: [a:1]')")
    assert loaded == ["beanrouter.router", "yaml"]


def test_export_table_is_the_routers_names_plus_asyncio() -> None:
    assert set(beanrouter.__all__) == set(router.__all__) | AIO_NAMES
    assert len(beanrouter.__all__) == len(set(beanrouter.__all__))
    assert "InvalidArgument" in beanrouter.__all__
    table = beanrouter._EXPORTS
    assert set(table) == set(beanrouter.__all__)
    assert {n for n, m in table.items() if m == AIO} == AIO_NAMES
    assert all(m == "beanrouter.router" for n, m in table.items() if n not in AIO_NAMES)


def test_dir_shows_the_exports_and_no_stray_names() -> None:
    names = dir(beanrouter)
    public = {n for n in names if not n.startswith("_")}
    assert public == set(beanrouter.__all__)
    assert "Router" in names and "__version__" in names
    for stray in ("Any", "importlib", "import_module", "TYPE_CHECKING", "annotations"):
        assert stray not in names
        assert not hasattr(beanrouter, stray)
    assert "_EXPORTS" not in names and "__getattr__" not in names and "__dir__" not in names


def test_every_exported_name_resolves() -> None:
    missing_aio = not _aio_exists()
    for name in beanrouter.__all__:
        if name in AIO_NAMES and missing_aio:
            continue
        module = importlib.import_module(beanrouter._EXPORTS[name])
        assert getattr(beanrouter, name) is getattr(module, name), name
    with pytest.raises(AttributeError):
        getattr(beanrouter, "NoSuchThing")  # noqa: B009


@pytest.mark.skipif(not _aio_exists(), reason="beanrouter.router.aio is not written yet")
def test_asyncio_names_resolve() -> None:
    aio = importlib.import_module(AIO)
    assert getattr(beanrouter, "AsyncRouter") is aio.AsyncRouter  # noqa: B009
    assert getattr(beanrouter, "AsyncJob") is aio.AsyncJob  # noqa: B009
    code = "from beanrouter import *\nprint(sorted(k for k in dir() if not k.startswith('_')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(sorted(beanrouter.__all__))


@pytest.mark.skipif(_aio_exists(), reason="beanrouter.router.aio exists")
def test_asyncio_names_are_absent_while_aio_is_missing() -> None:
    assert not hasattr(beanrouter, "AsyncRouter")
    with pytest.raises(AttributeError, match="AsyncJob"):
        getattr(beanrouter, "AsyncJob")  # noqa: B009


def test_type_checkers_see_the_same_names() -> None:
    """The ``if TYPE_CHECKING:`` imports (what mypy sees) cover every name whose module exists."""
    tree = ast.parse((REPO / "beanrouter" / "__init__.py").read_text(encoding="utf-8"))
    blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    ]
    assert len(blocks) == 1
    seen: dict[str, str] = {}
    for node in blocks[0].body:
        if isinstance(node, ast.ImportFrom):
            module = "beanrouter." + (node.module or "") if node.level == 1 else node.module
            for alias in node.names:
                seen[alias.asname or alias.name] = str(module)
    expected = {
        name: module
        for name, module in beanrouter._EXPORTS.items()
        if module != AIO or _aio_exists()
    }
    assert seen == expected


def test_ships_py_typed() -> None:
    assert importlib.resources.files("beanrouter").joinpath("py.typed").is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["beanrouter"]
