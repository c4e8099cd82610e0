"""What a run reports: ``metrics.jsonl`` (always), the progress bar, messages, Weights & Biases (docs/DESIGN.md §8).

Only rank 0 writes or prints; on the other ranks every method is a no-op, so callers hold no rank branches.
The module imports neither torch nor tqdm at load (tqdm comes with the progress bar), so that a reader of
metrics.jsonl (``read_metrics``: the plots, sweep.py) stays light.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from muomni.files import write_text

if TYPE_CHECKING:
    from tqdm import tqdm


class RunLog:
    """The metrics log of a run folder, the progress bar of its loop, and the optional W&B run."""

    def __init__(self, run_dir: Path, stage: str, is_main: bool):
        self.dir, self.stage, self.is_main = run_dir, stage, is_main
        self.bar: tqdm | None = None
        self._last_log = (time.perf_counter(), 0)  # (time, step) of the last train record: steps/s
        self._wandb = None

    def progress(self, start: int, total: int) -> tqdm:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, desc=self.stage, dynamic_ncols=True,
                        disable=not self.is_main, unit="step")
        self._last_log = (time.perf_counter(), start)
        return self.bar

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        """Append to metrics.jsonl (and wandb); train metrics also go on the progress bar with steps/s."""
        if not self.is_main:
            return
        metrics = {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v)  # tensors, numpy
                   for k, v in metrics.items()}
        if split == "train":
            now, last_step = time.perf_counter(), self._last_log[1]
            if step > last_step:
                metrics.setdefault("steps_per_s", (step - last_step) / max(now - self._last_log[0], 1e-9))
            self._last_log = (now, step)
            if self.bar is not None:
                shown = {k: metrics[k] for k in ("loss", "lr", "steps_per_s") if k in metrics}
                self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
        record = {"step": step, "split": split, "time": time.time(), **metrics}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log({f"{split}/{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=step)

    def truncate(self, step: int) -> None:
        """Drop records logged after the checkpoint we resume from, so the curve has no doubled steps."""
        path = self.dir / "metrics.jsonl"
        if not (self.is_main and path.is_file()):
            return
        kept = [record for record in read_metrics(self.dir) if _record_step(record) <= step]
        write_text(path, "".join(json.dumps(record) + "\n" for record in kept))

    def info(self, message: str) -> None:
        if self.is_main:
            (self.bar.write if self.bar is not None else print)(f"[{self.stage}] {message}", file=sys.stderr)

    def warn(self, message: str) -> None:
        self.info(f"warning: {message}")

    def start_wandb(self, project: str, mode: str, config: dict[str, Any]) -> None:
        """A W&B run beside metrics.jsonl: never required, never a login prompt (offline without a key)."""
        try:
            import wandb  # optional: pip install 'muomni[wandb]'
        except ImportError:
            self.warn("train.wandb is true but wandb is not installed (pip install 'muomni[wandb]'); "
                      "logging to metrics.jsonl only")
            return
        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            self.warn("wandb online mode needs WANDB_API_KEY; logging offline instead")
            mode = "offline"
        self._wandb = wandb.init(project=project, name=self.dir.name, dir=str(self.dir),
                                 mode=mode, config=config, resume="allow")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run folder's metrics.jsonl, in order (FileNotFoundError without one).

    A line that is not a JSON object is skipped: a kill can cut the last record short, and a resumed run
    appends after it, so such a line may stand anywhere in the file.
    """
    records = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _record_step(record: dict[str, Any]) -> int:
    try:
        return int(record.get("step", 0))
    except (TypeError, ValueError):
        return 0
