"""Training-step cost of codec designs, measured side by side: seconds per step, code frames per second
and the whole recipe's time.

Each design is a run config (a run folder's config.json, or any codec config with its "base"), optionally
followed by ``,key=value`` overrides. Its model, optimizer, loss weights, batch size, crop length and CPU
precision (``train.cpu_precision``) are the codec stage's (muomni/stages/codec.py: new_state), and its
training step (train_step: forward, backward, the guarded optimizer step) is timed on random log-mels of the
training shape, in alternating rounds (A, B, C, A, B, C, ...) so that a machine shared with other jobs slows
every design alike. The first design is the baseline; the recipe time is steps x the median seconds per
step. ``make bench`` (``run()``) times the demo codec (32 x 16-frame crops, float32) against twice its batch
under CPU bf16 autocast, at 2 threads.

    python bench/bench_codec_train_step.py demo=configs/demo/codec.json \
        b64_bf16=configs/demo/codec.json,train.batch_size=64,train.cpu_precision=bf16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from muomni.config import load_config  # noqa: E402
from muomni.stages import codec  # noqa: E402


class Design:
    def __init__(self, name: str, spec: str):
        path, *overrides = spec.split(",")
        self.name, self.cfg = name, load_config(path, codec.CodecRun, overrides)
        torch.manual_seed(0)
        self.state = codec.new_state(self.cfg, torch.device("cpu"))  # the stage's model, optimizer and step
        tc = self.cfg.train
        self.mel = torch.randn(tc.batch_size, tc.crop_frames * self.cfg.model.frames_per_token, 128)
        self.times: list[float] = []

    def step(self) -> None:
        codec.train_step(self.state, self.mel, 0)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("designs", nargs="+", help="NAME=CONFIG pairs; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps timed per design per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    designs = [Design(*spec.split("=", 1)) for spec in args.designs]
    for d in designs:
        for _ in range(2):  # warm-up: k-means initialisation and allocator
            d.step()
    for _ in range(args.rounds):
        for d in designs:
            start = time.perf_counter()
            for _ in range(args.steps):
                d.step()
            d.times.append((time.perf_counter() - start) / args.steps)
    base = statistics.median(designs[0].times) * designs[0].cfg.train.steps
    base_rate = _frames(designs[0]) / statistics.median(designs[0].times)
    rows = []
    for d in designs:
        per_step = statistics.median(d.times)
        recipe = per_step * d.cfg.train.steps
        rows.append({"design": d.name, "steps": d.cfg.train.steps, "batch": d.cfg.train.batch_size,
                     "crop_frames": d.cfg.train.crop_frames, "cpu_precision": d.cfg.train.cpu_precision,
                     "s_per_step": round(per_step, 4), "code_frames_per_s": round(_frames(d) / per_step),
                     "frames_vs_baseline": round(_frames(d) / per_step / base_rate, 2),
                     "recipe_s": round(recipe, 1), "recipe_vs_baseline": round(recipe / base, 2),
                     "params_M": round(sum(p.numel() for p in d.state.model.parameters()) / 1e6, 2),
                     "threads": args.threads})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _frames(design: Design) -> int:
    """Code frames one training step sees."""
    return design.cfg.train.batch_size * design.cfg.train.crop_frames


def run() -> list[dict]:
    """make bench: the demo codec's training throughput, and twice its batch under CPU bf16, 2 threads."""
    demo = str(ROOT / "configs/demo/codec.json")
    old, new = main([f"demo={demo}", f"b64_bf16={demo},train.batch_size=64,train.cpu_precision=bf16", "--threads", "2"])
    return [{"benchmark": "codec_train_step", "metric": "codec training, 64 x 16 crops in CPU bf16, code frames/s",
             "value": new["code_frames_per_s"], "unit": "code frames/s",
             "baseline": "the demo recipe: 32 x 16 crops, float32",
             "baseline_value": old["code_frames_per_s"], "target": None}]


if __name__ == "__main__":
    main()
