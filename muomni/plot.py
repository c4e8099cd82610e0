"""Loss-curve pictures from a run's metrics.jsonl: ``python -m muomni plot RUN_DIR``."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

SKIP = {"step", "split", "time"}


def read_metrics(run_dir: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """split -> metric -> [(step, value)], skipping lines that are not JSON (a line cut by a kill)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics yet (train a few steps first)")
    out: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        for key, value in record.items():
            if key not in SKIP and isinstance(value, (int, float)) and math.isfinite(value):
                out[record.get("split", "train")][key].append((int(record["step"]), float(value)))
    return out


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """One PNG per split (train, eval, ...) with a panel per metric; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, metrics in read_metrics(run_dir).items():
        names = sorted(metrics, key=lambda n: (not n.startswith("loss"), n))
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            steps, values = zip(*metrics[name])
            ax.plot(steps, values, lw=1.2, marker="." if len(steps) < 30 else None)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.grid(alpha=0.3)
            if name.startswith("loss") and min(values) > 0 and max(values) / min(values) > 20:
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.suptitle(f"{run_dir.name} — {split}")
        fig.tight_layout()
        path = out_dir / f"{split}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
