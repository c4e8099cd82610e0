"""Codec throughput on CPU: encode + decode of log-mels, in code frames (80 ms each) per second.

Baseline, measured in the same run: the seed's plain RVQ on 5-frame patches (a linear projection to
the latent and the same residual quantizer, no encoder/decoder convolutions), i.e. what the context
stacks cost. Target: >= 2,000 code frames/s (160x real time) for every preset.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from muomni.config import read_json_with_base  # noqa: E402
from muomni.models.codec import CodecConfig, CodecModel  # noqa: E402

TARGET = 2000.0
BATCH, SECONDS = 8, 20.0  # 8 utterances of 20 s: 250 code frames each


def _initialised(cfg: CodecConfig) -> CodecModel:
    torch.manual_seed(0)
    model = CodecModel(cfg)
    model(torch.randn(4, 200, 128))  # one training call: k-means-initialised codebooks
    return model.eval()


def _rate(fn, mel: torch.Tensor, repeats: int = 3) -> float:
    """Best-of-repeats code frames per second of fn(mel)."""
    frames = mel.shape[0] * (mel.shape[1] // 5)
    fn(mel)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(mel)
        best = min(best, time.perf_counter() - start)
    return frames / best


@torch.inference_mode()
def run() -> list[dict]:
    rows = []
    mel = torch.randn(BATCH, int(SECONDS * 62.5), 128)
    for preset in ("codec_tiny", "codec_base"):
        cfg = CodecConfig(**read_json_with_base(ROOT / "configs" / f"{preset}.json")["model"])
        model = _initialised(cfg)
        proj = torch.nn.Linear(5 * 128, cfg.latent_dim)  # the seed: patch projection, RVQ, lookup

        def codec_round_trip(m: torch.Tensor, model=model) -> torch.Tensor:
            return model.decode(model.encode(m))

        def seed_round_trip(m: torch.Tensor, model=model, proj=proj) -> torch.Tensor:
            patches = m[:, : m.shape[1] // 5 * 5].reshape(m.shape[0], -1, 640)
            return model.rvq.decode(model.rvq.encode(proj(patches)))

        rows.append({
            "benchmark": f"{preset} encode+decode (CPU, {torch.get_num_threads()} threads)",
            "metric": "code frames per second", "value": round(_rate(codec_round_trip, mel)),
            "unit": "frames/s", "baseline": "plain RVQ on patches, no encoder/decoder",
            "baseline_value": round(_rate(seed_round_trip, mel)), "target": f">= {TARGET:.0f}",
        })
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
