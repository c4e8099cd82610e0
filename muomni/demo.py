"""The end-to-end demo behind ``make demo``: corpus -> codec -> codes -> Talker -> vocoder -> wavs.

Each stage runs the same command a user would type, so its progress bar shows. Every run lives
under ``checkpoints/demo/`` (``make clean-demo`` removes it with the corpus and the outputs).

A training stage is skipped only when its run has finished (it reached its configured step count,
or its time budget ``train.max_minutes`` ran out: stats.json "ended") *and* was trained on what the
demo has now: the same config values, the same corpus item list and, for the Talker, the same codec.
Otherwise the demo says why and retrains it from scratch; an interrupted run of the same config and
data is resumed (``--resume``).

Each stage has a time budget (``STAGE_BUDGET_MINUTES``, sized so that the whole demo fits 30 minutes
on a slow 2-core machine); the training stages get it as ``train.max_minutes`` less a margin for
their setup and final evaluation. Every stage prints its time and budget and says when it ran over;
the time of every stage, its budget and the final evaluation table are written to
``outputs/demo/summary.json`` and printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .checkpoint import step_checkpoints
from .config import read_json_with_base
from .data import corpus_fingerprint
from .eval.asr import whisper_available
from .eval.listening import write_listening_page
from .eval.mos import FIELD_LABELS, FIELDS
from .files import write_json
from .load import load_codec
from .models.codec import codec_hash
from .pretrained import PretrainedMissing, weights_path

PY = sys.executable
CONFIGS = Path("configs/demo")
DEMO_RUNS = Path("checkpoints/demo")  # every demo run lives here (make clean-demo removes it)

# Minutes per stage: the whole demo in 30 minutes on a slow 2-core machine (the Talker at ~1 step/s).
# The corpus, check and evaluation stages do not stop on their budgets, so theirs are sized from measured
# runs with room to spare (the corpus: 64-149 s, the slowest on a slow hour; evaluate codec 30-85 s; check
# 2-6 s); the Talker gave them 3.5 minutes (on a CPU with bf16 its autocast steps 1.24-1.38x faster at 2
# threads, so it trains about as many steps in 11.5 minutes as it did in 15; docs/RESULTS.md). The demo
# trains no vocoder: its 400-step HiFi-GAN was never intelligible, and the pretrained universal generator
# (the 'universal' extra) is as intelligible as Griffin-Lim and rated more natural (docs/RESULTS.md
# 2026-12-07); the synthesize stage voices the TTS with it and scores Griffin-Lim on the same mels beside it,
# with DNSMOS, in the 3.25 minutes the vocoder stages had.
STAGE_BUDGET_MINUTES: dict[str, float] = {
    "corpus": 3.0, "check corpus": 0.25, "codec": 3.5, "tokenize": 1.0, "talker": 11.5,
    "synthesize": 7.25, "evaluate codec": 2.0, "pictures": 0.5,
}
# Stages scored by every recogniser of --asr and by DNSMOS; the others by the headline (first) recogniser
# alone. The second recogniser and DNSMOS are read beside the headline on the table's first and last rows
# (ground truth, TTS), which the synthesize stage scores; Griffin-Lim on the original mels and the codec
# round trip sit between rows that both already score (DNSMOS costs ~1 s per clip on 2 cores).
ALL_ASR_STAGES = ("synthesize",)
# Minutes of a training stage's budget kept for its setup (data caches, model build) and final evaluation;
# the rest is its train.max_minutes.
TRAIN_SETUP_MINUTES: dict[str, float] = {"codec": 1.0, "talker": 1.5}


def final_step(config: Path) -> int:
    return int(read_json_with_base(config).get("train", {}).get("steps", 0))


def run_dir(config: Path) -> Path:
    train = read_json_with_base(config).get("train", {})
    return Path(train.get("out_dir", "checkpoints")) / (train.get("run_name") or config.stem)


def newest_checkpoint(config: Path) -> Path:
    found = step_checkpoints(run_dir(config))
    if not found:
        raise SystemExit(f"demo: no checkpoint in {run_dir(config)} after training")
    return found[-1][1]


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def config_changes(config: Path, recorded: dict[str, Any]) -> list[str]:
    """'section.key' of every value the demo config sets that the run's config.json holds differently."""
    changes = []
    for section, values in read_json_with_base(config).items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if recorded.get(section, {}).get(key) != value and key not in ("max_minutes",):
                changes.append(f"{section}.{key}: {recorded.get(section, {}).get(key)!r} -> {value!r}")
    return changes


def data_changes(folder: Path, expected: dict[str, str]) -> list[str]:
    """What the run trained on (stats.json "data") that differs from ``expected`` (name -> fingerprint)."""
    recorded = _read(folder / "stats.json").get("data", {})
    return [f"the {name} changed" if name in recorded else f"no record of its {name}"
            for name, value in expected.items() if recorded.get(name) != value]


