"""Scale: training step rate and peak memory per stage, eager vs torch.compile, and GPU figures.

CPU (always): for each documented config (codec_tiny, codec_base, talker_tiny, vocoder_tiny, vocoder_v1)
one full training step (forward, backward, optimizer) on a synthetic fixed-shape batch of the config's
batch size, eager and compiled (inductor), each in a fresh process: steps/s (median of a few steps
after a warm-up that includes compilation), the compile time, and the peak resident memory the
training adds (ru_maxrss after the steps minus before the first). The Talker compile speed-up is
eager vs compiled measured side by side in the same run (target >= 1.2x). The vocoders are compiled
only with BENCH_SCALE_FULL=1.

GPU (only where CUDA is available; otherwise rows say why they are skipped): CUDA peak memory per
config under bf16/fp16 autocast, and Talker decode frames/s with the eager step vs the compiled step
with CUDA graphs (``compiled_decode_step``, mode "reduce-overhead").

    python bench/bench_scale.py            # about 5 minutes on 2 CPU cores
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from muomni.audio import HOP_LENGTH, N_MELS  # noqa: E402
from muomni.config import config_from_dict, read_json_with_base  # noqa: E402
from muomni.models.talker import Talker, TalkerConfig  # noqa: E402
from muomni.models.talker.common import random_batch  # noqa: E402
from muomni.models.talker.generate import compiled_decode_step, decode_one, kv_caches, prefill  # noqa: E402
from muomni.stages import codec as codec_stage  # noqa: E402
from muomni.stages import talker, vocoder  # noqa: E402
from muomni.training.device import amp_dtype, maybe_compile  # noqa: E402

THREADS = 1  # per measurement: the figures compare like with like on a shared machine
STEPS = 4  # timed steps after the warm-up
TALKER_TEXT, TALKER_FRAMES = 64, 40  # fixed batch shape (tokens, code frames) of the Talker benchmark
SEGMENT_FRAMES = 32  # vocoder: 32 mel frames = 8192 samples, the configs' segment_size
CPU_PRESETS = ["codec_tiny", "codec_base", "talker_tiny", "vocoder_tiny", "vocoder_v1"]
# Inductor needs minutes on a CPU for HiFi-GAN's generator and discriminators (hundreds of convolution
# kernels): they are compiled only with BENCH_SCALE_FULL=1, so that the default run stays near 5 minutes.
FULL = os.environ.get("BENCH_SCALE_FULL", "") not in ("", "0")
COMPILED_PRESETS = CPU_PRESETS if FULL else ["codec_tiny", "codec_base", "talker_tiny"]
VOCODER_V1_BATCH = 1  # HiFi-GAN V1 on one CPU thread: one segment per step keeps the run short
TALKER_TARGET = 1.2


def preset_config(preset: str) -> dict:
    return read_json_with_base(ROOT / "configs" / f"{preset}.json")


def build_step(preset: str, compiled: bool, device: torch.device, amp: bool = False, batch: int | None = None):
    """(one training step callable, batch size) for a documented config, on synthetic data; batch overrides
    the config's batch size."""
    torch.manual_seed(0)
    cfg = preset_config(preset)
    if preset.startswith("codec"):  # the stage's own step (stages/codec.py) on a synthetic batch of random mels
        train = {**cfg["train"], "amp": amp, **({"batch_size": batch} if batch else {})}
        state = codec_stage.new_state(config_from_dict({**cfg, "train": train}, codec_stage.CodecRun), device)
        state.trained = maybe_compile(state.model, compiled)
        batch = state.cfg.train.batch_size
        mel = torch.randn(batch, state.cfg.train.crop_frames * state.model.cfg.frames_per_token, N_MELS, device=device)
        return (lambda: codec_stage.train_step(state, mel, 0)), batch

    elif preset.startswith("talker"):  # the stage's own state and step (muomni.stages.talker)
        codec = preset_config("codec_base" if "base" in preset else "codec_tiny")["model"]  # the codec it pairs with
        batch = batch or cfg["train"].get("batch_size", 16)
        model = {**cfg["model"], "vocab_size": 64, "n_q": codec["n_codebooks"], "codebook_size": codec["codebook_size"],
                 "max_text": TALKER_TEXT, "max_frames": TALKER_FRAMES}
        train = {**cfg["train"], "batch_size": batch, "grad_accum": 1, "amp": amp, "epochs": 0}  # one batch a step
        state = talker.new_state(config_from_dict({"model": model, "train": train}, talker.TalkerRun), device)
        state.trained = maybe_compile(state.model, compiled)
        data = {**random_batch(torch.Generator().manual_seed(0), batch, TALKER_TEXT, TALKER_FRAMES, vocab_size=64,
                               n_q=codec["n_codebooks"], codebook_size=codec["codebook_size"],
                               text_lens=TALKER_TEXT // 2, code_lens=TALKER_FRAMES // 2),
                "speakers": torch.zeros(batch, dtype=torch.long), "ended": torch.ones(batch, dtype=torch.bool)}
        data = {k: v.to(device) for k, v in data.items()}

        def talker_step():  # forward, backward, the guarded optimizer step (it zeroes the gradients), schedule
            talker.train_step(state, [data], 0)

        return talker_step, batch

    else:
        on_cpu_v1 = preset == "vocoder_v1" and device.type == "cpu"
        batch = batch or (VOCODER_V1_BATCH if on_cpu_v1 else cfg["train"].get("batch_size", 2))
        mel = torch.randn(batch, SEGMENT_FRAMES, N_MELS, device=device) - 4
        wav = 0.1 * torch.randn(batch, SEGMENT_FRAMES * HOP_LENGTH, device=device)
        run_cfg = config_from_dict(cfg, vocoder.VocoderRunConfig, source=preset)
        train = dataclasses.replace(run_cfg.train, batch_size=batch, grad_accum=1, gan_start_step=0, amp=amp,
                                    compile=compiled, segment_size=SEGMENT_FRAMES * HOP_LENGTH)
        state = vocoder.new_state(dataclasses.replace(run_cfg, train=train), device)  # one process: no DDP

        def gan_step():  # the stage's adversarial step: both backwards, then both guarded optimizer steps
            vocoder.train_step(state, [(wav, mel)], 0)

        return gan_step, batch


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_cpu(preset: str, compiled: bool) -> dict:
    """In a fresh process: warm-up (compilation included), then STEPS timed steps."""
    torch.set_num_threads(THREADS)
    step, batch = build_step(preset, compiled, torch.device("cpu"))
    before = _maxrss_mib()
    start = time.perf_counter()
    for _ in range(2):
        step()
    warm = time.perf_counter() - start
    times = []
    for _ in range(STEPS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"steps_per_s": 1.0 / statistics.median(times), "warmup_s": warm, "batch": batch,
            "peak_mib": _maxrss_mib(), "train_mib": _maxrss_mib() - before}


def _in_fresh_process(fn, *args):
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)


