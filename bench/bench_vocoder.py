"""HiFi-GAN inference speed on the CPU, and the V1 model's training memory.

- Real-time factor: seconds of audio produced per second of compute (higher is faster), on one
  CPU thread, for the
  tiny and demo generators (weight norm folded, eval mode, batch 1, a 5 s mel), against
  Griffin-Lim (32 iterations) on the same mel in the same run. Untrained weights: speed does not
  depend on them.
- V1 (configs/vocoder_v1.json): builds and vocodes. Its training memory at batch 2 x 8192
  samples is estimated without a GPU as parameters + gradients + two AdamW moments (4 x 4 bytes
  per parameter, generator and discriminators) plus activations: the bytes of every tensor that
  autograd saves for the backward pass in one training forward (generator, discriminators on real
  and generated audio, mel loss), counted once per storage with saved_tensors_hooks, in fp32.
  Mixed precision (bf16/fp16) roughly halves the activation part on a GPU.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from muomni.audio import MelSpectrogram  # noqa: E402
from muomni.config import model_from_dict, read_json_with_base  # noqa: E402
from muomni.models.discriminators import Discriminators  # noqa: E402
from muomni.models.griffinlim import mel_to_wav  # noqa: E402
from muomni.models.hifigan import Generator, HiFiGANConfig, mel_l1  # noqa: E402
from muomni.synthesis_config import GRIFFIN_LIM_ITERS  # noqa: E402

SECONDS = 5.0


def generator_config(name: str):
    """The model section of a config file (with its base chain) as a HiFiGANConfig."""
    return model_from_dict(HiFiGANConfig, read_json_with_base(ROOT / "configs" / name)["model"], name)


def median_time(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def activation_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while fn() runs (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def on_one_thread(measure) -> list[dict]:
    """measure() with torch on one thread (stable timings on a small shared machine), then as before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure()
    finally:
        torch.set_num_threads(threads)


def run() -> list[dict]:
    return on_one_thread(_measure)


def _measure() -> list[dict]:
    torch.manual_seed(0)
    frames = int(SECONDS * 16000) // 256 + 1
    mel = torch.randn(1, frames, 128) - 4.0
    rows = []
    with torch.no_grad():
        t_gl = median_time(lambda: mel_to_wav(mel, n_iter=GRIFFIN_LIM_ITERS))
        for name in ("vocoder_tiny.json", "demo/vocoder.json"):
            gen = Generator(generator_config(name)).remove_weight_norm().eval()
            t = median_time(lambda gen=gen: gen(mel))
            rows.append({"benchmark": "vocoder", "metric": f"HiFi-GAN {name} real-time factor (CPU, "
                         f"{torch.get_num_threads()} threads, {sum(p.numel() for p in gen.parameters()) / 1e6:.2f} M "
                         "params)", "value": SECONDS / t, "unit": "x real time",
                         "baseline": f"Griffin-Lim, {GRIFFIN_LIM_ITERS} iterations", "baseline_value": SECONDS / t_gl,
                         "target": ">= 20" if name == "vocoder_tiny.json" else None})

    cfg = generator_config("vocoder_v1.json")
    gen, disc = Generator(cfg), Discriminators(cfg)
    n_params = sum(p.numel() for p in gen.parameters()) + sum(p.numel() for p in disc.parameters())
    with torch.no_grad():
        start = time.perf_counter()
        out = gen.eval()(mel[:, :63])  # 1 s
        t_v1 = time.perf_counter() - start
    assert out.shape == (1, 63 * 256)
    mel_fn = MelSpectrogram()
    wav = torch.randn(2, 8192) * 0.1
    seg_mel = torch.randn(2, 32, 128) - 4.0

    def train_forward():
        gen.train()
        fake = gen(seg_mel)
        real_scores, _ = disc(wav)
        fake_scores, _ = disc(fake)
        return mel_l1(mel_fn(wav), mel_fn(fake)) + sum(s.mean() for s in real_scores + fake_scores)

    acts = activation_bytes(train_forward)
    state = 16 * n_params
    rows += [
        {"benchmark": "vocoder", "metric": "HiFi-GAN V1 builds and vocodes 1 s (CPU seconds)", "value": t_v1,
         "unit": "s", "baseline": None, "baseline_value": None, "target": "runs"},
        {"benchmark": "vocoder", "metric": f"HiFi-GAN V1 training memory estimate, batch 2 x 8192, fp32 "
         f"({n_params / 1e6:.1f} M params G+D: {state / 2**30:.2f} GiB states, {acts / 2**30:.2f} GiB activations)",
         "value": (state + acts) / 2**30, "unit": "GiB", "baseline": "12 GB GPU budget",
         "baseline_value": 12e9 / 2**30, "target": "< 12 GB"},
    ]
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
