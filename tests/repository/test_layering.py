"""The package's rooms are layered as the layout page says (docs/layout.md), read
from the code's own imports (every `import`, top level, in a function or under
TYPE_CHECKING): no room imports one above it, the rooms side by side on top do
not import each other, and no import cycle joins two rooms."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "streams"

LAYOUT = ROOT / "docs" / "pages" / "layout.md"


def documented_layers(text: str) -> list[tuple[str, set[str], bool]]:
    """The layers table of the layout page, bottom to top: (layer, its rooms, whether
    its rooms stand side by side and may not import each other)."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines()
            if line.startswith("| ") and "`streams" in line]
    return [(name.strip(), set(re.findall(r"`([a-z_.]+)`", rooms)), "side by side" in name)
            for name, rooms in reversed(rows)]


LAYERS = documented_layers(LAYOUT.read_text())


def room_of(module: str) -> str:
    """`streams.kafka.io` -> `streams.kafka`: the package's direct child a module belongs to."""
    return ".".join(module.split(".")[:2])


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module of the package `path` imports, resolving relative imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from streams.wire import journal` imports streams.wire.journal
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {module for module in found if module == "streams" or module.startswith("streams.")}


def room_imports() -> dict[tuple[str, str], list[str]]:
    """(importing room, imported room) -> the modules that import across, for every
    pair of different rooms."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of(module_name(path))
        for target in {room_of(module) for module in imported(path)}:
            if target != source and target in LAYER_OF:
                edges.setdefault((source, target), []).append(module_name(path))
    return edges


LAYER_OF = {room: index for index, (_, rooms, _) in enumerate(LAYERS) for room in rooms}


def test_every_room_has_a_layer():
    rooms = {room_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert sorted(rooms - set(LAYER_OF)) == []


def test_no_room_imports_a_room_above_it_or_beside_it_on_top():
    wrong = []
    for (source, target), modules in sorted(room_imports().items()):
        above = LAYER_OF[target] > LAYER_OF[source]
        beside = LAYER_OF[target] == LAYER_OF[source] and LAYERS[LAYER_OF[source]][2]
        if above or beside:
            where = "above it" if above else "beside it"
            wrong.append(f"{source} imports {target} ({where}) in {', '.join(modules)}")
    assert wrong == []


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for following in sorted(graph[node]):
            if following not in index:
                visit(following)
                low[node] = min(low[node], low[following])
            elif following in stack:
                low[node] = min(low[node], index[following])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_joins_two_rooms():
    assert cycles(set(room_imports())) == []


def test_the_layers_are_read_from_the_page():
    assert [name for name, _, _ in LAYERS][:2] == ["base", "wire"]
    assert ("rooms (side by side)", {"streams.worker", "streams.history", "streams.ops"}, True) in LAYERS


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert cycles({("a", "b"), ("b", "c")}) == []