def cpu_rows() -> list[dict]:
    rows, talker = [], {}
    for preset in CPU_PRESETS:
        eager = _in_fresh_process(measure_cpu, preset, False)
        comp = _in_fresh_process(measure_cpu, preset, True) if preset in COMPILED_PRESETS else None
        where = f"CPU, {THREADS} thread, batch {eager['batch']}"
        skipped = "skipped: compiled only with BENCH_SCALE_FULL=1 (minutes of inductor compilation on a CPU)"

        def compiled(key: str, digits: int, comp=comp):
            return round(comp[key], digits) if comp else None

        if preset == "talker_tiny":
            talker = {"eager": eager["steps_per_s"], "compiled": comp["steps_per_s"]}
        rows += [
            {"benchmark": f"{preset} training step ({where})", "metric": "steps/s, eager", "unit": "steps/s",
             "value": round(eager["steps_per_s"], 3), "baseline": None, "baseline_value": None, "target": None},
            {"benchmark": f"{preset} training step ({where})",
             "metric": "steps/s, torch.compile (inductor)" + ("" if comp else f"; {skipped}"),
             "value": compiled("steps_per_s", 3), "unit": "steps/s", "baseline": "eager",
             "baseline_value": round(eager["steps_per_s"], 3),
             "target": f">= {TALKER_TARGET}x eager" if preset == "talker_tiny" else None},
            {"benchmark": f"{preset} compile warm-up ({where})", "metric": "first two steps, compilation included",
             "value": compiled("warmup_s", 1), "unit": "s", "baseline": "eager first two steps",
             "baseline_value": round(eager["warmup_s"], 2), "target": None},
            {"benchmark": f"{preset} peak memory ({where})", "metric": "resident memory added by training, eager",
             "value": round(eager["train_mib"]), "unit": "MiB", "baseline": "compiled",
             "baseline_value": compiled("train_mib", 0), "target": None},
            {"benchmark": f"{preset} peak memory ({where})", "metric": "peak resident memory of the process, eager",
             "value": round(eager["peak_mib"]), "unit": "MiB", "baseline": "compiled",
             "baseline_value": compiled("peak_mib", 0), "target": None},
        ]
    ratio = talker["compiled"] / talker["eager"]
    # On a CPU about three quarters of a Talker step are GEMMs (aten::mm through oneDNN/MKL), which
    # inductor calls as they are; fusing the rest (norms, RoPE, SwiGLU, losses) bounds the gain near
    # 1.25x. On a GPU the decode step gains from CUDA graphs instead (see the GPU rows).
    rows.append({"benchmark": "talker_tiny compile speed-up (CPU, side by side)",
                 "metric": "compiled / eager training steps/s",
                 "value": round(ratio, 2), "unit": "x", "baseline": "eager", "baseline_value": 1.0,
                 "target": f">= {TALKER_TARGET}"})
    return rows


