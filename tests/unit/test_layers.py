"""The layer contract (docs/architecture.md, *Layers*): no upward import, no cycle between
packages (tests/check_layers.py, also run by ``make lint``), and the pure layers load no I/O."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import check_layers

REPO = Path(__file__).resolve().parents[2]
IO_MODULES = ("socket", "selectors", "asyncio", "threading", "yaml")


def test_the_code_obeys_the_layer_contract() -> None:
    assert check_layers.check() == []


def _write(root: Path, module: str, text: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.parents:
        if parent == root:
            break
        (parent / "__init__.py").touch()
    path.write_text(text)


def test_the_contract_finds_upward_imports_and_cycles(tmp_path: Path) -> None:
    root = tmp_path / "beanrouter"
    _write(tmp_path, "beanrouter.protocol.codec", "import socket\n")
    _write(tmp_path, "beanrouter.core.session", "def f():\n    from ..router import facade\n")
    _write(tmp_path, "beanrouter.router.facade", "from ..core import session\n")
    _write(tmp_path, "beanrouter.router.driver", "from .facade import x\n")
    _write(tmp_path, "beanrouter.proxy.child", "M = 'beanrouter.cli:main'\n")
    _write(tmp_path, "beanrouter.cli", "from .proxy import child\n")
    _write(tmp_path, "beanrouter.server.engine", "from ..router import facade\n")
    errors = check_layers.check(root)
    text = "\n".join(errors)
    assert "beanrouter.protocol.codec (protocol) imports socket" in text
    assert "beanrouter.core.session (core) imports beanrouter.router.facade (shells)" in text
    assert "beanrouter.router.driver (drivers) imports beanrouter.router.facade (shells)" in text
    assert "beanrouter.proxy.child (processes) imports beanrouter.cli (cli)" in text
    assert "package import cycle core -> router -> core" in text
    assert "package import cycle cli -> proxy -> cli" in text
    assert "beanrouter.server.engine imports beanrouter.router.facade: server/ may not" in text
    assert len(errors) == 7


@pytest.mark.parametrize("package", ["beanrouter.core", "beanrouter.protocol"])
def test_the_pure_layers_load_no_io(package: str) -> None:
    # Every module of the package, in a fresh interpreter: none of them may load I/O or YAML.
    code = (
        "import importlib, pkgutil, sys\n"
        f"import {package} as pkg\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(' '.join(m for m in {IO_MODULES!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == []


@pytest.mark.parametrize("statement", ["import beanrouter.core", "import beanrouter.protocol"])
def test_importing_a_pure_layer_loads_no_io_and_no_shell(statement: str) -> None:
    watched = (*IO_MODULES, "beanrouter.router", "beanrouter.proxy", "beanrouter.server")
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {watched!r} if m in sys.modules))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == []


def test_a_spawned_child_is_told_apart_by_the_variable_child_reads() -> None:
    # beanrouter/__main__.py names it literally (importing child there would slow every start).
    from beanrouter.proxy import child

    main = (REPO / "beanrouter" / "__main__.py").read_text()
    assert f'"{child.PARENT_ENV}" in os.environ' in main


def test_the_cores_names_load_on_first_access() -> None:
    import beanrouter.core as core

    assert core.Session.__module__ == "beanrouter.core.session"
    assert core.Cluster.__module__ == "beanrouter.core.cluster"
    assert set(core.__all__) <= set(dir(core))
    with pytest.raises(AttributeError):
        core.nothing  # noqa: B018
