"""Imports point one way (docs/architecture.md): read from the source, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Package name -> folder, as pyproject.toml maps them.
FOLDERS = {
    "harstream": ROOT / "harstream",
    "harstream.stream": ROOT / "stream",
    "harstream.models": ROOT / "models",
    "harstream.simulator": ROOT / "simulator",
    "harstream.dashboard": ROOT / "dashboard",
}


def module_files() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = module_files()


def imported(name: str, path: Path) -> set[str]:
    """Our modules that ``name`` imports anywhere in its source (top level or inside functions)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import feature_math` imports the submodule (the package's
            # __init__ runs for every submodule anyway); a name that is not a
            # module is taken from the package itself
            candidates = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module for alias in node.names
            ]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in MODULES:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def edges_from(prefix: str) -> list[tuple[str, str]]:
    return [(a, b) for a, deps in GRAPH.items() if a == prefix or a.startswith(prefix + ".") for b in deps]


def test_the_graph_sees_the_known_one_way_imports():
    # the test can fail: it does find the imports it is about
    assert "harstream.stream.core.pipeline" in GRAPH["harstream.models.dataset"]
    assert "harstream.stream.core.protocol" in GRAPH["harstream.dashboard.state"]


def test_nothing_imports_the_dashboard_but_the_command_that_serves_it():
    offenders = [
        (a, b)
        for a, deps in GRAPH.items()
        for b in deps
        if b.startswith("harstream.dashboard") and not a.startswith("harstream.dashboard")
    ]
    assert offenders == [("harstream.commands.dashboard", "harstream.dashboard")]


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("harstream.stream", ("harstream.models", "harstream.simulator", "harstream.commands", "harstream.bench")),
        ("harstream.simulator", ("harstream.models", "harstream.commands", "harstream.bench")),
        ("harstream.dashboard", ("harstream.models", "harstream.simulator", "harstream.commands", "harstream.bench")),
        ("harstream.models", ("harstream.simulator", "harstream.commands", "harstream.bench")),
    ],
)
def test_imports_point_one_way(package, forbidden):
    assert [(a, b) for a, b in edges_from(package) if b.startswith(forbidden)] == []


def test_the_product_does_not_import_the_studies():
    studies = "harstream.models.studies"
    product = [(a, b) for a, b in edges_from("harstream.models") if not a.startswith(studies)]
    assert [(a, b) for a, b in product if b.startswith(studies)] == []


def test_there_are_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
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
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []
