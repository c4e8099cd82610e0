"""The speech check inside training: its steps, its log lines, best.pt by word error, its independence from the
training's random streams, a missing recogniser, the judge's plug, and the picture of its curve."""

from __future__ import annotations

import argparse
import json
import random
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CODEC, write_wav
from PIL import Image

import muomni.speech_check as speech_check
import train_codec
import train_talker
from muomni.checkpoint import load_checkpoint
from muomni.config import ConfigError, DataConfig, TrainConfig, apply_overrides
from muomni.data.corpus import Item
from muomni.plot import plot_run
from muomni.training.run import Run

ROOT = Path(__file__).resolve().parents[1]
TINY_VOCODER = ["model.upsample_initial_channel=32", "model.resblock_kernel_sizes=[3]",
                "model.resblock_dilation_sizes=[[1,2]]", "model.mpd_channels=[4,8,16,16]", "model.msd_channels=8",
                "model.msd_max_channels=16", "train.batch_size=2", "train.grad_accum=1", "train.segment_size=4096",
                "train.gan_start_step=1", "train.eval_items=1", "train.sample_items=1"]


@pytest.fixture(autouse=True)
def _signal_handlers(keep_signal_handlers):
    """Every test here runs a stage, which installs its SIGINT/SIGTERM handlers (conftest.py restores them)."""
    yield


def _vocoder_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_vocoder", ROOT / "train_vocoder.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_vocoder"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module.main


def _stage(stage: str, out: Path, name: str, corpus: Path, talker: dict, *sets: str) -> tuple:
    """(main, argv) of a tiny run of ``stage`` into out/name."""
    common = [f"train.out_dir={out}", f"train.run_name={name}", "train.log_every=1", "train.warmup_steps=1",
              "train.eval_every=100", "train.sample_every=100", "train.save_every=100", *sets]
    if stage == "codec":
        return train_codec.main, ["--config", "configs/codec_tiny.json", "--device", "cpu", "--set",
                                  f"data.path={corpus}", *TINY_CODEC, *common]
    if stage == "talker":
        return train_talker.main, ["--device", "cpu", *talker["args"], "--set", *common]
    return _vocoder_main(), ["--config", "configs/vocoder_tiny.json", "--device", "cpu", "--set",
                             f"data.path={corpus}", *TINY_VOCODER, *common]


