"""No import circles among muomni's own modules, counting imports inside functions too: a circle is how a
model file ended up importing the module that imports it (docs/DESIGN.md §10, short files one family each)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports() -> dict[str, set[str]]:
    """module -> the muomni modules its code names in an import (at any depth; a package's own __init__ that
    re-exports its submodules is no edge back from them)."""
    files = {}
    for path in sorted((ROOT / "muomni").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                edges |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def test_no_module_of_muomni_imports_itself_round_a_circle():
    graph, circles = imports(), []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for nxt in graph[module]:
            if nxt in path:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt], done)
        done.add(module)

    done: set[str] = set()
    for module in graph:
        if module not in done:
            visit(module, [module], done)
    assert "muomni.models.talker.autoregressive" in graph["muomni.models.talker"]  # the graph sees packages
    assert not circles, circles
