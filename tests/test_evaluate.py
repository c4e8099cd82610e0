"""Objective metrics: word error rate arithmetic (the recognisers are tested in test_asr.py)."""

from __future__ import annotations

import pytest

from muomni.eval import evaluate, wer


@pytest.mark.parametrize(
    ("refs", "hyps", "expected"),
    [
        (["the cat sat"], ["the cat sat"], 0.0),
        (["The cat, sat!"], ["the cat sat"], 0.0),  # case and punctuation do not count
        (["the cat sat"], ["the bat sat"], 1 / 3),  # one substitution
        (["the cat sat"], ["the sat"], 1 / 3),  # one deletion
        (["the cat sat"], ["oh the cat sat down"], 2 / 3),  # two insertions
        (["the cat sat", "a dog"], ["", "a dog"], 3 / 5),  # corpus level: total edits / total words
        (["a b"], ["b a"], 1.0),
        (["It took 3 well-known men"], ["it took three well known men"], 0.0),  # numbers and hyphens
        ([""], ["uh"], 1.0),  # an empty reference counts its inserted words against one
    ],
    ids=["exact", "normalised", "substitution", "deletion", "insertions", "corpus-level", "swap", "numbers-hyphens",
         "empty-reference"],
)
def test_word_error_rate(refs, hyps, expected):
    assert wer.word_error_rate(refs, hyps) == pytest.approx(expected)


def test_word_error_rate_needs_pairs():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer.word_error_rate(["a", "b"], ["a"])


def test_word_error_by_speaker_splits_the_pooled_figure():
    speakers, refs = ["b", "a", "b"], ["one two", "three four five", "six seven"]
    hyps = {"x": ["one two", "three", "six eight"], "y": refs}
    by = wer.word_error_by_speaker(speakers, refs, hyps)
    assert list(by) == ["a", "b"]
    assert by["a"] == {"utterances": 1, "words": 3, "x": pytest.approx(2 / 3), "y": 0.0}
    assert by["b"] == {"utterances": 2, "words": 4, "x": pytest.approx(1 / 4), "y": 0.0}
    pooled = sum(d["x"] * d["words"] for d in by.values()) / sum(d["words"] for d in by.values())
    assert pooled == pytest.approx(wer.word_error_rate(refs, hyps["x"]))
    assert [k for k, _ in wer.speaker_rows(by, ["x", "y"])] == ["wer[a]", "wer[b]"]
    assert wer.speaker_rows({"a": by["a"]}, ["x"]) == []  # one speaker: the pooled row says it all
    with pytest.raises(ValueError, match="'x' has 2 hypotheses for 3 references"):
        wer.word_error_by_speaker(speakers, refs, {"x": ["a", "b"]})


def test_reports_go_inside_a_run_folder_and_next_to_a_checkpoint_file(tmp_path):
    run = tmp_path / "vocoder_run"
    run.mkdir()
    assert evaluate.beside(run, "eval_vocoder.json") == run / "eval_vocoder.json"
    assert evaluate.beside(run / "step_00000100.pt", "eval_vocoder.json") == run / "eval_vocoder.json"