# ---------------------------------------------------------------- GPU


def measure_cuda_memory(preset: str) -> float:
    """Peak CUDA memory (MiB) of a training step of the config under autocast (bf16, else fp16 + scaler)."""
    device = torch.device("cuda")
    step, _ = build_step(preset, False, device, amp=True)
    torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def decode_rate(compiled: bool, batch: int = 8, frames: int = 200, device: str = "cuda") -> float:
    """Talker (talker_tiny) decode frames/s: the eager step or the compiled one (CUDA graphs on CUDA)."""
    device = torch.device(device)
    torch.manual_seed(0)
    codec = preset_config("codec_tiny")["model"]  # the codec talker_tiny pairs with
    model = Talker(TalkerConfig(**{**preset_config("talker_tiny")["model"], "vocab_size": 64,
                                   "n_q": codec["n_codebooks"], "codebook_size": codec["codebook_size"]}))
    model = model.to(device).eval()
    text = torch.randint(2, 64, (batch, 50), device=device)
    lens, spk = torch.full((batch,), 50, device=device), torch.zeros(batch, dtype=torch.long, device=device)
    step = compiled_decode_step(device.type) if compiled else None
    max_seq = 50 + frames + 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(n: int) -> None:  # prefill, then n decoding steps (clone: a CUDA graph reuses its outputs)
        logits, _, _, state = prefill(model, text, lens, spk, max_seq)
        for t in range(1, n + 1):
            logits = decode_one(model, state, logits.argmax(-1), t, step)[0].clone()

    with torch.no_grad(), kv_caches(model, batch, max_seq):  # one set of cache buffers: one graph
        run(8)  # warm-up: compilation and CUDA-graph recording
        sync()
        start = time.perf_counter()
        run(frames)
        sync()
    return batch * frames / (time.perf_counter() - start)


def gpu_rows() -> list[dict]:
    if not torch.cuda.is_available():
        reason = "skipped: no CUDA device on this machine (CPU-only torch build or no GPU)"
        return [{"benchmark": "CUDA peak training memory per config; Talker decode frames/s with/without CUDA graphs",
                 "metric": reason, "value": None, "unit": None, "baseline": None, "baseline_value": None,
                 "target": None}]
    name, dtype = torch.cuda.get_device_name(0), str(amp_dtype(torch.device("cuda"))).replace("torch.", "")
    rows = []
    for preset in CPU_PRESETS:
        rows.append({"benchmark": f"{preset} training step ({name}, {dtype} autocast)", "metric": "CUDA peak memory",
                     "value": round(_in_fresh_process(measure_cuda_memory, preset)), "unit": "MiB",
                     "baseline": None, "baseline_value": None, "target": None})
    graphs, eager = _in_fresh_process(decode_rate, True), _in_fresh_process(decode_rate, False)
    rows.append({"benchmark": f"talker_tiny decode, batch 8, 200 frames ({name})", "metric": "frames/s, CUDA graphs",
                 "value": round(graphs), "unit": "frames/s", "baseline": "eager decode step",
                 "baseline_value": round(eager), "target": None})
    return rows


def run() -> list[dict]:
    return cpu_rows() + gpu_rows()


if __name__ == "__main__":
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores, torch {torch.__version__}")
    t0 = time.perf_counter()
    for row in run():
        print(row)
    print(f"({time.perf_counter() - t0:.0f} s)")
