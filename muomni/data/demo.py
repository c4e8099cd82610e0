"""Build the demo corpus: generated sentences read by flite voices, in LJSpeech layout.

    python -m muomni.data.demo --out data/demo --utterances 1000 --voices slt,rms,awb,kal16 --seed 0

writes ``wavs/<id>.wav``, ``metadata.csv`` (``id|speaker|text|normalized_text``; flite reads the
normalised text, so it is also the reference for ASR scores) and ``demo.json`` (the arguments).
The same arguments give the same corpus, and a rerun that finds it complete returns at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from muomni.data.sentences import SentenceGenerator
from muomni.text import normalize_text

DEFAULT_VOICES = ("slt", "rms", "awb", "kal16")
FLITE_MISSING = "flite is not installed: sudo apt-get install flite (Debian/Ubuntu package 'flite')"


def require_flite() -> str:
    """Path of the flite binary, or RuntimeError naming the Debian package."""
    path = shutil.which("flite")
    if path is None:
        raise RuntimeError(FLITE_MISSING)
    return path


def plan(utterances: int, voices: list[str], seed: int) -> list[tuple[str, str, str, str]]:
    """(id, voice, text, normalized_text) of every utterance; a pure function of the arguments."""
    rng = random.Random(f"voices:{seed}")
    texts = SentenceGenerator(seed).sentences(utterances)
    return [(f"demo_{i:05d}", rng.choice(voices), t, normalize_text(t)) for i, t in enumerate(texts)]


def build_demo(out: str | os.PathLike, utterances: int = 1000, voices: list[str] | tuple[str, ...] = DEFAULT_VOICES,
               seed: int = 0, jobs: int | None = None, progress: bool = True) -> Path:
    """Synthesize the corpus into ``out`` unless the same arguments already built it there."""
    out, voices = Path(out), list(voices)
    if utterances < 1:
        raise ValueError("--utterances must be at least 1")
    rows = plan(utterances, voices, seed)
    # the plan's hash makes a corpus built by an older sentence generator count as stale
    args = {"utterances": utterances, "voices": voices, "seed": seed,
            "plan_sha1": hashlib.sha1("\n".join("|".join(row) for row in rows).encode()).hexdigest()}
    done_file = out / "demo.json"
    if done_file.is_file() and json.loads(done_file.read_text()).get("args") == args \
            and (out / "metadata.csv").is_file() and all((out / "wavs" / f"{row[0]}.wav").is_file() for row in rows):
        return out
    flite = require_flite()
    _check_voices(flite, voices)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    done_file.unlink(missing_ok=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        work = pool.map(lambda row: _synthesize(flite, out / "wavs" / f"{row[0]}.wav", row[1], row[3]), rows)
        for _ in tqdm(work, total=len(rows), desc="flite", unit="utt", disable=not progress):
            pass
    keep = {f"{uid}.wav" for uid, *_ in rows}
    for stale in (out / "wavs").glob("*.wav"):
        if stale.name not in keep:
            stale.unlink()
    _write_atomic(out / "metadata.csv", "".join("|".join(row) + "\n" for row in rows))
    seconds = round(time.perf_counter() - start, 1)
    _write_atomic(done_file, json.dumps({"args": args, "build_seconds": seconds}, indent=1) + "\n")
    return out


def _synthesize(flite: str, path: Path, voice: str, text: str) -> None:
    """One flite call, written to a temp name and renamed so that a killed build leaves no half wav."""
    tmp = path.with_name(f".{path.name}.tmp.wav")
    result = subprocess.run([flite, "-voice", voice, "-t", text, "-o", str(tmp)], capture_output=True, text=True)
    if result.returncode != 0 or not tmp.is_file():
        raise RuntimeError(f"flite failed for {path.name} (voice {voice}): {result.stderr.strip()[:300]}")
    os.replace(tmp, path)


def _check_voices(flite: str, voices: list[str]) -> None:
    listed = subprocess.run([flite, "-lv"], capture_output=True, text=True).stdout.split(":")[-1].split()
    unknown = [v for v in voices if v not in listed]
    if unknown:
        raise ValueError(f"flite has no voice {', '.join(unknown)}; available: {', '.join(listed)}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m muomni.data.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/demo", help="corpus folder (default: data/demo)")
    parser.add_argument("--utterances", type=int, default=1000, help="number of sentences (default: 1000)")
    parser.add_argument("--voices", default=",".join(DEFAULT_VOICES), help="comma-separated flite voices")
    parser.add_argument("--seed", type=int, default=0, help="sentence and voice seed (default: 0)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel flite processes (default: CPU count)")
    args = parser.parse_args(argv)
    started = time.time()
    try:
        out = build_demo(args.out, args.utterances, [v for v in args.voices.split(",") if v], args.seed, args.jobs)
    except (RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    done_file = out / "demo.json"
    how = "already complete, reused" if done_file.stat().st_mtime < started else \
        f"built in {json.loads(done_file.read_text())['build_seconds']} s"
    print(f"demo corpus: {out} ({args.utterances} utterances, {how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
