"""Imports point one way (docs/architecture.md): read from the source, lazy imports included."""

from __future__ import annotations

import ast
import re
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


#: The rooms of ``stream/`` and the rooms each may import (besides itself).
ROOMS = {
    "core": set(),
    "files": set(),
    "data": {"core", "files"},
    "personal": {"core", "files"},
    "bus": {"core", "files", "personal"},
    "gateway": {"core", "bus", "files", "personal"},
    "durable": {"core", "bus", "personal"},
}


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[:2] == ["harstream", "stream"] else None


def test_stream_holds_rooms_only_no_loose_modules():
    loose = [path.name for path in (ROOT / "stream").glob("*.py") if path.name != "__init__.py"]
    folders = {p.name for p in (ROOT / "stream").iterdir() if (p / "__init__.py").exists()}
    assert loose == []
    assert folders == set(ROOMS)


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_each_room_imports_only_the_rooms_it_names(room):
    crossing = {
        (a, b)
        for a, b in edges_from(f"harstream.stream.{room}")
        if room_of(b) not in (None, room) and room_of(b) not in ROOMS[room]
    }
    assert crossing == set()


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_each_room_says_in_three_lines_what_lives_there_and_what_it_may_import(room):
    doc = ast.get_docstring(ast.parse((ROOT / "stream" / room / "__init__.py").read_text()))
    assert doc is not None
    lines = [line for line in doc.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3
    named = {other for other in ROOMS if f"stream.{other}" in doc}
    assert named - {room} == ROOMS[room]


def package_folders() -> set[str]:
    """Every folder of ours that is a package, as a path relative to the root (``stream/core``)."""
    found = set()
    for folder in FOLDERS.values():
        for init in folder.rglob("__init__.py"):
            found.add(init.parent.relative_to(ROOT).as_posix())
    return found


def folder_of(package: str) -> str:
    """``harstream.stream.core`` -> ``stream/core``, through pyproject's package-dir mapping."""
    base = max((name for name in FOLDERS if package == name or package.startswith(name + ".")), key=len)
    rest = package.removeprefix(base).lstrip(".").replace(".", "/")
    return "/".join(part for part in (FOLDERS[base].relative_to(ROOT).as_posix(), rest) if part)


def test_pyproject_lists_every_package_folder():
    listed = re.findall(r'^\s*"(harstream(?:\.[a-z_]+)*)",$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert {folder_of(name) for name in listed} == package_folders()


def test_the_folder_map_in_architecture_md_names_every_package_folder_and_no_other():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert set(re.findall(r"^\| `([a-z_/]+)/` \|", text, re.M)) == package_folders()


@pytest.mark.parametrize(
    "folder",
    [*(f"stream/{room}" for room in ROOMS), "models", "models/studies", "simulator", "dashboard"],
)
def test_the_folder_map_names_every_module_of_the_folders_it_describes(folder):
    text = (ROOT / "docs" / "architecture.md").read_text()
    row = dict(re.findall(r"^\| `([a-z_/]+)/` \|(.*)$", text, re.M))[folder]
    modules = {path.stem for path in (ROOT / folder).glob("*.py") if path.name != "__init__.py"}
    assert {m for m in modules if f"`{m}.py`" not in row and f"`{m}`" not in row} == set()
