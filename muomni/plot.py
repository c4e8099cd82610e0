"""Loss-curve pictures from a run's metrics.jsonl: ``python -m muomni plot RUN_DIR``.

One PNG per split with a panel per metric; the speech check's split (``muomni.speech_check``) gets its own
picture instead: word error and naturalness against training minutes and against steps, with the ground
truth's and Griffin-Lim's figures on the same utterances (stats.json "speech_reference") as references.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from muomni.training.log import read_metrics

SKIP = {"step", "split", "time"}


def metric_series(run_dir: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """split -> metric -> [(step, value)] of the finite numbers in the run's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics yet (train a few steps first)")
    out: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for record in read_metrics(run_dir):
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
    for split, metrics in metric_series(run_dir).items():
        if split == "speech":
            written.append(plot_speech(run_dir, metrics, out_dir / "speech.png"))
            continue
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


SPEECH_PANELS = {"speech_wer": "word error", "dnsmos_ovrl": "DNSMOS OVRL"}  # what the speech picture draws
REFERENCE_STYLES = {"ground_truth": ("ground truth", "tab:green", "--"),  # distinct dashes: equal figures
                    "griffinlim": ("Griffin-Lim, original mels", "tab:gray", ":")}  # on few utterances overlap


def plot_speech(run_dir: Path, metrics: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """The speech check's figures (a row each) against training minutes and against steps, with the references
    as horizontal lines; the title says the check's cost as a share of the training time."""
    import matplotlib.pyplot as plt

    stats_path = run_dir / "stats.json"
    reference = json.loads(stats_path.read_text()).get("speech_reference", {}) if stats_path.is_file() else {}
    names = [n for n in SPEECH_PANELS if n in metrics]
    minutes = dict(metrics.get("train_minutes", []))
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.9 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        steps, values = zip(*metrics[name])
        for ax, xs, label in ((row[0], [minutes.get(s, math.nan) for s in steps], "training minutes"),
                              (row[1], steps, "step")):
            ax.plot(xs, values, lw=1.4, marker="o", ms=3, label="model")
            for key, (ref_label, color, dashes) in REFERENCE_STYLES.items():
                if name in reference.get(key, {}):
                    ax.axhline(reference[key][name], color=color, ls=dashes, lw=1.4, label=ref_label)
            if name == "speech_wer":
                ax.set_ylim(bottom=0)  # how far from no error, not only from the first check
            ax.set_title(SPEECH_PANELS[name], fontsize=9)
            ax.set_xlabel(label, fontsize=8)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    spent = sum(v for _, v in metrics.get("speech_seconds", []))
    total = 60 * max(minutes.values(), default=0.0)
    cost = f"; checks {spent:.0f} s = {100 * spent / total:.1f} % of {total / 60:.1f} min" if total else ""
    fig.suptitle(f"{run_dir.name} — speech check ({reference.get('asr', 'asr')}, "
                 f"{reference.get('items', '?')} held-out utterances{cost})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
