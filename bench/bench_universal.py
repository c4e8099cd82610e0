"""The pretrained universal HiFi-GAN behind muomni's mels: real-time factor per adapter beside Griffin-Lim.

On the first ``LIMIT`` held-out utterances of the demo corpus (``BENCH_UNIVERSAL_DATA=DIR`` names another), on
``BENCH_THREADS`` threads (default 2): seconds of compute per second of audio for the universal generator
behind each adapter (models/universal.py: "resample" at 22.05 kHz with a torch polyphase resampler, "stretch"
at muomni's frame rate), with Griffin-Lim (32 iterations) as the baseline, each the best of ``REPEATS``
passes taken in turn, so that a busy machine slows every system alike (``BENCH_UNIVERSAL_VOCODER=RUN`` adds a
trained vocoder, such as a learned adapter's run, as "trained"); then where an adapter's time goes
(the adapter, the generator, the resampler, against librosa's default resampler on the same audio), and the
round trip: mean |log-mel(out) - mel| over the speech cells (above -7).

    python bench/bench_universal.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo_data import demo_corpus, not_measured  # noqa: E402

from muomni.audio import SAMPLE_RATE, load_audio, log_mel  # noqa: E402
from muomni.config import DataConfig  # noqa: E402
from muomni.data import load_corpus  # noqa: E402
from muomni.load import load_vocoder  # noqa: E402
from muomni.models.griffinlim import mel_to_wav  # noqa: E402
from muomni.synthesis_config import GRIFFIN_LIM_ITERS  # noqa: E402

LIMIT = int(os.environ.get("BENCH_UNIVERSAL_LIMIT", "6"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
REPEATS = 3


def _best(fns: dict, mels: list[torch.Tensor]) -> dict[str, float]:
    """Per function, the best of REPEATS passes over every mel, in seconds; the functions take turns within a
    pass, so that a machine busy with other work slows each of them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(REPEATS):
        for name, fn in fns.items():
            start = time.perf_counter()
            with torch.no_grad():
                for mel in mels:
                    fn(mel)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def run() -> list[dict]:
    data = demo_corpus("BENCH_UNIVERSAL_DATA")
    row = {"benchmark": f"universal HiFi-GAN, {THREADS} threads",
           "baseline": f"Griffin-Lim, {GRIFFIN_LIM_ITERS} iterations"}
    if data is None:
        return [not_measured(row)]
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        mels = [log_mel(load_audio(it.path))[0] for it in load_corpus(DataConfig(path=str(data))).heldout[:LIMIT]]
        seconds = sum(m.shape[0] for m in mels) * 256 / SAMPLE_RATE
        vocoders = {name: load_vocoder(f"universal:{name}") for name in ("resample", "stretch")}
        if os.environ.get("BENCH_UNIVERSAL_VOCODER"):  # a trained one beside them, e.g. a learned adapter's run
            vocoders["trained"] = load_vocoder(os.environ["BENCH_UNIVERSAL_VOCODER"])
        for v in vocoders.values():  # warm up
            with torch.no_grad():
                v(mels[0][:50])
        times = _best({"griffinlim": lambda m: mel_to_wav(m, n_iter=GRIFFIN_LIM_ITERS), **vocoders}, mels)
        rows = []
        for name, v in vocoders.items():
            rows.append({**row, "metric": f"real-time factor, {name} adapter ({len(mels)} utterances, "
                                          f"{seconds:.1f} s)", "value": round(times[name] / seconds, 3),
                         "unit": "s per audio s", "baseline_value": round(times["griffinlim"] / seconds, 3),
                         "target": "< 1"})
            inputs = [v.adapter(m[None]) for m in mels]
            parts = _best({"adapter": lambda m, v=v: v.adapter(m[None])}, mels)
            parts.update(_best({"generator": v.generator}, inputs))
            if v.resample is not None:
                import librosa

                with torch.no_grad():
                    outs = [v.generator(x) for x in inputs]
                parts.update(_best({"torch resampler": v.resample, "librosa resample (soxr_hq)": lambda w: librosa
                                    .resample(w.numpy(), orig_sr=22050, target_sr=SAMPLE_RATE)}, outs))
            for part, t in parts.items():
                rows.append({**row, "metric": f"{name} adapter: {part}", "value": round(t / seconds, 4),
                             "unit": "s per audio s", "baseline": None, "baseline_value": None, "target": None})
            l1 = []
            with torch.no_grad():
                for mel in mels:
                    out = log_mel(v(mel))[0, : mel.shape[0]]
                    speech = mel > -7
                    l1.append((out - mel)[speech].abs().mean().item())
            rows.append({**row, "metric": f"{name} adapter: speech-cell log-mel L1 of the round trip",
                         "value": round(sum(l1) / len(l1), 3), "unit": "nats (log power)",
                         "baseline_value": round(sum((log_mel(mel_to_wav(m))[0, : m.shape[0]] - m)[m > -7].abs()
                                                     .mean().item() for m in mels) / len(mels), 3), "target": None})
        return rows
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r))
