"""The end-to-end demo behind ``make demo``: corpus -> codec -> codes -> Talker -> vocoder -> wavs.

Each stage runs the same command a user would type, so its progress bar shows. A stage whose
run already reached its configured step count is skipped; an interrupted one is resumed
(``--resume``). The time of every stage and the final evaluation table are written to
``outputs/demo/summary.json`` and printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .config import read_json_with_base
from .training import step_checkpoints, write_json

PY = sys.executable
CONFIGS = Path("configs/demo")


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


def finished(config: Path) -> bool:
    found = step_checkpoints(run_dir(config))
    return bool(found) and found[-1][0] >= final_step(config)


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.times: dict[str, float] = {}

    def stage(self, name: str, cmd: list[str], skip: bool = False) -> None:
        print(f"\n=== demo stage: {name}" + (" (already done, skipped)" if skip else ""), flush=True)
        if skip:
            self.times[name] = 0.0
            return
        print("$ " + " ".join(cmd), flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd)
        self.times[name] = round(time.perf_counter() - start, 1)
        if code != 0:
            raise SystemExit(f"demo: stage '{name}' failed (exit {code}); fix the message above and rerun "
                             "`make demo`: finished stages are skipped and this one resumes")

    def train(self, name: str, script: str, config: Path, extra: list[str] = ()) -> Path:
        self.stage(name, [PY, script, "--config", str(config), "--resume", *extra], skip=finished(config))
        return newest_checkpoint(config)

    def run(self) -> None:
        a = self.args
        data = Path(a.data)
        self.stage("corpus", [PY, "-m", "muomni.data.demo", "--out", str(data), "--utterances", str(a.utterances),
                              "--voices", a.voices, "--seed", str(a.seed)])
        self.stage("check corpus", [PY, "-m", "muomni.data", "check", str(data)])
        codec = self.train("codec", "train_codec.py", CONFIGS / "codec.json")
        self.stage("tokenize", [PY, "-m", "muomni.data.tokenize", "--codec", str(codec), "--data", str(data)])
        talker = self.train("talker", "train_talker.py", CONFIGS / "talker.json")
        vocoder = self.train("vocoder", "train_vocoder.py", CONFIGS / "vocoder.json")
        # every evaluation writes its wavs under --out-dir, for the listening page report() writes
        asr = ["--asr", a.asr, *(["--asr-model", a.asr_model] if a.asr_model else []), "--out-dir", str(self.out)]
        self.stage("evaluate vocoder", [PY, "-m", "muomni.evaluate", "vocoder", "--vocoder", str(vocoder),
                                        "--data", str(data), "--json", str(self.out / "vocoder.json"),
                                        "--limit", str(a.vocoder_sentences), *asr])
        self.choose_vocoder()
        self.stage("synthesize", [PY, "-m", "muomni.evaluate", "tts", "--talker", str(talker), "--data", str(data),
                                  "--vocoder", str(vocoder), "--json", str(self.out / "tts.json"),
                                  "--limit", str(a.sentences), *asr])
        self.stage("evaluate codec", [PY, "-m", "muomni.evaluate", "codec", "--codec", str(codec), "--data",
                                      str(data), "--json", str(self.out / "codec.json"), "--limit", str(a.sentences),
                                      *asr])
        self.stage("pictures", [PY, "-m", "muomni", "plot", str(run_dir(CONFIGS / "talker.json")),
                                "--out", str(self.out / "plots")])
        self.report()

    def choose_vocoder(self) -> bool:
        """Whether the short demo training made HiFi-GAN at least as intelligible as Griffin-Lim; the TTS
        stage scores both on the same mels either way."""
        scores = json.loads((self.out / "vocoder.json").read_text())
        hifigan, griffinlim = scores["hifigan"]["wer"], scores["griffinlim"]["wer"]
        use = hifigan <= griffinlim
        print(f"demo: held-out word error ({scores.get('asr_headline', 'asr')}) HiFi-GAN {hifigan:.3f} vs "
              f"Griffin-Lim {griffinlim:.3f}: {'HiFi-GAN' if use else 'Griffin-Lim'} is the more intelligible; "
              "TTS is synthesized and scored with both")
        return use

    def report(self) -> None:
        """The word-error table (a column per recogniser, the headline one first), the stage times, and the
        listening page beside the wavs."""
        from .listening import write_listening_page

        reports = {name: json.loads((self.out / f"{name}.json").read_text()) for name in ("tts", "codec", "vocoder")
                   if (self.out / f"{name}.json").is_file()}
        tts, codec = reports.get("tts", {}), reports.get("codec", {})
        labels = tts.get("asr", {}).get("recognisers") or codec.get("asr", {}).get("recognisers") or ["asr"]
        rows = [  # (row name, report, system)
            ("ground truth (flite audio)", tts, "ground_truth"),
            ("Griffin-Lim on original mels", codec, "original"),
            ("codec round trip (Griffin-Lim)", codec, "codec"),
            ("TTS: Talker + HiFi-GAN", tts, "tts_hifigan"),
            ("TTS: Talker + Griffin-Lim", tts, "tts_griffinlim"),
        ]

        table = {name: {label: r.get("wer_by_asr", {}).get(label, {}).get(system) for label in labels}
                 for name, r, system in rows}  # None where a report or system is missing
        flagged = sum(len(r.get("hallucinations", [])) for r in reports.values())
        lines = ["", f"=== muomni demo: held-out sentences, word error ({tts.get('utterances', '?')} sentences)",
                 "| audio | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        lines += [f"| {name} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in cells.values()) + " |"
                  for name, cells in table.items()]
        lines += ["", f"Suspected recogniser hallucinations (listed in the JSON reports): {flagged}",
                  f"TTS real-time factor: {tts.get('rtf', float('nan')):.3f}  "
                  f"(duration ratio to ground truth {tts.get('duration_ratio', float('nan')):.2f})",
                  "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.0f} |" for name, seconds in self.times.items()]
        page = write_listening_page(self.out / "index.html", list(reports.values()), "muomni demo: held-out sentences")
        lines += [f"| total | {sum(self.times.values()):.0f} |", "",
                  f"Listen: open {page} in a browser (every system side by side); loss curves in {self.out}/plots/"]
        text = "\n".join(lines)
        print(text)
        write_json(self.out / "summary.json", {"asr": labels, "wer": table, "tts": tts, "codec": codec,
                                               "stage_seconds": self.times})
        (self.out / "summary.md").write_text(text + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--utterances", type=int, default=4000)
    parser.add_argument("--voices", default="slt,rms,awb,kal16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sentences", type=int, default=40, help="held-out sentences synthesized and scored")
    parser.add_argument("--vocoder-sentences", type=int, default=10, help="held-out utterances to compare vocoders")
    parser.add_argument("--asr", default="",
                        help="recognisers for word error, comma-separated, the first headlines (default: "
                             "whisper,pocketsphinx where faster-whisper is installed, else pocketsphinx)")
    parser.add_argument("--asr-model", default="",
                        help="faster-whisper model name or folder (default: the bundled tiny.en)")
    args = parser.parse_args(argv)
    if not args.asr:
        from .asr import whisper_available

        args.asr = "whisper,pocketsphinx" if whisper_available() else "pocketsphinx"
    Demo(args).run()


if __name__ == "__main__":
    main()
