"""DNSMOS naturalness on real flite speech: ratings that move the right way, sessions built once, reports."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from muomni.audio import load_audio
from muomni.data import Item
from muomni.eval import mos
from muomni.eval.scoring import score_systems

TEXT = "The farmer carried the long road in the rain."


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Item, np.ndarray]:
    if shutil.which("flite") is None:
        pytest.fail("flite is needed: sudo apt-get install flite")
    path = tmp_path_factory.mktemp("mos") / "slt.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", TEXT, "-o", str(path)], check=True)
    return Item("slt_0001", str(path), "slt", TEXT, 0.0), load_audio(path)


def test_dnsmos_rates_clean_speech_above_the_same_speech_in_noise(speech):
    _, wav = speech
    noisy = wav + 0.1 * np.random.default_rng(0).standard_normal(len(wav)).astype(np.float32)
    scorer = mos.load_mos("dnsmos")
    assert mos.load_mos("dnsmos") is scorer  # the ONNX sessions are built once per process
    clean, dirty, again = scorer.score([wav, noisy, wav])
    assert clean == again  # deterministic
    assert set(clean) == set(mos.FIELDS) and all(1.0 <= v <= 5.0 for v in clean.values())
    assert clean["bak"] > dirty["bak"] + 1.0 and clean["ovrl"] > dirty["ovrl"] + 0.5
    assert all(math.isnan(v) for v in scorer.score([np.zeros(0, np.float32)])[0].values())


def test_scored_reports_carry_dnsmos_per_utterance_and_per_system(speech, tmp_path):
    item, wav = speech
    scores = score_systems([item, item], {"ground_truth": [wav, wav], "quiet": [0.3 * wav, wav]},
                           [("pocketsphinx", "")], None, mos="dnsmos")
    rows = scores["per_utterance"]
    for system in ("ground_truth", "quiet"):
        ratings = [row["systems"][system]["mos"] for row in rows]
        by = scores["mos"]["by_system"][system]
        assert by["utterances"] == 2
        for k in mos.FIELDS:
            assert by[k] == pytest.approx(np.mean([r[k] for r in ratings]), abs=1e-4)
    assert scores["mos"]["model"] == "dnsmos" and scores["mos"]["seconds_per_audio_second"] > 0
    assert "mos" not in score_systems([item], {"a": [wav]}, [("pocketsphinx", "")], None)  # --mos none


def test_mos_choice_defaults_to_dnsmos_and_an_explicit_one_must_be_installed(monkeypatch, capsys):
    assert mos.resolve_mos("") == "dnsmos" and mos.resolve_mos("none") == "none"
    monkeypatch.setattr(mos, "dnsmos_available", lambda: False)  # as on a machine without the 'eval' extra
    with pytest.raises(ImportError, match=r"speechmos.*pip install -e \.\[eval\]"):
        mos.resolve_mos("dnsmos")
    assert mos.resolve_mos("") == "none"
    assert capsys.readouterr().err.count("DNSMOS") == 1  # one clear note, then it goes on without
    with pytest.raises(ValueError, match="unknown naturalness model"):
        mos.load_mos("pesq")


def test_the_eval_extra_lists_what_speechmos_imports():
    """speechmos declares no dependencies but imports onnxruntime, librosa and requests at module level."""
    import re

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    names = re.search(r"^eval = \[(.*?)\]", pyproject, re.S | re.M).group(1)
    for package in ("speechmos", "onnxruntime", "librosa", "requests"):
        assert f'"{package}' in names
