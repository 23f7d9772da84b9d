"""The layer contract of beanrouter (docs/architecture.md, *Layers*), checked on the source.

Run by ``make lint`` (``python tests/check_layers.py``) and by tests/unit/test_layers.py. It reads
the AST of every module of the package and collects every import of a beanrouter module: at the
top, inside functions, under ``if TYPE_CHECKING``, and the module names written as strings for
``importlib`` (lazy export tables, ``"module:attribute"`` factories). It fails on:

- an upward import: a module importing a module of a higher layer;
- an import cycle between the packages (``protocol``, ``core``, ``router``, ``proxy``,
  ``server``, the command line), or an import between the shells' packages other than
  ``proxy`` → ``router`` and ``proxy`` → ``server``;
- a module of ``protocol`` or ``core`` importing an I/O or configuration-file module of the
  standard library or PyYAML (``socket``, ``selectors``, ``asyncio``, ``threading``, ``yaml``...).

A module's layer is the one of the longest prefix of its name in ``LAYERS``. Standard library
only, so that it runs before anything is installed.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "beanrouter"

# Lowest first. A module may import modules of its own layer or of lower ones, never higher.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("protocol", ("beanrouter.protocol",)),
    ("core", ("beanrouter.core",)),
    (
        "drivers",
        (
            "beanrouter.router.driver",
            "beanrouter.router.connection",
            "beanrouter.router.aio_driver",
            "beanrouter.proxy.driver",
        ),
    ),
    ("shells", ("beanrouter", "beanrouter.router", "beanrouter.proxy", "beanrouter.server")),
    (
        "processes",
        (
            "beanrouter.proxy.run",
            "beanrouter.proxy.cluster",
            "beanrouter.proxy.workers",
            "beanrouter.proxy.child",
            "beanrouter.proxy.shards",
            "beanrouter.server.cli",
        ),
    ),
    ("cli", ("beanrouter.cli", "beanrouter.__main__")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

# Between the shells' packages, only these imports (one way: the proxy runs the library's asyncio
# driver and reads its configuration, and uses the bundled server's counter names and helpers).
SHELL_PACKAGES = frozenset({"router", "proxy", "server"})
SHELL_IMPORTS = {"proxy": frozenset({"router", "server"})}

# What the pure layers may not import, even inside a function (``yaml``: reading configuration
# files is a shell's job; the model is ``core.config``).
PURE = ("protocol", "core")
IMPURE = frozenset(
    {"asyncio", "selectors", "socket", "ssl", "subprocess", "threading", "multiprocessing", "yaml"}
)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> str:
    best, best_len = "", -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    return best


def package_of(module: str) -> str:
    """The top-level package a module belongs to (``cli`` for the command line's modules)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "beanrouter"
    if parts[1] in ("cli", "__main__"):
        return "cli"
    return parts[1]


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every beanrouter module ``module`` imports, and every
    standard-library or third-party top-level module (as its first name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in known else target
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.partition(":")[0]
            if name.startswith("beanrouter.") and name in known:
                yield node.lineno, name


def check(root: Path = ROOT) -> list[str]:
    """The contract's violations in the package at ``root``, one line each (empty: the code obeys
    it)."""
    known = modules(root)
    errors: list[str] = []
    edges: dict[str, dict[str, str]] = {}  # package -> imported package -> an example
    for module, path in known.items():
        layer = layer_of(module)
        where = path.relative_to(root.parent)
        for line, target in sorted(set(imports(module, path, known))):
            top = target.split(".")[0]
            if top != "beanrouter":
                if layer in PURE and top in IMPURE:
                    errors.append(f"{where}:{line}: {module} ({layer}) imports {target}")
                continue
            if target == "beanrouter":  # the package itself: only its own (lazy) names
                continue
            if target not in known:
                errors.append(f"{where}:{line}: {module} imports {target}, which does not exist")
                continue
            other = layer_of(target)
            if RANK[other] > RANK[layer]:
                errors.append(
                    f"{where}:{line}: {module} ({layer}) imports {target} ({other}), a higher layer"
                )
            a, b = package_of(module), package_of(target)
            if (
                a != b
                and layer == other == "shells"
                and {a, b} <= SHELL_PACKAGES
                and b not in SHELL_IMPORTS.get(a, ())
            ):
                errors.append(
                    f"{where}:{line}: {module} imports {target}: {a}/ may not import {b}/"
                )
            if a != b:
                edges.setdefault(a, {}).setdefault(b, f"{where}:{line}: {module} -> {target}")
    errors.extend(_cycles(edges))
    return errors


def _cycles(edges: dict[str, dict[str, str]]) -> list[str]:
    """One message per package that is part of an import cycle between packages."""
    found: list[str] = []
    for start in sorted(edges):
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, trail = stack.pop()
            for nxt in edges.get(node, {}):
                if nxt == start:
                    steps = [*trail, start]
                    examples = "; ".join(edges[x][y] for x, y in itertools.pairwise(steps))
                    cycle = " -> ".join(steps)
                    if min(trail) == start:  # report each cycle once
                        found.append(f"package import cycle {cycle} ({examples})")
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else ROOT
    errors = check(root)
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"layer contract: {len(errors)} violation(s) (docs/architecture.md, Layers)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"layer contract: {len(modules(root))} modules obey it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