def _records(run: Path, split: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.mark.parametrize("stage, asr", [("codec", "whisper"), ("talker", "pocketsphinx"), ("vocoder", "pocketsphinx")],
                         ids=["codec-whisper", "talker-pocketsphinx", "vocoder-pocketsphinx"])
def test_the_check_logs_at_its_steps_and_changes_no_training_step(stage, asr, flite_corpus, tiny_talker, tmp_path):
    """speech_wer lines at every speech_every steps and the last; wavs and references kept; and the same
    training losses and weights as the same run without the check."""
    checks = {"on": [f"train.speech_asr={asr}", "train.speech_every=2"], "off": ["train.speech_asr=none"]}
    for name, check in checks.items():
        main, argv = _stage(stage, tmp_path, name, flite_corpus, tiny_talker, "train.steps=3", *check)
        assert main(argv) == 0
    on, off = tmp_path / "on", tmp_path / "off"
    speech = _records(on, "speech")
    assert [r["step"] for r in speech] == [2, 3] and not _records(off, "speech")
    assert all(0 <= r["speech_wer"] and r["asr"].startswith(asr) for r in speech)
    assert 0 < speech[0]["train_minutes"] < speech[1]["train_minutes"]
    assert len(list((on / "samples" / "speech").glob("*.wav"))) == speech[-1]["speech_items"] >= 1
    reference = json.loads((on / "stats.json").read_text())["speech_reference"]
    assert set(reference) >= {"ground_truth", "griffinlim"} and reference["ground_truth"]["speech_wer"] <= 1
    strip = ("time", "steps_per_s", "frames_per_s")
    train_on = [{k: v for k, v in r.items() if k not in strip} for r in _records(on, "train")]
    assert train_on == [{k: v for k, v in r.items() if k not in strip} for r in _records(off, "train")]
    weights = [load_checkpoint(run / "step_00000003.pt") for run in (on, off)]
    key = "generator" if stage == "vocoder" else "model"
    for a, b in zip(weights[0][key].values(), weights[1][key].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class ScriptedASR:
    """Transcribes every wav as ``right`` on the calls numbered in ``calls`` (1-based), as nothing otherwise."""

    label = "scripted"

    def __init__(self, right: list[str], calls: set[int]):
        self.right, self.calls, self.n = right, calls, 0

    def transcribe(self, wavs, sample_rate=16000):
        self.n += 1
        return [self.right[i] if self.n in self.calls else "" for i in range(len(wavs))]


def test_best_by_wer_keeps_the_step_of_the_lowest_speech_wer(flite_corpus, tiny_talker, tmp_path, monkeypatch):
    """Calls 1-3 are the first check and its references, then one call per check: only step 3's check hears the
    words, so best.pt is step 3, though the held-out loss would pick another and no save_every falls there."""
    texts = [it.text for it in speech_check_items(flite_corpus)]
    monkeypatch.setattr(speech_check, "load_asr", lambda name: ScriptedASR(texts, {5}))
    main, argv = _stage("talker", tmp_path, "wer", flite_corpus, tiny_talker, "train.steps=4", "train.speech_every=1",
                        "train.speech_asr=auto", "train.best_by=wer")
    assert main(argv) == 0
    run = tmp_path / "wer"
    assert [(r["step"], r["speech_wer"]) for r in _records(run, "speech")] == [(1, 1.0), (2, 1.0), (3, 0.0), (4, 1.0)]
    stats = json.loads((run / "stats.json").read_text())
    assert (stats["best_step"], stats["best_metric"], stats["best_by"]) == (3, 0.0, "wer")
    assert load_checkpoint(run / "best.pt")["step"] == 3


def speech_check_items(corpus: Path) -> list[Item]:
    from muomni.data.split import load_corpus

    return load_corpus(DataConfig(path=str(corpus))).heldout


# ---------------------------------------------------------------- the check alone, in a toy run


@dataclass
class ToyRun:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _toy(tmp_path: Path, *sets: str) -> tuple[Run, speech_check.SpeechCheck]:
    cfg = apply_overrides(ToyRun(), [f"train.out_dir={tmp_path}", "train.run_name=toy", "train.speech_asr=auto",
                                     "train.speech_every=2", "train.speech_items=2", *sets])
    run = Run(cfg, "toy", argparse.Namespace(config="toy.json", resume=False, init_from=None, set=[], device="cpu"))
    items = [Item(f"u{i}", str(write_wav(tmp_path / f"u{i}.wav")), "", f"say {i}", 1.0) for i in range(3)]
    run.progress(0, 10)
    return run, speech_check.SpeechCheck(run, cfg.train, items, tmp_path / "cache")


def _noise(items: list) -> list[np.ndarray]:
    """A render that draws from every global RNG the training draws from."""
    return [torch.rand(1600).numpy() * np.random.rand() * random.random() for _ in items]


def test_the_check_leaves_every_random_stream_where_it_was(tmp_path, monkeypatch):
    monkeypatch.setattr(speech_check, "load_asr", lambda name: ScriptedASR(["say 0", "say 1"], {1}))
    run, check = _toy(tmp_path)
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    assert check(2, False, _noise) == 0.0 and check(3, False, _noise) is None  # a check step, then none
    after = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    torch.testing.assert_close(after[0], torch.rand(3), rtol=0, atol=0)
    assert (after[1] == np.random.rand(3)).all() and after[2] == random.random()
    run.close()


def test_a_missing_recogniser_warns_once_and_training_goes_on(tmp_path, monkeypatch, capsys):
    def missing(name):
        raise ImportError("the 'whisper' speech recogniser needs the Python package faster-whisper")

    monkeypatch.setattr(speech_check, "load_asr", missing)
    run, check = _toy(tmp_path)
    assert [check(step, step == 6, _noise) for step in range(1, 7)] == [None] * 6
    assert capsys.readouterr().err.count("speech check off") == 1
    assert not (tmp_path / "toy" / "metrics.jsonl").exists()
    run.close()


@pytest.mark.parametrize("installed", [True, False], ids=["judge-installed", "judge-absent"])
def test_the_judge_is_found_by_its_module_and_skipped_quietly_without_it(installed, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(speech_check, "load_asr", lambda name: ScriptedASR(["say 0", "say 1"], {1, 2, 3}))
    if installed:
        scorer = types.SimpleNamespace(label="dnsmos", score=lambda wavs: [{"ovrl": 2.0 + i, "sig": 3.0}
                                                                          for i in range(len(wavs))])
        module = types.SimpleNamespace(load_mos=lambda name: scorer)
    else:
        module = None  # sys.modules[name] = None: importing it raises ImportError
    monkeypatch.setitem(sys.modules, speech_check.JUDGE_MODULE, module)
    run, check = _toy(tmp_path)
    check(2, False, _noise)
    line = _records(tmp_path / "toy", "speech")[0]
    reference = json.loads((tmp_path / "toy" / "stats.json").read_text())["speech_reference"]
    if installed:
        assert line["dnsmos_ovrl"] == 2.5 and line["dnsmos_sig"] == 3.0
        assert reference["ground_truth"]["dnsmos_ovrl"] == 2.5
    else:
        assert not any(k.startswith("dnsmos") for k in line) and "warning" not in capsys.readouterr().err
    run.close()


def test_references_are_transcribed_once_per_corpus_whatever_the_run_or_its_number_of_items(tmp_path, monkeypatch):
    asr = ScriptedASR(["say 0", "say 1"], {2})  # the ground truth heard right, Griffin-Lim not
    monkeypatch.setattr(speech_check, "load_asr", lambda name: asr)
    first, check = _toy(tmp_path / "a")
    check(2, False, _noise)
    assert asr.n == 3  # the model's wavs, then the references: ground truth, Griffin-Lim
    first.close()
    second, check = _toy(tmp_path / "b", "train.speech_items=1")
    check.cache = first.dir.parent / "cache" / "speech_reference.json"  # the same corpus
    check(2, False, _noise)
    assert asr.n == 4  # the model's wavs alone
    reference = json.loads((second.dir / "stats.json").read_text())["speech_reference"]
    assert (reference["items"], reference["ground_truth"]["speech_wer"], reference["griffinlim"]["speech_wer"]) == (
        1, 0.0, 1.0)
    second.close()


@pytest.mark.parametrize("sets, message", [
    (["train.best_by=wer", "train.speech_asr=none"], "needs the speech check"),
    (["train.speech_asr=sphinx"], "train.speech_asr"),
    (["train.speech_items=0"], "speech_items"),
], ids=["wer-without-check", "unknown-recogniser", "no-items"])
def test_bad_speech_settings_name_the_key(sets, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ToyRun(), sets)


def test_train_minutes_go_on_across_resume(tmp_path):
    run, _ = _toy(tmp_path)
    payload = {"step": 4, "train_seconds": 600.0}
    run.checkpoints.restore = lambda payload, objects: payload["step"]  # only the clock is under test
    assert run.restore(payload, {}) == 4
    run.progress(4, 10)
    assert 10.0 <= run.train_minutes < 10.5
    run.close()


# ---------------------------------------------------------------- the picture


def _write_run(run: Path, judge: bool) -> None:
    run.mkdir(parents=True)
    lines = [{"step": s, "split": "speech", "speech_wer": w, "train_minutes": m, "speech_seconds": 3.0,
              **({"dnsmos_ovrl": 2.0 + w} if judge else {})} for s, w, m in ((100, 0.9, 1.0), (200, 0.5, 2.0))]
    lines.append({"step": 200, "split": "train", "loss": 1.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    ref = {"speech_wer": 0.2, **({"dnsmos_ovrl": 3.0} if judge else {})}
    (run / "stats.json").write_text(json.dumps({"speech_reference": {"asr": "x", "items": 2, "ground_truth": ref,
                                                                     "griffinlim": ref}}))


@pytest.mark.parametrize("judge, rows", [(False, 1), (True, 2)], ids=["word-error", "word-error-and-dnsmos"])
def test_plot_draws_the_speech_figure_a_row_per_figure(judge, rows, tmp_path):
    _write_run(tmp_path / "run", judge)
    written = plot_run(tmp_path / "run", tmp_path / "plots")
    assert sorted(p.name for p in written) == ["speech.png", "train.png"]
    width, height = Image.open(tmp_path / "plots" / "speech.png").size
    assert width > 600 and 2.9 * 80 * rows <= height < 2.9 * 80 * rows + 5


def test_plot_cli_writes_each_of_several_runs_into_its_folder_and_the_page_links_the_curves(tmp_path):
    from muomni.__main__ import main
    from muomni.eval.listening import write_listening_page

    for name in ("codec", "talker"):
        _write_run(tmp_path / "runs" / name, judge=False)
    assert main(["plot", str(tmp_path / "runs" / "codec"), str(tmp_path / "runs" / "talker"),
                 "--out", str(tmp_path / "out" / "plots")]) == 0
    pictures = sorted((tmp_path / "out" / "plots").glob("*/speech.png"))
    assert [p.parent.name for p in pictures] == ["codec", "talker"]
    page = write_listening_page(tmp_path / "out" / "index.html", [], "demo", pictures=pictures).read_text()
    assert "src='plots/codec/speech.png'" in page and "href='plots/talker/speech.png'" in page
