"""What rating naturalness costs: DNSMOS (muomni.eval.mos) beside Whisper tiny.en on the same held-out audio.

On the first ``LIMIT`` held-out utterances of the demo corpus (``BENCH_MOS_DATA=DIR`` names another), the
flite ground truth is rated by DNSMOS (P.835 and P.808, the ONNX sessions built once) and transcribed by
Whisper: seconds per audio second and per utterance for each, with torch's thread count; and the package's
own entry point ``speechmos.dnsmos.run``, which rebuilds both sessions on every call, on two of the clips.
DNSMOS tiles a clip shorter than its 9.01 s window by doubling it and scores every 1 s hop of the result,
so a 3 s clip costs five windows: its cost is per utterance more than per second.

    python bench/bench_mos.py
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

from muomni.audio import SAMPLE_RATE, load_audio  # noqa: E402
from muomni.config import DataConfig  # noqa: E402
from muomni.data import load_corpus  # noqa: E402
from muomni.eval.asr import load_asr  # noqa: E402
from muomni.eval.mos import load_mos  # noqa: E402

LIMIT = int(os.environ.get("BENCH_MOS_LIMIT", "10"))


def run() -> list[dict]:
    data = demo_corpus("BENCH_MOS_DATA")
    row = {"benchmark": f"naturalness: DNSMOS, {torch.get_num_threads()} threads", "baseline": "Whisper tiny.en"}
    if data is None:
        return [not_measured(row)]
    wavs = [load_audio(it.path) for it in load_corpus(DataConfig(path=str(data))).heldout[:LIMIT]]
    seconds = sum(len(w) for w in wavs) / SAMPLE_RATE
    start = time.perf_counter()
    scorer = load_mos("dnsmos")
    build = time.perf_counter() - start
    start = time.perf_counter()
    ratings = scorer.score(wavs)
    dnsmos = time.perf_counter() - start
    asr = load_asr("whisper")
    start = time.perf_counter()
    asr.transcribe(wavs)
    whisper = time.perf_counter() - start

    from speechmos import dnsmos as package

    start = time.perf_counter()
    for wav in wavs[:2]:
        package.dnsmos = None  # what a script calling run() per clip pays: sessions rebuilt each time
        package.run(wav.clip(-1, 1), SAMPLE_RATE)
    per_call = (time.perf_counter() - start) / 2
    each = seconds / len(wavs)
    return [
        {**row, "metric": f"cost, {len(wavs)} held-out utterances ({each:.2f} s each)",
         "value": round(dnsmos / seconds, 4), "unit": "s per audio s", "baseline_value": round(whisper / seconds, 4),
         "target": None},
        {**row, "metric": "cost per utterance", "value": round(dnsmos / len(wavs), 3), "unit": "s",
         "baseline_value": round(whisper / len(wavs), 3), "target": None},
        {**row, "metric": "building the two ONNX sessions (once per process)", "value": round(build, 3),
         "unit": "s", "baseline": "speechmos.dnsmos.run per clip (sessions rebuilt)",
         "baseline_value": round(per_call, 3), "target": None},
        {**row, "metric": "DNSMOS on 40 sentences like these, per system", "value": round(dnsmos / len(wavs) * 40, 1),
         "unit": "s", "baseline_value": round(whisper / len(wavs) * 40, 1), "target": None},
        {**row, "metric": "mean OVRL of the flite ground truth", "value": round(
            sum(r["ovrl"] for r in ratings) / len(ratings), 3), "unit": "1-5", "baseline": None,
         "baseline_value": None, "target": None},
    ]


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r))
