"""The code's layout in figures: files and lines per folder, functions over 50 lines, and who writes a run
folder's stats.json and config.json.

    python bench/layout.py [ROOT]      # ROOT: a checkout (default: this one); prints a Markdown report

The writers are found in the source: a function that writes the file itself (its name in a string beside a
write call), and the call sites that hand entries to ``RunFolder.update_stats`` (or, in older trees,
``write_stats``).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

FOLDERS = ("muomni", "bench", "tests", ".")
LONG = 50
WRITE_CALLS = ("write_json", "write_text", "open")


def python_files(root: Path) -> list[Path]:
    skip = {".venv", "build", "muomni.egg-info", "checkpoints", "data", "outputs", ".git"}  # top-level folders
    return sorted(p for p in root.rglob("*.py") if p.relative_to(root).parts[0] not in skip)


def folder_of(root: Path, path: Path) -> str:
    parts = path.relative_to(root).parts
    return "/".join(parts[:-1]) or "."


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def writes(node: ast.AST, name: str) -> bool:
    """Whether the function's own body names ``name`` in a string and calls a writer."""
    docs = {id(n.value) for n in ast.walk(node) if isinstance(n, ast.Expr)}  # docstrings and bare strings
    strings = any(isinstance(n, ast.Constant) and isinstance(n.value, str) and name in n.value and id(n) not in docs
                  for n in ast.walk(node))
    calls = any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) in WRITE_CALLS
                for n in ast.walk(node))
    return strings and calls


def report(root: Path) -> str:
    lines_per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    long, writers, hand_over = [], defaultdict(list), []
    for path in python_files(root):
        text = path.read_text()
        folder = folder_of(root, path)
        lines_per[folder][0] += 1
        lines_per[folder][1] += len(text.splitlines())
        tree = ast.parse(text)
        rel = path.relative_to(root)
        for fn in functions(tree):
            length = fn.end_lineno - fn.lineno + 1
            if length > LONG:
                long.append((length, f"{rel}:{fn.lineno} {fn.name}"))
            for name in ("stats.json", "config.json"):
                if writes(fn, name) and not str(rel).startswith(("tests", "bench")):
                    writers[name].append(f"{rel} {fn.name}")
        if not str(rel).startswith(("tests", "bench")):
            hand_over += [f"{rel}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Call)
                          and getattr(n.func, "attr", "") in ("update_stats", "write_stats")]
    out = ["| folder | files | lines |", "|---|---|---|"]
    out += [f"| {k} | {v[0]} | {v[1]} |" for k, v in sorted(lines_per.items())]
    total = [sum(v[i] for v in lines_per.values()) for i in (0, 1)]
    out += [f"| all | {total[0]} | {total[1]} |", "", f"functions over {LONG} lines: {len(long)}"]
    out += [f"- {n} lines: {where}" for n, where in sorted(long, reverse=True)]
    for name in ("stats.json", "config.json"):
        out += ["", f"functions writing {name} themselves: {len(writers[name])}"] + [f"- {w}" for w in writers[name]]
    out += ["", f"call sites handing stats.json entries to its writer: {len(hand_over)}"]
    out += [f"- {w}" for w in hand_over]
    return "\n".join(out)


if __name__ == "__main__":
    print(report(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]).resolve()))
