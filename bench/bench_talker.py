"""Talker generation speed on CPU, tiny config (untrained weights: speed does not depend on them).

1. KV-cache decoding vs recomputing the whole sequence at every step, 200 frames (target >= 10x).
2. Frames per second at batch 1 with the KV cache (target >= 500; 12.5 frames = 1 s of speech).

    python bench/bench_talker.py
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muomni.audio import HOP_LENGTH, SAMPLE_RATE  # noqa: E402
from muomni.config import read_json_with_base  # noqa: E402
from muomni.models.codec import FRAMES_PER_TOKEN  # noqa: E402
from muomni.models.talker import Talker, TalkerConfig  # noqa: E402
from muomni.models.talker.generate import generate, pick_frame  # noqa: E402

FRAMES, TEXT = 200, 50  # 50 tokens x 20 sub-frames = 200 code frames
FRAME_RATE = SAMPLE_RATE / HOP_LENGTH / FRAMES_PER_TOKEN  # code frames per second of speech (12.5)


def tiny_model() -> Talker:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model_cfg = read_json_with_base(os.path.join(root, "configs", "talker_tiny.json"))["model"]
    codec = read_json_with_base(os.path.join(root, "configs", "codec_tiny.json"))["model"]  # the codec it pairs with
    torch.manual_seed(0)
    return Talker(TalkerConfig(**{**model_cfg, "vocab_size": 40, "n_q": codec["n_codebooks"],
                                  "codebook_size": codec["codebook_size"]})).eval()


def inputs(model: Talker):
    n_text = TEXT
    text = torch.randint(2, model.cfg.vocab_size, (1, n_text))
    durations = torch.full((1, n_text), FRAMES * model.cfg.sub_frames // n_text)  # exactly FRAMES frames
    return text, torch.tensor([n_text]), torch.zeros(1, dtype=torch.long), durations


@torch.no_grad()
def cached(model: Talker) -> float:
    text, lens, spk, dur = inputs(model)
    start = time.perf_counter()
    codes, _ = generate(model, text, lens, spk, temperature=0.0, durations=dur)
    elapsed = time.perf_counter() - start
    assert codes.shape[1] == FRAMES, codes.shape
    return elapsed


@torch.no_grad()
def recompute(model: Talker) -> float:
    """The same greedy generation without a cache: every step runs the whole sequence so far."""
    text, lens, spk, dur = inputs(model)
    start = time.perf_counter()
    codes = torch.zeros(1, 0, model.cfg.n_q, dtype=torch.long)
    for _ in range(FRAMES):
        out = model(text, lens, torch.cat([codes, codes.new_zeros(1, 1, model.cfg.n_q)], 1),
                    torch.tensor([codes.shape[1] + 1]), spk, durations=dur)
        frame = pick_frame(model, out.logits[:, -1], None, 0.0, None, None, None)
        codes = torch.cat([codes, frame[:, None]], 1)
    return time.perf_counter() - start


def run() -> list[dict]:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    model = tiny_model()
    cached(model)  # warm-up
    t_cache = min(cached(model) for _ in range(3))
    t_full = recompute(model)
    threads = torch.get_num_threads()
    return [
        {"benchmark": "talker_kv_cache", "metric": f"speedup over full recompute, {FRAMES} frames, batch 1, "
                                                   f"{threads} thread(s)",
         "value": round(t_full / t_cache, 2), "unit": "x", "baseline": "recompute whole sequence each step",
         "baseline_value": round(t_full, 3), "target": ">= 10"},
        {"benchmark": "talker_frames_per_s", "metric": f"generated frames/s, tiny config, batch 1, CPU, {threads} "
                                                       "thread(s)",
         "value": round(FRAMES / t_cache, 1), "unit": "frames/s", "baseline": f"real time ({FRAME_RATE} frames/s)",
         "baseline_value": FRAME_RATE, "target": ">= 500"},
    ]


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