def finished(config: Path, expected: dict[str, str] | None = None) -> tuple[bool, str]:
    """(whether the run of ``config`` is done and trained on the current data, why not / why it is)."""
    folder = run_dir(config)
    found = step_checkpoints(folder)
    if not found:
        return False, "no checkpoint yet"
    stale = config_changes(config, _read(folder / "config.json")) + data_changes(folder, expected or {})
    if stale:
        return False, "stale: " + "; ".join(stale)
    ended = _read(folder / "stats.json").get("ended", {})
    if found[-1][0] >= final_step(config):
        return True, f"done ({found[-1][0]} steps)"
    if ended.get("reason") == "max_minutes" and ended.get("step") == found[-1][0]:
        return True, f"done (time budget reached at step {found[-1][0]})"
    return False, f"interrupted at step {found[-1][0]}"


def codec_id(config: Path) -> str:
    return codec_hash(load_codec(newest_checkpoint(config)))


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.times: dict[str, float] = {}

    def stage(self, name: str, cmd: list[str], skip: bool = False, why: str = "") -> None:
        budget = STAGE_BUDGET_MINUTES.get(name, 0.0)
        print(f"\n=== demo stage: {name} (budget {budget:g} min)" + (f" -- skipped, {why}" if skip else
              f" -- {why}" if why else ""), flush=True)
        if skip:
            self.times[name] = 0.0
            return
        print("$ " + " ".join(cmd), flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd)
        self.times[name] = seconds = round(time.perf_counter() - start, 1)
        over = f" -- OVER its budget of {budget:g} min by {seconds - 60 * budget:.0f} s" if (
            budget and seconds > 60 * budget) else ""
        print(f"=== demo stage: {name} took {seconds:.0f} s of its {60 * budget:.0f} s budget{over}", flush=True)
        if code != 0:
            raise SystemExit(f"demo: stage '{name}' failed (exit {code}); fix the message above and rerun "
                             "`make demo`: finished stages are skipped and this one resumes")

    def train(self, name: str, script: str, config: Path, expected: dict[str, str] | None = None) -> Path:
        done, why = finished(config, expected)
        folder = run_dir(config)
        if not done and why.startswith("stale") and folder.is_dir():
            if DEMO_RUNS.resolve() not in folder.resolve().parents:
                raise SystemExit(f"demo: {folder} is {why}, and it is not under {DEMO_RUNS}: move it away and rerun")
            shutil.rmtree(folder)  # a demo run of other data or another config: retrain from scratch
            why += f"; removed {folder}, retraining"
        minutes = STAGE_BUDGET_MINUTES[name] - TRAIN_SETUP_MINUTES[name]
        self.stage(name, [PY, script, "--config", str(config), "--resume", "--set", f"train.max_minutes={minutes:g}"],
                   skip=done, why=why)
        return newest_checkpoint(config)

    def stage_table(self) -> list[str]:
        """The stage times against their budgets, as markdown lines."""
        lines = ["| stage | seconds | budget (s) |", "|---|---|---|"]
        lines += [f"| {name} | {seconds:.0f} | {60 * STAGE_BUDGET_MINUTES.get(name, 0):.0f} |"
                  + (" over" if seconds > 60 * STAGE_BUDGET_MINUTES.get(name, 0) else "")
                  for name, seconds in self.times.items()]
        lines += [f"| total | {sum(self.times.values()):.0f} | {60 * sum(STAGE_BUDGET_MINUTES.values()):.0f} |"]
        return lines

    def run(self) -> None:
        a = self.args
        data = Path(a.data)
        self.stage("corpus", [PY, "-m", "muomni.data.demo", "--out", str(data), "--utterances", str(a.utterances),
                              "--voices", a.voices, "--seed", str(a.seed)])
        self.stage("check corpus", [PY, "-m", "muomni.data", "check", str(data)])
        corpus = {"corpus": corpus_fingerprint(data)}
        codec = self.train("codec", "train_codec.py", CONFIGS / "codec.json", corpus)
        self.stage("tokenize", [PY, "-m", "muomni.data.tokenize", "--codec", str(codec), "--data", str(data)])
        talker = self.train("talker", "train_talker.py", CONFIGS / "talker.json",
                            {**corpus, "codec": codec_id(CONFIGS / "codec.json")})
        vocoder = self.choose_vocoder()
        self.stage("synthesize", [PY, "-m", "muomni", "evaluate", "tts", "--talker", str(talker), "--data", str(data),
                                  *(["--vocoder", vocoder] if vocoder else []),
                                  "--json", str(self.out / "tts.json"),
                                  "--limit", str(a.sentences), *self.asr_args("synthesize")])
        self.stage("evaluate codec", [PY, "-m", "muomni", "evaluate", "codec", "--codec", str(codec), "--data",
                                      str(data), "--json", str(self.out / "codec.json"), "--limit", str(a.sentences),
                                      *self.asr_args("evaluate codec")])
        self.stage("pictures", [PY, "-m", "muomni", "plot", str(run_dir(CONFIGS / "codec.json")),
                                str(run_dir(CONFIGS / "talker.json")), "--out", str(self.out / "plots")])
        self.report()

    def asr_args(self, stage: str) -> list[str]:
        """--asr (every recogniser in ALL_ASR_STAGES, else the headline one) and --out-dir, under which every
        evaluation writes its wavs for the listening page report() writes."""
        names = self.args.asr.split(",")
        names = names if stage in ALL_ASR_STAGES else names[:1]
        model = ["--asr-model", self.args.asr_model] if self.args.asr_model and "whisper" in names else []
        mos = [] if stage in ALL_ASR_STAGES else ["--mos", "none"]
        return ["--asr", ",".join(names), *model, *mos, "--out-dir", str(self.out)]

    def choose_vocoder(self) -> str:
        """The pretrained universal HiFi-GAN where its package is installed (the TTS is then voiced by it and
        Griffin-Lim is scored on the same mels beside it), else "" for Griffin-Lim alone, said once."""
        try:
            weights_path()
        except PretrainedMissing as err:
            print(f"demo: {err}; the TTS is synthesized with Griffin-Lim", flush=True)
            return ""
        return "universal"

    def report(self) -> None:
        """The word-error table (a column per recogniser, the headline one first, then DNSMOS where the
        evaluations rated it), the stage times, and the listening page beside the wavs."""
        reports = {name: json.loads((self.out / f"{name}.json").read_text()) for name in ("tts", "codec")
                   if (self.out / f"{name}.json").is_file()}
        tts, codec = reports.get("tts", {}), reports.get("codec", {})
        labels = tts.get("asr", {}).get("recognisers") or codec.get("asr", {}).get("recognisers") or ["asr"]
        rows = [  # (row name, report, system)
            ("ground truth (flite audio)", tts, "ground_truth"),
            ("Griffin-Lim on original mels", codec, "original"),
            ("codec round trip (Griffin-Lim)", codec, "codec"),
            ("TTS: Talker + universal HiFi-GAN", tts, "tts_universal"),
            ("TTS: Talker + Griffin-Lim", tts, "tts_griffinlim"),
        ]

        table = {name: {label: r.get("wer_by_asr", {}).get(label, {}).get(system) for label in labels}
                 for name, r, system in rows}  # None where a report or system is missing
        # DNSMOS per system where the evaluations rated naturalness (--mos), beside the word error
        mos = {name: r.get("mos", {}).get("by_system", {}).get(system, {}) for name, r, system in rows}
        rated = any(mos.values())
        columns = [*labels, *(FIELD_LABELS[k] for k in FIELDS if rated)]
        flagged = sum(len(r.get("hallucinations", [])) for r in reports.values())
        what = "word error and naturalness (DNSMOS, 1-5)" if rated else "word error"
        lines = ["", f"=== muomni demo: held-out sentences, {what} ({tts.get('utterances', '?')} sentences)",
                 "| audio | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        lines += [f"| {name} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in cells.values())
                  + "".join(f" | {mos[name][k]:.2f}" if k in mos[name] else " | n/a" for k in FIELDS if rated) + " |"
                  for name, cells in table.items()]
        lines += ["", f"Suspected recogniser hallucinations (listed in the JSON reports): {flagged}",
                  f"TTS real-time factor: {tts.get('rtf', float('nan')):.3f}  "
                  f"(duration ratio to ground truth {tts.get('duration_ratio', float('nan')):.2f})",
                  "", *self.stage_table(), ""]
        page = write_listening_page(self.out / "index.html", list(reports.values()), "muomni demo: held-out sentences",
                                    pictures=sorted((self.out / "plots").glob("*/speech.png")))
        lines += [f"Listen: open {page} in a browser (every system side by side); loss curves in {self.out}/plots/"]
        text = "\n".join(lines)
        print(text)
        write_json(self.out / "summary.json", {"asr": labels, "wer": table, "mos": mos, "tts": tts, "codec": codec,
                                               "stage_seconds": self.times,
                                               "stage_budget_seconds": {k: 60 * v for k, v in
                                                                        STAGE_BUDGET_MINUTES.items()}})
        (self.out / "summary.md").write_text(text + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--utterances", type=int, default=4000)
    parser.add_argument("--voices", default="slt,rms,awb,kal16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sentences", type=int, default=40, help="held-out sentences synthesized and scored")
    parser.add_argument("--asr", default="",
                        help="recognisers for word error, comma-separated, the first headlines (default: "
                             "whisper,pocketsphinx where faster-whisper is installed, else pocketsphinx)")
    parser.add_argument("--asr-model", default="",
                        help="faster-whisper model name or folder (default: the bundled tiny.en)")
    args = parser.parse_args(argv)
    if not args.asr:
        args.asr = "whisper,pocketsphinx" if whisper_available() else "pocketsphinx"
    Demo(args).run()


if __name__ == "__main__":
    main()
