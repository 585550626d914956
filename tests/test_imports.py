"""The package's layering rules, checked over its own imports (stdlib ``ast``, nothing run).

Every import counts: module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "simworld"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (``from a import b`` also yields ``a.b``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _internal(name: str) -> str | None:
    """The package module ``name`` refers to (itself or its nearest parent), if any."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    """Module → package modules it imports. The face (``simworld/__init__.py``) and package
    ``__init__`` files that only hold a docstring add no edges of their own."""
    graph: dict[str, set[str]] = {}
    for name, imported in IMPORTS.items():
        deps = {_internal(i) for i in imported} - {None, name}
        graph[name] = {d for d in deps if d is not None and d != "simworld"}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_package_is_found() -> None:
    assert "simworld.engine.model" in MODULES and "simworld.llm.gateway" in MODULES


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_llm_layer_imports_litellm() -> None:
    offenders = sorted(
        name
        for name, imported in IMPORTS.items()
        if not _in(name, "simworld.llm") and any(_in(i, "litellm") for i in imported)
    )
    assert offenders == []


@pytest.mark.parametrize("forbidden", ["simworld.engine", "simworld.society", "simworld.memory"])
def test_the_llm_layer_never_imports_the_simulation(forbidden: str) -> None:
    offenders = sorted(
        f"{name} -> {i}"
        for name, imported in IMPORTS.items()
        if _in(name, "simworld.llm")
        for i in imported
        if _in(i, forbidden)
    )
    assert offenders == []


CONFIG_MAY_IMPORT = ("simworld.config", "simworld.errors", "simworld.support")


def test_config_imports_no_implementation() -> None:
    offenders = sorted(
        f"{name} -> {i}"
        for name, imported in IMPORTS.items()
        if _in(name, "simworld.config")
        for i in imported
        if _in(i, "simworld") and i != "simworld" and not any(_in(i, p) for p in CONFIG_MAY_IMPORT)
    )
    assert offenders == []


def test_every_subpackage_says_what_it_holds() -> None:
    missing = [
        name
        for name, path in MODULES.items()
        if path.name == "__init__.py" and not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert missing == []
