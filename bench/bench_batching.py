"""Talker training throughput: fixed-shape batches vs length-bucketed (dynamic) batches, CPU.

Both runs train the demo Talker recipe (``configs/demo/talker.json``) on the demo corpus's codes for
the same number of steps, one after the other in this process's run; the figure is real (unpadded)
code frames per second of training, the mean of the logged rates after the first log. Needs the demo
corpus and codec (``make demo``); without them the row says so instead of a number.

    python bench/bench_batching.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from muomni.config import read_json_with_base  # noqa: E402
from muomni.data.tokenize import default_codes_dir  # noqa: E402
from muomni.training.log import read_metrics  # noqa: E402

CONFIG = ROOT / "configs" / "demo" / "talker.json"
STEPS, LOG_EVERY = 80, 10


def frames_per_s(batching: str, out_dir: str, threads: int) -> float:
    """Train STEPS steps with ``train.batching=batching``; mean logged frames/s after the first log."""
    cmd = [sys.executable, str(ROOT / "train_talker.py"), "--config", str(CONFIG), "--set",
           f"train.batching={batching}", f"train.run_name={batching}", f"train.out_dir={out_dir}",
           f"train.steps={STEPS}", f"train.log_every={LOG_EVERY}", "train.eval_every=100000",
           "train.sample_every=100000", "train.save_every=100000"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"train_talker.py ({batching} batches) exited {done.returncode}:\n{done.stderr[-2000:]}")
    rows = read_metrics(Path(out_dir) / batching)
    rates = [r["frames_per_s"] for r in rows if r.get("split") == "train" and "frames_per_s" in r][1:]
    return sum(rates) / len(rates)


def run() -> list[dict]:
    threads = int(os.environ.get("BENCH_THREADS", str(min(os.cpu_count() or 1, 2))))
    row = {"benchmark": "talker_batching", "unit": "x", "baseline": "fixed-shape batches (padded to max_frames)",
           "target": "more frames/s than fixed",
           "metric": f"training frames/s, dynamic vs fixed batches, demo Talker recipe, {threads} thread(s)"}
    codes = default_codes_dir(ROOT / read_json_with_base(CONFIG)["data"]["path"]) / "codes.json"
    if not codes.is_file():
        return [{**row, "value": None, "baseline_value": None,
                 "metric": row["metric"] + " (not measured: needs the demo corpus and codec, run make demo first)"}]
    with tempfile.TemporaryDirectory() as tmp:
        fixed = frames_per_s("fixed", tmp, threads)
        dynamic = frames_per_s("dynamic", tmp, threads)
    return [{**row, "value": round(dynamic / fixed, 2), "baseline_value": round(fixed, 1),
             "metric": row["metric"] + f" (dynamic: {dynamic:.0f} frames/s)"}]


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r))
