"""The two speech recognisers side by side on the demo corpus: word error and cost.

On the first ``LIMIT`` held-out utterances of the demo corpus (``BENCH_ASR_DATA=DIR`` names another),
the flite ground truth and Griffin-Lim on its original mels go through Whisper (the bundled tiny.en)
and pocketsphinx in the same run: word error pooled and per voice, each recogniser's cost in seconds
per second of audio, and what an evaluation of 40 such sentences costs with Whisper. Also the price
of pocketsphinx's independence between utterances: a fresh decoder per utterance against resetting
the loaded decoder's cepstral mean. Every transcript, the wavs and a listening page go to
outputs/bench_asr/.

    python bench/bench_asr.py
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
from muomni.eval.asr import PocketsphinxASR  # noqa: E402
from muomni.eval.listening import write_listening_page  # noqa: E402
from muomni.eval.scoring import score_systems  # noqa: E402
from muomni.models.griffinlim import mel_to_wav  # noqa: E402
from muomni.synthesis_config import GRIFFIN_LIM_ITERS  # noqa: E402

LIMIT = int(os.environ.get("BENCH_ASR_LIMIT", "40"))
ASRS = [("whisper", ""), ("pocketsphinx", "")]


def run() -> list[dict]:
    data = demo_corpus("BENCH_ASR_DATA")
    row = {"benchmark": "speech recognisers: Whisper tiny.en vs pocketsphinx", "baseline": "pocketsphinx"}
    if data is None:
        return [not_measured(row)]
    items = load_corpus(DataConfig(path=str(data))).heldout[:LIMIT]
    truth = [load_audio(it.path) for it in items]
    gl = [mel_to_wav(log_mel(w)[0], n_iter=GRIFFIN_LIM_ITERS)[: len(w)].numpy() for w in truth]
    out = ROOT / "outputs" / "bench_asr"  # every transcript, the wavs and a listening page, for a look afterwards
    scores = score_systems(items, {"ground_truth": truth, "griffinlim": gl}, ASRS, out)
    (out / "report.json").write_text(json.dumps({"kind": "asr bench", **scores}, indent=2) + "\n")
    write_listening_page(out / "index.html", [{"kind": "asr bench", **scores}], "muomni: Whisper vs pocketsphinx")
    whisper, sphinx = scores["asr"]["recognisers"]
    seconds = sum(len(w) for w in truth) / SAMPLE_RATE
    rows = []
    for system in ("ground_truth", "griffinlim"):
        rows.append({**row, "metric": f"word error, {system}, {len(items)} held-out utterances ({whisper})",
                     "value": round(scores["wer_by_asr"][whisper][system], 3), "unit": "word error",
                     "baseline_value": round(scores["wer_by_asr"][sphinx][system], 3), "target": None})
        for speaker, d in scores["wer_by_speaker"][whisper].items():
            rows.append({**row, "metric": f"word error, {system}, {speaker} ({d['utterances']} utterances)",
                         "value": round(d[system], 3), "unit": "word error",
                         "baseline_value": round(scores["wer_by_speaker"][sphinx][speaker][system], 3),
                         "target": None})
    cost = scores["asr"]["seconds_per_audio_second"]
    rows.append({**row, "metric": f"cost, {torch.get_num_threads()} threads", "value": cost[whisper],
                 "unit": "s per audio s", "baseline_value": cost[sphinx], "target": None})
    rows.append({**row, "metric": f"Whisper on 40 sentences like these ({seconds / len(items):.2f} s each)",
                 "value": round(cost[whisper] * seconds / len(items) * 40, 1), "unit": "s",
                 "baseline_value": round(cost[sphinx] * seconds / len(items) * 40, 1), "target": "< 120"})
    rows.append({**row, "metric": "hallucinations flagged (either recogniser)", "value": len(scores["hallucinations"]),
                 "unit": "utterances", "baseline_value": None, "target": None})
    start = time.perf_counter()
    for _ in range(3):
        PocketsphinxASR()
    fresh = (time.perf_counter() - start) / 3
    decoder = PocketsphinxASR()
    start = time.perf_counter()
    for _ in range(100):
        decoder.decoder.set_cmn(decoder._cmn)
    rows.append({**row, "benchmark": "pocketsphinx state per utterance", "metric": "reset the cepstral mean",
                 "value": (time.perf_counter() - start) / 100, "unit": "s per utterance",
                 "baseline": "a fresh Decoder", "baseline_value": round(fresh, 3), "target": None})
    for f in scores["hallucinations"]:
        print(f"hallucination? {f}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r))
