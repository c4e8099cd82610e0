"""Text normalisation and the tokenizer."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from muomni.text import TextProcessor, normalize_text, number_to_words, ordinal_to_words, year_to_words


@pytest.mark.parametrize(("raw", "expected"), [
    ("Hello   World", "hello world"),
    ("42", "forty two"),
    ("In 1999 we met.", "in nineteen ninety nine we met."),
    ("It was 1905", "it was nineteen oh five"),
    ("It took 3.5 hours", "it took three point five hours"),
    ("the 3rd and 21st time", "the third and twenty first time"),
    ("1,000,000 people", "one million people"),
    ("At 7:30, pay $3.50!", "at seven thirty, pay three dollars fifty cents!"),
    ("About 35% of it", "about thirty five percent of it"),
    ("Mr. Smith & Dr. Who", "mister smith and doctor who"),
    ('"Room 101," she said (twice)?', "room one hundred one, she said twice?"),
    ("don't stop -- well-known; ok: yes", "don't stop - well-known; ok: yes"),
    ("agent 007", "agent zero zero seven"),
    ("1,250 people in 1250", "one thousand two hundred fifty people in twelve fifty"),
], ids=["spaces", "number", "year", "year-oh", "decimal", "ordinals", "thousands", "time-money", "percent",
        "abbreviations", "quotes-brackets", "punctuation-kept", "leading-zero",
        "grouped-not-a-year"])
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(("fn", "n", "expected"), [
    (number_to_words, 0, "zero"), (number_to_words, 115, "one hundred fifteen"),
    (number_to_words, 2024, "two thousand twenty four"), (number_to_words, 3_000_042, "three million forty two"),
    (year_to_words, 1900, "nineteen hundred"), (year_to_words, 2005, "two thousand five"),
    (ordinal_to_words, 12, "twelfth"), (ordinal_to_words, 40, "fortieth"), (ordinal_to_words, 100, "one hundredth"),
], ids=lambda v: str(v) if not callable(v) else v.__name__)
def test_number_words(fn, n: int, expected: str) -> None:
    assert fn(n) == expected


def test_encode_ids_and_special_tokens() -> None:
    tp = TextProcessor()
    assert (tp.pad_id, tp.unk_id) == (0, 1) and tp.vocab[:2] == ["<pad>", "<unk>"]
    ids = tp.encode("Hi, 2!")
    assert tp.decode(ids) == "hi, two!"
    assert min(ids) > tp.unk_id


@pytest.mark.parametrize("text", ["", "   \n\t"], ids=["empty", "whitespace"])
def test_encode_rejects_empty(text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        TextProcessor().encode(text)


def test_unknown_characters_warn_once_naming_them() -> None:
    tp = TextProcessor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = tp.encode("café über café")
    assert len(caught) == 1
    assert "'é'" in str(caught[0].message) and "'ü'" in str(caught[0].message)
    assert ids.count(tp.unk_id) == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = tp.encode_batch(["é", "plain", "ü"])
    assert len(caught) == 1 and "in 3 texts" in str(caught[0].message)
    assert batch[1] == tp.encode("plain")


def test_build_and_dict_round_trip() -> None:
    tp = TextProcessor.build(["Crème brûlée, 3 times!"])
    assert "è" in tp.vocab and "û" in tp.vocab and "a" in tp.vocab
    again = TextProcessor.from_dict(tp.to_dict())
    assert again.vocab == tp.vocab and again.mode == "chars"
    assert again.encode("crème") == tp.encode("crème")
    with pytest.raises(ValueError, match="unknown keys"):
        TextProcessor.from_dict({**tp.to_dict(), "extra": 1})


def test_bad_mode_and_bad_vocab() -> None:
    with pytest.raises(ValueError, match="chars"):
        TextProcessor("letters")
    with pytest.raises(ValueError, match="<pad>"):
        TextProcessor("chars", ["a", "b"])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing: apt-get install espeak-ng")
def test_phonemes_keep_words_and_punctuation() -> None:
    tp = TextProcessor.build(["Hello world, how are you?", "The cat sat."], mode="phonemes")
    ipa = tp.symbols_batch(["Hello world, how are you?", "The 2 cats!"])
    assert ipa[0].count(",") == 1 and ipa[0].endswith("?") and " " in ipa[0]
    assert ipa[1].endswith("!") and "t" in ipa[1]
    assert tp.decode(tp.encode("Hello world, how are you?")) == ipa[0]
    assert TextProcessor.from_dict(tp.to_dict()).mode == "phonemes"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing: apt-get install espeak-ng")
def test_phonemes_of_a_text_starting_with_a_dash_are_text_not_an_option(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-line fallback (here forced by the dash that espeak-ng breaks a clause at) passes each line
    as text: "-wowned" is a word to phonemize, not espeak-ng's option to write a wav file "owned"."""
    from muomni.text import EspeakPhonemizer

    monkeypatch.chdir(tmp_path)
    calls = []
    run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: calls.append(a) or run(*a, **kw))
    ipa = EspeakPhonemizer()(["hello \u2014 world", "-wowned.wav"])
    assert len(calls) > 1  # the fallback ran
    assert ipa[1].split(".")[0].strip()  # "-wowned" phonemized (as an option it gave nothing), then ". wav"
    assert list(tmp_path.iterdir()) == []


def test_phonemes_without_espeak_name_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"apt-get install espeak-ng"):
        TextProcessor("phonemes").encode("hello")


def test_long_text_is_split_at_sentences_then_clauses_and_every_piece_fits():
    from muomni.text import split_text

    def fits(limit):
        return lambda t: len(t) <= limit

    assert split_text("Dr. Smith paid $3.", fits(100)) == ["doctor smith paid three dollars."]  # whole, normalised
    paragraph = ("The first sentence is short. The second one, which is longer, has two clauses; and a third! "
                 "Is this the last?")
    assert split_text(paragraph, fits(40)) == [
        "the first sentence is short.", "the second one, which is longer,", "has two clauses; and a third!",
        "is this the last?"]
    pieces = split_text("one two three four five six seven eight nine ten eleven twelve", fits(20))
    assert all(len(p) <= 20 for p in pieces)
    assert " ".join(pieces) == "one two three four five six seven eight nine ten eleven twelve"
    # a word that does not fit stays whole
    assert split_text("a incomprehensibilities b", fits(10)) == ["a", "incomprehensibilities", "b"]
