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
        self.stage("evaluate vocoder", [PY, "-m", "muomni.evaluate", "vocoder", "--vocoder", str(vocoder),
                                        "--data", str(data), "--json", str(self.out / "vocoder.json"),
                                        "--limit", str(a.vocoder_sentences)])
        use_hifigan = self.choose_vocoder()
        self.stage("synthesize", [PY, "-m", "muomni.evaluate", "tts", "--talker", str(talker), "--data", str(data),
                                  *(["--vocoder", str(vocoder)] if use_hifigan else []),
                                  "--out-dir", str(self.out), "--json", str(self.out / "tts.json"),
                                  "--limit", str(a.sentences)])
        self.stage("evaluate codec", [PY, "-m", "muomni.evaluate", "codec", "--codec", str(codec), "--data",
                                      str(data), "--json", str(self.out / "codec.json"), "--limit", str(a.sentences)])
        self.stage("pictures", [PY, "-m", "muomni", "plot", str(run_dir(CONFIGS / "talker.json")),
                                "--out", str(self.out / "plots")])
        self.report()

    def choose_vocoder(self) -> bool:
        """HiFi-GAN only if the short demo training made it at least as intelligible as Griffin-Lim."""
        scores = json.loads((self.out / "vocoder.json").read_text())
        hifigan, griffinlim = scores["hifigan"]["wer"], scores["griffinlim"]["wer"]
        use = hifigan <= griffinlim
        print(f"demo: held-out word error HiFi-GAN {hifigan:.3f} vs Griffin-Lim {griffinlim:.3f}: synthesizing "
              f"with {'HiFi-GAN' if use else 'Griffin-Lim (the short demo vocoder is not yet better)'}")
        return use

    def report(self) -> None:
        tts = json.loads((self.out / "tts.json").read_text())
        codec = json.loads((self.out / "codec.json").read_text())
        rows = [
            ("ground truth (flite audio)", tts.get("wer_ground_truth")),
            ("Griffin-Lim on original mels", codec.get("wer_original")),
            ("codec round trip (Griffin-Lim)", codec.get("wer_codec")),
            (f"TTS: Talker + {tts.get('vocoder', 'vocoder')}", tts.get("wer")),
        ]
        lines = ["", "=== muomni demo: held-out sentences", "| audio | word error |", "|---|---|"]
        lines += [f"| {name} | {value:.3f} |" if isinstance(value, float) else f"| {name} | n/a |"
                  for name, value in rows]
        lines += ["", f"TTS real-time factor: {tts.get('rtf', float('nan')):.3f}  "
                  f"(duration ratio to ground truth {tts.get('duration_ratio', float('nan')):.2f})",
                  "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.0f} |" for name, seconds in self.times.items()]
        lines += [f"| total | {sum(self.times.values()):.0f} |", "",
                  f"Listen: {self.out}/*.wav (a mel picture beside each); loss curves in {self.out}/plots/"]
        text = "\n".join(lines)
        print(text)
        write_json(self.out / "summary.json", {"wer": dict(rows), "tts": tts, "codec": codec,
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
    Demo(parser.parse_args(argv)).run()


if __name__ == "__main__":
    main()
