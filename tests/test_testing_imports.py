"""Every sansflow module imports on its own, and no module imports itself through others.

A cycle can hide behind ``if TYPE_CHECKING:`` (it never runs) or behind the order a package
happens to load its modules in, so the graph is read from the source, every import counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sansflow"


def module_files(package: Path) -> dict[str, Path]:
    """Every module under ``package`` by dotted name (``sansflow/adapters`` is a symlink)."""
    modules = {}
    for path in sorted(package.glob("**/*.py")) + sorted((package / "adapters").glob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package.name, *parts))] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` (at ``path``) imports, wherever in the file."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # submodules
    return found & known - {name}


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = module_files(package)
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (its modules, the first repeated at the end), or None."""
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return [*trail[trail.index(name):], name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            cycle = visit(imported, [*trail, name])
            if cycle is not None:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle is not None:
            return cycle
    return None


def test_the_graph_sees_relative_and_type_checking_imports() -> None:
    graph = import_graph(PACKAGE)
    assert "sansflow.testing.conformance._runner" in graph["sansflow.testing.conformance"]
    assert "sansflow._flow" in graph["sansflow.testing._memory"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_through_others() -> None:
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(module_files(PACKAGE)))
def test_each_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    if module.endswith("__main__"):
        pytest.skip("running a __main__ is not importing it")
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
