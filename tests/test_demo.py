"""The demo reuses a stage's run only when it finished on the current config and data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muomni import demo


def _run(tmp_path: Path, steps_done: list[int], ended: dict | None = None, data: dict | None = None,
         **train) -> Path:
    """A demo config (steps 10) and its run folder with step checkpoints, config.json and stats.json."""
    config = tmp_path / "stage.json"
    config.write_text(json.dumps({"train": {"out_dir": str(tmp_path / "checkpoints"), "run_name": "demo/stage",
                                            "steps": 10, "lr": 1e-3}}))
    folder = tmp_path / "checkpoints" / "demo" / "stage"
    folder.mkdir(parents=True)
    for step in steps_done:
        (folder / f"step_{step:08d}.pt").write_bytes(b"")
    recorded = {"train": {"out_dir": str(tmp_path / "checkpoints"), "run_name": "demo/stage", "steps": 10,
                          "lr": 1e-3, "max_minutes": 12.5, **train}}
    (folder / "config.json").write_text(json.dumps(recorded))
    stats = {"data": data if data is not None else {"corpus": "abc"}}
    if ended:
        stats["ended"] = ended
    (folder / "stats.json").write_text(json.dumps(stats))
    return config


@pytest.mark.parametrize(("steps_done", "ended", "data", "train", "done", "why"), [
    ([], None, None, {}, False, "no checkpoint yet"),
    ([5, 10], {"reason": "steps", "step": 10}, None, {}, True, "done (10 steps)"),
    ([5, 7], {"reason": "max_minutes", "step": 7}, None, {}, True, "time budget reached at step 7"),
    ([5, 7], {"reason": "signal", "step": 7}, None, {}, False, "interrupted at step 7"),
    ([5, 7], None, None, {}, False, "interrupted at step 7"),  # killed: no "ended" record
    ([5, 10], {"reason": "steps", "step": 10}, None, {"lr": 3e-4}, False, "stale: train.lr: 0.0003 -> 0.001"),
    ([5, 10], {"reason": "steps", "step": 10}, {"corpus": "old"}, {}, False, "stale: the corpus changed"),
    ([5, 10], {"reason": "steps", "step": 10}, {}, {}, False, "stale: no record of its corpus"),
], ids=["fresh", "finished", "time-budget", "signal", "killed", "config-changed", "corpus-changed", "no-record"])
def test_finished_needs_the_same_config_and_data(tmp_path, steps_done, ended, data, train, done, why):
    config = _run(tmp_path, steps_done, ended, data, **train)
    got_done, got_why = demo.finished(config, {"corpus": "abc"})
    assert got_done is done and why in got_why


def test_a_stale_demo_run_is_removed_and_retrained_and_budgets_are_printed(tmp_path, monkeypatch, capsys):
    config = _run(tmp_path, [5, 10], {"reason": "steps", "step": 10}, {"corpus": "old"})
    monkeypatch.setattr(demo, "DEMO_RUNS", tmp_path / "checkpoints" / "demo")
    calls = []

    def fake_call(cmd):  # the stage's training: writes a checkpoint the way the script would
        calls.append(cmd)
        folder = demo.run_dir(config)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "step_00000010.pt").write_bytes(b"")
        return 0

    monkeypatch.setattr(demo.subprocess, "call", fake_call)
    runner = demo.Demo(type("Args", (), {"out": str(tmp_path / "out")})())
    runner.train("talker", "train_talker.py", config, {"corpus": "abc"})
    out = capsys.readouterr().out
    budget = demo.STAGE_BUDGET_MINUTES["talker"]
    assert "the corpus changed" in out and "retraining" in out and f"budget {budget:g} min" in out
    assert calls and f"train.max_minutes={budget - demo.TRAIN_SETUP_MINUTES['talker']:g}" in calls[0]
    assert not (demo.run_dir(config) / "step_00000005.pt").exists()  # the stale run was removed first
    assert "| talker |" in "\n".join(runner.stage_table())


def test_every_demo_config_runs_under_checkpoints_demo():
    for config in sorted(demo.CONFIGS.glob("*.json")):
        assert demo.DEMO_RUNS in demo.run_dir(config).parents, config
    assert set(demo.TRAIN_SETUP_MINUTES) <= set(demo.STAGE_BUDGET_MINUTES)
    assert sum(demo.STAGE_BUDGET_MINUTES.values()) <= 30


def test_a_stage_over_its_budget_says_so(tmp_path, monkeypatch, capsys):
    import time

    monkeypatch.setitem(demo.STAGE_BUDGET_MINUTES, "corpus", 0.0005)  # 0.03 s
    monkeypatch.setattr(demo.subprocess, "call", lambda cmd: time.sleep(0.1) or 0)
    runner = demo.Demo(type("Args", (), {"out": str(tmp_path / "out")})())
    runner.stage("corpus", ["true"])
    assert "OVER its budget" in capsys.readouterr().out
    assert runner.stage_table()[2].endswith(" over")


@pytest.mark.parametrize(("asr", "model", "synthesize", "others"), [
    ("whisper,pocketsphinx", "", ["--asr", "whisper,pocketsphinx"], ["--asr", "whisper"]),
    ("whisper,pocketsphinx", "small.en", ["--asr", "whisper,pocketsphinx", "--asr-model", "small.en"],
     ["--asr", "whisper", "--asr-model", "small.en"]),
    ("pocketsphinx,whisper", "small.en", ["--asr", "pocketsphinx,whisper", "--asr-model", "small.en"],
     ["--asr", "pocketsphinx"]),  # --asr-model names a whisper model: not passed where whisper is not scored
    ("pocketsphinx", "", ["--asr", "pocketsphinx"], ["--asr", "pocketsphinx"]),
], ids=["both", "whisper-model", "pocketsphinx-headline", "one"])
def test_only_the_synthesize_stage_scores_every_recogniser(tmp_path, asr, model, synthesize, others):
    runner = demo.Demo(type("Args", (), {"out": str(tmp_path / "out"), "asr": asr, "asr_model": model})())
    out_dir = ["--out-dir", str(tmp_path / "out")]
    assert runner.asr_args("synthesize") == synthesize + out_dir
    assert runner.asr_args("evaluate codec") == others + ["--mos", "none"] + out_dir  # DNSMOS: synthesize only
    assert set(demo.ALL_ASR_STAGES) <= set(demo.STAGE_BUDGET_MINUTES)
