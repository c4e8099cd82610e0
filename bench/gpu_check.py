"""The GPU check: one script a lent GPU runs in under 5 minutes (``make gpu-check``).

1. About 50 bf16 training steps of each stage's tiny and base configs, and of the universal HiFi-GAN's
   fine-tune (configs/vocoder_universal.json), at their configured batch:
   steps/s and peak CUDA memory (``torch.cuda.max_memory_allocated``) against the 12 GB budget.
2. 20 fp16 codec steps with the GradScaler, one of them with a forced overflow (an inf gradient):
   the step is skipped, counted, the scale halves and training goes on.
3. Two compiled ``generate`` calls (CUDA graphs) with recompilations logged (TORCH_LOGS=recompiles):
   after the first call's warm-up, zero recompilations.
4. Talker tiny decode frames/s at batch 1, eager vs the compiled step (CUDA graphs).
5. Vocoder real-time factor (HiFi-GAN V1 and tiny, 5 s of mel).

Writes a markdown table (bench/gpu_results.md) and JSON (bench/gpu_results.json). Without CUDA, or
with --smoke, the same code runs at toy sizes on the CPU (a few steps, the aot_eager backend instead
of inductor) as a test; it imports only the project and its base dependencies.

    python bench/gpu_check.py            # on the GPU machine
    python bench/gpu_check.py --smoke    # CPU smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_scale import build_step, preset_config  # noqa: E402

from muomni.audio import HOP_LENGTH, N_MELS, SAMPLE_RATE  # noqa: E402
from muomni.config import read_json_with_base  # noqa: E402
from muomni.models.codec import FRAMES_PER_TOKEN, CodecConfig, CodecModel  # noqa: E402
from muomni.models.hifigan import Generator, HiFiGANConfig  # noqa: E402
from muomni.models.talker import Talker, TalkerConfig  # noqa: E402
from muomni.models.talker.generate import generate  # noqa: E402
from muomni.training.device import select_device  # noqa: E402

BUDGET_GB = 12.0
# vocoder_universal: the pretrained universal generator's fine-tune (its architecture behind the mel adapter, at
# its configured batch; the weights themselves do not change the cost)
TRAIN_PRESETS = ["codec_tiny", "codec_base", "talker_tiny", "talker_base", "talker_trm_tiny", "vocoder_tiny",
                 "vocoder_v1", "vocoder_universal"]
SMOKE_PRESETS = ["codec_tiny", "talker_tiny", "vocoder_tiny"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def train_rows(device: torch.device, smoke: bool) -> list[dict]:
    """~50 mixed-precision steps per config (bf16 where supported): steps/s, peak memory vs the budget."""
    rows = []
    steps, warm = (1, 1) if smoke else (50, 5)
    for preset in SMOKE_PRESETS if smoke else TRAIN_PRESETS:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            step, batch = build_step(preset, False, device, amp=True, batch=2 if smoke else None)
            for _ in range(warm):
                step()
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
            rate, error = steps / (time.perf_counter() - start), ""
        except torch.OutOfMemoryError as err:  # a config that does not fit is a finding, not a crash
            rate, batch, error = None, None, f"out of memory: {str(err)[:80]}"
        peak = _peak_gb(device)
        rows.append({"check": f"train {preset}", "batch": batch, "steps_per_s": rate and round(rate, 2),
                     "peak_gb": peak and round(peak, 2), "fits_12gb": None if peak is None else peak < BUDGET_GB,
                     "note": error})
    return rows


def fp16_overflow_row(device: torch.device, smoke: bool) -> dict:
    """20 fp16 codec steps; step 10 gets an inf gradient: skipped by the scaler, counted, training goes on."""
    torch.manual_seed(0)
    cfg = preset_config("codec_tiny")
    model = CodecModel(CodecConfig(**cfg["model"])).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16)
    batch, crop = (1, 2) if smoke else (cfg["train"]["batch_size"], cfg["train"]["crop_frames"])
    mel = torch.randn(batch, crop * model.cfg.frames_per_token, N_MELS, device=device)
    cast = torch.autocast(device.type, dtype=torch.float16) if device.type == "cuda" else torch.autocast(
        device.type, enabled=False)
    skipped, scales, losses = 0, [], []
    for i in range(20):
        opt.zero_grad(set_to_none=True)
        with cast:
            out = model(mel)
        loss = out.losses["recon"] + 0.25 * out.losses["commit"]
        scaler.scale(loss).backward()
        if i == 10:  # the forced overflow
            next(p for p in model.parameters() if p.grad is not None).grad.fill_(float("inf"))
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        before = scaler.get_scale()
        scaler.step(opt)  # skips the update when unscale_ found inf/NaN
        scaler.update()  # every step, accepted or not: the next unscale_ needs it
        skipped += scaler.get_scale() < before
        scales.append(scaler.get_scale())
        losses.append(float(loss.detach()))
    ok = skipped >= 1 and all(map(lambda v: v == v and abs(v) != float("inf"), losses[11:]))
    return {"check": "fp16 codec, 20 steps, forced overflow at step 10", "skipped_steps": int(skipped),
            "final_scale": scales[-1], "passed": bool(ok)}


def _tiny_talker(device: torch.device):
    model_cfg = read_json_with_base(ROOT / "configs" / "talker_tiny.json")["model"]
    codec = preset_config("codec_tiny")["model"]  # the codec it pairs with
    torch.manual_seed(0)
    return Talker(TalkerConfig(**{**model_cfg, "vocab_size": 40, "n_q": codec["n_codebooks"],
                                  "codebook_size": codec["codebook_size"]})).to(device).eval()


def _decode_inputs(device: torch.device, frames: int, text: int = 50, batch: int = 1):
    tokens = torch.randint(2, 40, (batch, text), device=device)
    # exactly `frames` code frames of FRAMES_PER_TOKEN sub-frames (the duration path's unit, sub_frames)
    durations = torch.full((batch, text), frames * FRAMES_PER_TOKEN // text, device=device)
    return tokens, torch.full((batch,), text, device=device), torch.zeros(batch, dtype=torch.long, device=device), \
        durations


def compile_rows(device: torch.device, smoke: bool) -> list[dict]:
    """Two compiled generate calls with recompilations logged, then decode frames/s eager vs compiled."""
    from torch._dynamo.utils import counters

    backend = "aot_eager" if smoke or device.type != "cuda" else True  # True: inductor, CUDA graphs on a GPU
    frames = 10 if smoke else 200
    model = _tiny_talker(device)
    text, lens, spk, dur = _decode_inputs(device, frames)
    torch._dynamo.reset()
    torch._logging.set_logs(recompiles=True)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("torch._dynamo").addHandler(handler)
    try:
        counters.clear()
        start = time.perf_counter()
        generate(model, text, lens, spk, temperature=0.0, durations=dur, compile=backend)
        _sync(device)
        warm_s = time.perf_counter() - start
        graphs = counters["stats"]["unique_graphs"]
        counters.clear()
        records.clear()
        generate(model, text, lens, spk, temperature=0.0, durations=dur, compile=backend)
        recompiles = sum(counters["recompiles"].values()) + counters["stats"]["unique_graphs"]
    finally:
        logging.getLogger("torch._dynamo").removeHandler(handler)
        torch._logging.set_logs()

    def rate(compile_) -> float:
        best = float("inf")
        for _ in range(1 if smoke else 3):
            _sync(device)
            start = time.perf_counter()
            codes, _ = generate(model, text, lens, spk, temperature=0.0, durations=dur, compile=compile_)
            _sync(device)
            best = min(best, time.perf_counter() - start)
        assert codes.shape[1] == frames, codes.shape
        return frames / best

    eager, compiled = rate(False), rate(backend)
    return [
        {"check": "compiled generate x2", "first_call_s": round(warm_s, 2), "graphs_first_call": graphs,
         "recompiles_after_warmup": recompiles, "recompile_log": records[:3], "passed": recompiles == 0},
        {"check": f"Talker tiny decode, batch 1, {frames} frames", "eager_frames_per_s": round(eager, 1),
         "compiled_frames_per_s": round(compiled, 1), "speedup": round(compiled / eager, 2),
         "backend": "aot_eager" if backend == "aot_eager" else "inductor reduce-overhead (CUDA graphs)"},
    ]


def vocoder_rows(device: torch.device, smoke: bool) -> list[dict]:
    """Real-time factor of the HiFi-GAN generators: compute time / audio time, 5 s of mel (smoke: 1 s)."""
    rows = []
    seconds = 0.25 if smoke else 5.0
    frames = int(seconds * SAMPLE_RATE / HOP_LENGTH)
    for preset in ["vocoder_tiny"] if smoke else ["vocoder_tiny", "vocoder_v1"]:
        torch.manual_seed(0)
        gen = Generator(HiFiGANConfig(**preset_config(preset)["model"])).to(device).eval()
        mel = torch.randn(1, frames, N_MELS, device=device) - 4
        with torch.no_grad():
            gen(mel)
            _sync(device)
            start = time.perf_counter()
            wav = gen(mel)
            _sync(device)
        elapsed = time.perf_counter() - start
        rows.append({"check": f"vocoder {preset} real-time factor", "audio_s": round(wav.shape[-1] / SAMPLE_RATE, 2),
                     "rtf": round(elapsed / (wav.shape[-1] / SAMPLE_RATE), 4)})
    return rows


def to_markdown(device_name: str, rows: list[dict]) -> str:
    lines = [f"# GPU check ({device_name})", "", "| check | result |", "|---|---|"]
    for row in rows:
        rest = ", ".join(f"{k} {v}" for k, v in row.items() if k != "check" and v not in ("", None, []))
        lines.append(f"| {row['check']} | {rest} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes on any device (the CPU test)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_results.md", help="markdown table")
    args = parser.parse_args(argv)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    smoke = args.smoke or device.type != "cuda"
    if device.type == "cpu":
        torch.set_num_threads(1)  # a smoke run beside other work: one thread never oversubscribes the cores
    if device.type == "cuda":
        device = select_device("cuda")  # TF32 and cuDNN autotuning, as the stages run
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.processor() or ''}"
    name += f", torch {torch.__version__}" + (", smoke sizes" if smoke else "")
    start = time.perf_counter()
    rows = train_rows(device, smoke) + [fp16_overflow_row(device, smoke)] + compile_rows(device, smoke) \
        + vocoder_rows(device, smoke)
    rows.append({"check": "total wall time", "seconds": round(time.perf_counter() - start, 1)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_markdown(name, rows))
    args.out.with_suffix(".json").write_text(json.dumps({"device": name, "rows": rows}, indent=2) + "\n")
    print(to_markdown(name, rows))
    failed = [r["check"] for r in rows if r.get("passed") is False or r.get("fits_12gb") is False]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
