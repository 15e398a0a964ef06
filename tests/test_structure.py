"""The package's shape: no import cycles, no private names used across modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "timeback_tracker"


def modules() -> dict[str, ast.Module]:
    """Every module of the package, parsed, by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imported_at_load(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package modules ``name`` imports when it loads or is type-checked.

    Imports inside functions are left out: they run later, on demand (the
    platform back-ends of OS presence import their front end that way).
    """
    found: set[str] = set()
    nodes: list[ast.stmt] = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If | ast.Try):  # `if TYPE_CHECKING:` and fallbacks
            nodes += node.body + node.orelse
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(target for target in targets if target in known)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
    # A package and its own submodules are not a cycle of interest.
    return {t for t in found if not (t.startswith(f"{name}.") or name.startswith(f"{t}."))}


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Each path that leads from a module back to itself (depth-first, one per start)."""
    for start in graph:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for target in graph[node]:
                if target == start:
                    yield [*path, start]
                    stack.clear()
                    break
                if target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))


def test_no_import_cycles() -> None:
    """No module imports (even for type checking only) one that imports it back."""
    parsed = modules()
    graph = {name: imported_at_load(name, tree, set(parsed)) for name, tree in parsed.items()}
    assert list(cycles(graph)) == []


def test_no_private_names_used_across_modules() -> None:
    """``other._name`` only where the module itself defines ``_name``; only modules imported."""
    parsed = modules()
    found = []
    for name, tree in parsed.items():
        defined = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        } | {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE.name):
                found += [
                    f"{name} imports {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                    and not alias.name.startswith("__")
                    and f"{node.module}.{alias.name}" not in parsed  # a private module is fine
                ]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                and node.attr not in defined
            ):
                found.append(f"{name}:{node.lineno} uses {ast.unparse(node)}")
    assert found == []
