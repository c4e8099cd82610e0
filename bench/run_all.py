"""Run every bench/bench_*.py and write bench/results.json and bench/results.md.

Each benchmark module defines ``run() -> list[dict]`` with rows
``{"benchmark", "metric", "value", "unit", "baseline", "baseline_value", "target"}``; a figure
and its baseline are always measured side by side in the same run.
Usage: ``python bench/run_all.py [NAME ...]`` (names as in bench_NAME.py; default: all).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    return {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def load(path: Path):
    """Import bench/<name>.py by name, so its dataclasses and worker processes can find it."""
    return importlib.import_module(path.stem)


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(names: list[str]) -> int:
    sys.path[:0] = [str(HERE), str(HERE.parent)]
    files = sorted(HERE.glob("bench_*.py"))
    if names:
        files = [f for f in files if f.stem.removeprefix("bench_") in names]
    rows, failed = [], []
    for path in files:
        print(f"== {path.stem}", flush=True)
        start = time.perf_counter()
        try:
            for row in load(path).run():
                rows.append(row)
                print("  " + ", ".join(f"{k}={fmt(v)}" for k, v in row.items()), flush=True)
        except Exception:
            traceback.print_exc()
            failed.append(path.stem)
        print(f"   ({time.perf_counter() - start:.1f} s)")
    info = machine()
    (HERE / "results.json").write_text(json.dumps({"machine": info, "rows": rows, "failed": failed}, indent=2))
    lines = [f"Machine: {info['platform']}, {info['cpu_cores']} cores, torch {info['torch']}, "
             f"CUDA: {info['cuda'] or 'none'} ({info['date']})", "",
             "| benchmark | metric | value | unit | baseline | baseline value | target |",
             "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in
              ("benchmark", "metric", "value", "unit", "baseline", "baseline_value", "target")) + " |" for r in rows]
    if failed:
        lines += ["", f"Failed: {', '.join(failed)}"]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
