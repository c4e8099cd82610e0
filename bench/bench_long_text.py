"""A paragraph through ``infer_tts.py`` against its sentences one by one: Whisper word error of each.

Held-out sentences of one voice are grouped five at a time into paragraphs (about 60 words). Each
paragraph is one line of a text file given to ``infer_tts.py --text-file`` (synthesis splits it at
sentence and clause boundaries, generates the pieces in one batch and joins them with pauses); the same
sentences, one per line, are synthesized as well. Whisper transcribes the paragraph wavs against the
joined references and the sentence wavs against theirs. Target: the paragraphs' word error at most
1.2 x the sentences' (same Talker, same run, greedy decoding, Griffin-Lim 32 iterations).

    python bench/bench_long_text.py checkpoints/demo/talker --data data/demo --paragraphs 40
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from itertools import zip_longest
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import infer_tts  # noqa: E402
from muomni.config import DataConfig  # noqa: E402
from muomni.data import load_corpus  # noqa: E402
from muomni.eval.asr import load_asr  # noqa: E402
from muomni.eval.wer import word_error_rate  # noqa: E402

DEMO_TALKER = ROOT / "checkpoints" / "demo" / "talker"
TARGET = 1.2


def paragraphs(data: str, n: int, size: int) -> list[tuple[str, list[str]]]:
    """Up to n (speaker, [size sentences]) groups of consecutive held-out sentences of one voice."""
    by_voice: dict[str, list[str]] = defaultdict(list)
    for item in load_corpus(DataConfig(path=data)).heldout:
        by_voice[item.speaker].append(item.text.strip())
    per_voice = [[(voice, texts[i:i + size]) for i in range(0, len(texts) - size + 1, size)]
                 for voice, texts in by_voice.items()]
    return [g for tier in zip_longest(*per_voice) for g in tier if g][:n]  # the voices taken in turn


def synthesize_lines(talker: str, lines: list[str], out: Path) -> list:
    """Each 'speaker|text' line through infer_tts.py -> the wavs, in order."""
    out.mkdir(parents=True)
    (out / "lines.txt").write_text("\n".join(lines) + "\n")
    code = infer_tts.main(["--talker", talker, "--text-file", str(out / "lines.txt"), "--out-dir", str(out),
                           "--max-seconds", "60"])
    if code:
        raise SystemExit(f"infer_tts.py failed (exit {code})")
    items = json.loads((out / "manifest.json").read_text())["items"]
    return [sf.read(item["wav"], dtype="float32")[0] for item in items]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("talker", help="Talker checkpoint or run folder")
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--paragraphs", type=int, default=40)
    parser.add_argument("--sentences", type=int, default=5, help="sentences per paragraph")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    groups = paragraphs(args.data, args.paragraphs, args.sentences)
    asr = load_asr("whisper")
    with tempfile.TemporaryDirectory() as tmp:
        para_wavs = synthesize_lines(args.talker, [f"{v}|{' '.join(s)}" for v, s in groups], Path(tmp) / "p")
        sent_wavs = synthesize_lines(args.talker, [f"{v}|{t}" for v, s in groups for t in s], Path(tmp) / "s")
    para_refs = [" ".join(s) for _, s in groups]
    sent_refs = [t for _, s in groups for t in s]
    row = {"talker": args.talker, "paragraphs": len(groups), "sentences": len(sent_refs),
           "words": sum(len(r.split()) for r in para_refs),
           "wer_paragraphs": round(word_error_rate(para_refs, asr.transcribe(para_wavs)), 4),
           "wer_sentences": round(word_error_rate(sent_refs, asr.transcribe(sent_wavs)), 4)}
    row["ratio"] = round(row["wer_paragraphs"] / max(row["wer_sentences"], 1e-9), 3)
    print(json.dumps(row), flush=True)
    return row


def run() -> list[dict]:
    """make bench: the demo Talker's paragraphs against its sentences (needs make demo and the eval extra)."""
    base = {"benchmark": "long text (Whisper tiny.en, held-out sentences in paragraphs of 5)", "unit": "word error",
            "baseline": "the same sentences one by one", "target": f"<= {TARGET} x the sentences'"}
    if not DEMO_TALKER.is_dir() or not (ROOT / "data" / "demo" / "metadata.csv").is_file():
        return [{**base, "metric": "paragraphs (not measured: run make demo first)", "value": None,
                 "baseline_value": None}]
    try:
        load_asr("whisper")
    except ImportError as err:
        return [{**base, "metric": f"paragraphs (not measured: {err})", "value": None, "baseline_value": None}]
    row = main([str(DEMO_TALKER), "--data", str(ROOT / "data" / "demo"), "--paragraphs", "10"])
    return [{**base, "metric": f"{row['paragraphs']} paragraphs ({row['words']} words)",
             "value": row["wer_paragraphs"], "baseline_value": row["wer_sentences"]}]


if __name__ == "__main__":
    main()
