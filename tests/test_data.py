"""Corpus readers, preflight checks, held-out split, mel cache, sentence generator and demo builder."""

from __future__ import annotations

import json
import re
import shutil
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from conftest import FLITE_CORPUS_ARGS, tone, write_wav

from muomni import audio
from muomni.data import Item, check_report, load_corpus, mel_cache, read_corpus, split_heldout
from muomni.data import demo as demo_mod
from muomni.data.__main__ import main as data_main
from muomni.data.cache import write_rows
from muomni.data.sentences import SentenceGenerator
from muomni.text import normalize_text


def data_cfg(path: Path, **kw) -> SimpleNamespace:
    base = {"path": str(path), "format": "auto", "min_seconds": 0.2, "max_seconds": 20.0, "heldout": 0.05,
            "split_seed": 0, "speakers": []}
    return SimpleNamespace(**{**base, **kw})


# ----- readers -----
def _ljspeech(root: Path, lines: list[str]) -> Path:
    for line in lines:
        write_wav(root / "wavs" / f"{line.split('|')[0]}.wav")
    (root / "metadata.csv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return root


@pytest.mark.parametrize(("lines", "speakers", "texts"), [
    (["a|Raw 1.|raw one.", "b|Two|two"], ["", ""], ["raw one.", "two"]),
    (["a|slt|Raw 1.|raw one.", "b|kal16|Two|two"], ["slt", "kal16"], ["raw one.", "two"]),
    (["a|only raw", "b|second"], ["", ""], ["only raw", "second"]),
], ids=["ljspeech-3col", "demo-4col", "2col"])
def test_ljspeech_reader(tmp_path: Path, lines, speakers, texts) -> None:
    items = read_corpus(_ljspeech(tmp_path, lines))
    assert [it.id for it in items] == ["a", "b"]
    assert [it.speaker for it in items] == speakers and [it.text for it in items] == texts
    assert items[0].path == str(tmp_path / "wavs" / "a.wav") and items[0].duration == pytest.approx(1.0)


@pytest.mark.parametrize("with_speaker", [False, True], ids=["path|text", "path|speaker|text"])
def test_filelist_reader_paths_relative_to_list(tmp_path: Path, with_speaker: bool) -> None:
    write_wav(tmp_path / "audio" / "x.wav")
    write_wav(tmp_path / "audio" / "y.flac")
    mid = "|bob" if with_speaker else ""
    (tmp_path / "lists").mkdir()
    filelist = tmp_path / "lists" / "train.txt"
    filelist.write_text(f"../audio/x.wav{mid}|Hello there\n\n../audio/y.flac{mid}|Second one\n")
    items = read_corpus(filelist)
    expected = [(tmp_path / "audio" / n).resolve() for n in ("x.wav", "y.flac")]
    assert [Path(it.path).resolve() for it in items] == expected
    assert [it.text for it in items] == ["Hello there", "Second one"]
    assert {it.speaker for it in items} == ({"bob"} if with_speaker else {""})
    assert all(not it.problem for it in items)


def test_folder_reader_txt_lab_and_speaker_subfolders(tmp_path: Path) -> None:
    write_wav(tmp_path / "one.wav", text="first text")
    write_wav(tmp_path / "spk2" / "two.wav")
    (tmp_path / "spk2" / "two.lab").write_text("second\ntext\n")
    items = read_corpus(tmp_path)
    expected = [("one", "", "first text"), ("spk2/two", "spk2", "second text")]
    assert [(it.id, it.speaker, it.text) for it in items] == expected


@pytest.mark.parametrize(("layout", "fmt"), [("ljspeech", "ljspeech"), ("filelist", "filelist"), ("folder", "folder")],
                         ids=["ljspeech", "filelist", "folder"])
def test_auto_detects_format(tmp_path: Path, layout: str, fmt: str) -> None:
    if layout == "ljspeech":
        root = _ljspeech(tmp_path, ["a|x|x"])
    elif layout == "filelist":
        write_wav(tmp_path / "a.wav")
        root = tmp_path / "list.txt"
        root.write_text("a.wav|x\n")
    else:
        root = tmp_path
        write_wav(tmp_path / "a.wav", text="x")
    assert read_corpus(root, "auto") == read_corpus(root, fmt)


def test_reader_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        read_corpus(tmp_path / "nope")
    with pytest.raises(ValueError, match="no audio files"):
        read_corpus(tmp_path)


# ----- checks -----
def _bad_folder(root: Path) -> None:
    """One file per fault the checker must name (folder layout), plus good ones in unusual encodings."""
    wav = tone(1.0)
    write_wav(root / "good.wav", text="fine")
    for name, subtype, sr, w in [("u8", "PCM_U8", 16000, wav), ("pcm24", "PCM_24", 16000, wav),
                                 ("float", "FLOAT", 16000, wav), ("stereo", "PCM_16", 16000, tone(1.0, channels=2)),
                                 ("rate48k", "PCM_16", 48000, tone(1.0, 48000))]:
        write_wav(root / f"{name}.wav", w, sr, subtype, text="fine")
    full = (root / "good.wav").read_bytes()
    (root / "trunc_header.wav").write_bytes(full[:30])
    (root / "trunc_data.wav").write_bytes(full[: len(full) // 2])
    (root / "zero_bytes.wav").write_bytes(b"")
    (root / "not_audio.wav").write_text("this is a text file")
    write_wav(root / "no_samples.wav", np.zeros(0, np.float32))
    write_wav(root / "nan.wav", np.where(np.arange(16000) % 100 == 0, np.nan, wav).astype(np.float32), subtype="FLOAT")
    write_wav(root / "silence.wav", np.zeros(16000, np.float32))
    write_wav(root / "clipped.wav", np.sign(wav).astype(np.float32))
    write_wav(root / "short.wav", tone(0.1))
    write_wav(root / "long.wav", tone(3.0))
    write_wav(root / "no_transcript.wav")
    write_wav(root / "blank_text.wav", text="  \n ")
    write_wav(root / "latin1.wav")
    (root / "latin1.txt").write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    for name in ("trunc_header", "trunc_data", "zero_bytes", "not_audio", "no_samples", "nan", "silence", "clipped",
                 "short", "long"):
        (root / f"{name}.txt").write_text("some text")


BAD_CASES = {
    "trunc_header": r"unreadable: .*", "trunc_data": r"truncated: ", "zero_bytes": r"unreadable: ",
    "not_audio": r"unreadable: .*", "no_samples": r"empty audio: ", "nan": r"non-finite samples: 160 ",
    "silence": r"silence: ", "clipped": r"clipping: ", "short": r"too short: 0\.10 s", "long": r"too long: 3\.00 s",
    "no_transcript": r"missing transcript: no no_transcript\.txt", "blank_text": r"empty text: ",
    "latin1": r"text not UTF-8: .*latin1\.txt line 2, byte 0xe9",
}


@pytest.fixture(scope="module")
def bad_report(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bad")
    _bad_folder(root)
    return check_report(read_corpus(root), min_seconds=0.2, max_seconds=2.0)


@pytest.mark.parametrize(("name", "reason"), BAD_CASES.items(), ids=list(BAD_CASES))
def test_checker_names_each_fault(bad_report, name: str, reason: str) -> None:
    reasons = {n.split(" ")[0]: r for n, r in bad_report.bad}
    assert name in reasons, f"{name} was not reported; bad: {reasons}"
    assert re.match(reason, reasons[name]), reasons[name]


@pytest.mark.parametrize("name", ["good", "u8", "pcm24", "float", "stereo", "rate48k"])
def test_checker_accepts_and_loads_other_encodings(bad_report, name: str) -> None:
    item = next(it for it in bad_report.good if it.id == name)
    assert item.duration == pytest.approx(1.0, abs=1e-3)
    wav = audio.load_audio(item.path)
    assert wav.dtype == np.float32 and wav.ndim == 1 and abs(len(wav) - 16000) <= 1
    assert 0.4 < np.abs(wav).max() < 0.55


def test_checker_counts(bad_report) -> None:
    assert len(bad_report.good) == 6 and len(bad_report.bad) == len(BAD_CASES)
    assert bad_report.sample_rates[48000] == 1


def test_ljspeech_duplicates_missing_wavs_and_bad_bytes(tmp_path: Path) -> None:
    _ljspeech(tmp_path, ["a|one|one", "b|two|two"])
    with open(tmp_path / "metadata.csv", "ab") as f:
        f.write(b"a|again|again\nghost|boo|boo\nc|caf\xe9|caf\xe9\n")
    write_wav(tmp_path / "wavs" / "c.wav")
    bad = dict(check_report(read_corpus(tmp_path)).bad)
    assert re.match(r"duplicate id: a already used by .*a\.wav", bad[f"a ({tmp_path / 'wavs' / 'a.wav'})"])
    assert bad[f"ghost ({tmp_path / 'wavs' / 'ghost.wav'})"].startswith("wav missing: ")
    assert re.search(r"metadata\.csv line 5, byte 0xe9 at column 6", bad[f"c ({tmp_path / 'wavs' / 'c.wav'})"])


def test_check_cli_prints_bad_items_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bad_folder(tmp_path)
    out = tmp_path / "report.json"
    assert data_main(["check", str(tmp_path), "--max-seconds", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("BAD ") == len(BAD_CASES) and "nan.wav): non-finite samples" in text
    assert "items 19  usable 6" in text and "48000 Hz x 1" in text and "p50 1.00 s" in text
    summary = json.loads(out.read_text())
    assert summary["usable"] == 6 and len(summary["bad_items"]) == len(BAD_CASES)


def test_check_cli_fails_when_nothing_usable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "x.wav").write_bytes(b"")
    (tmp_path / "x.txt").write_text("hi")
    assert data_main(["check", str(tmp_path)]) == 1
    assert "usable 0" in capsys.readouterr().out


# ----- load_corpus and the split -----
def test_load_corpus_warns_per_item_and_raises_when_nothing_usable(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.wav").write_bytes(b"junk")
        (tmp_path / f"{name}.txt").write_text("text")
    with warnings.catch_warnings(record=True) as caught, \
            pytest.raises(ValueError, match=r"no usable utterance in .*: 3 items, 3 unreadable \(see python -m muomni"):
        warnings.simplefilter("always")
        load_corpus(data_cfg(tmp_path))
    messages = [str(w.message) for w in caught]
    assert [m.split(" (")[0] for m in messages[:3]] == ["skipping a", "skipping b", "skipping c"]
    assert "skipped 3 of 3 items (3 unreadable)" in messages[3] and len(messages) == 4


def test_load_corpus_speakers_and_split(tmp_path: Path) -> None:
    for i in range(10):
        write_wav(tmp_path / ("s1" if i % 2 else "s2") / f"u{i}.wav", text=f"utterance {i}")
    corpus = load_corpus(data_cfg(tmp_path, heldout=2))
    assert corpus.speakers == ["s1", "s2"] and len(corpus.heldout) == 2 and len(corpus.train) == 8
    only = load_corpus(data_cfg(tmp_path, speakers=["s1"]))
    assert {it.speaker for it in only.train + only.heldout} == {"s1"}
    with pytest.raises(ValueError, match=r"speakers \['s9'\]"):
        load_corpus(data_cfg(tmp_path, speakers=["s9"]))


def _items(n: int) -> list[Item]:
    return [Item(f"utt{i}", f"{i}.wav", "", "t", 1.0) for i in range(n)]


@pytest.mark.parametrize(("n", "heldout", "expected"), [(100, 0.05, 5), (100, 7, 7), (20, 0.01, 1), (2, 0.5, 1),
                                                        (1, 0.5, 0), (10, 0, 0), (3, 10, 2)],
                         ids=["fraction", "count", "at-least-one", "two-items", "one-item", "zero", "never-all"])
def test_split_sizes(n: int, heldout: float, expected: int) -> None:
    train, held = split_heldout(_items(n), heldout, seed=0)
    assert len(held) == expected and len(train) + len(held) == n


def test_split_is_deterministic_and_order_free() -> None:
    items = _items(200)
    held = {it.id for it in split_heldout(items, 0.1, seed=3)[1]}
    assert held == {it.id for it in split_heldout(items[::-1], 0.1, seed=3)[1]}
    assert held != {it.id for it in split_heldout(items, 0.1, seed=4)[1]}


# ----- mel cache -----
def test_mel_cache_matches_front_end_and_rebuilds_on_key_change(tmp_path: Path) -> None:
    paths = [write_wav(tmp_path / "w" / f"{i}.wav", tone(0.3 + 0.2 * i)) for i in range(3)]
    items = [Item(str(i), str(p), "", "t", 0.0) for i, p in enumerate(paths)]
    cache = mel_cache(items, tmp_path / "cache")
    assert len(cache) == 3 and cache.ids == ["0", "1", "2"]
    for i, p in enumerate(paths):
        mel = audio.log_mel(audio.load_audio(p))[0].numpy()
        got = cache.get(i)
        assert got.dtype == np.float32 and got.shape == mel.shape == (cache.lengths[i], 128)
        np.testing.assert_allclose(got, mel, atol=0.02)
    assert isinstance(cache._data, np.memmap)
    index = tmp_path / "cache" / "mels.json"
    stamp = index.stat().st_mtime_ns
    assert mel_cache(items, tmp_path / "cache").lengths.tolist() == cache.lengths.tolist()
    assert index.stat().st_mtime_ns == stamp  # same key: reused
    sf.write(paths[2], tone(1.5), 16000, subtype="PCM_16")
    rebuilt = mel_cache(items, tmp_path / "cache")
    assert index.stat().st_mtime_ns != stamp and rebuilt.lengths[2] == audio.num_frames(24000)
    assert len(mel_cache(items[:2], tmp_path / "cache")) == 2
    assert not list((tmp_path / "cache").glob("*.tmp"))



def test_two_builds_of_one_cache_at_once_both_succeed(tmp_path: Path) -> None:
    """Two trainings started together on one corpus build its cache at the same moment: each writes its own
    temporary files, so neither rename finds the other's file gone."""
    barrier = threading.Barrier(2, timeout=10)

    def rows():
        barrier.wait()  # both writers have their temporary files open before either renames
        yield np.ones((3, 4), np.float32)

    npy, index = tmp_path / "c.npy", tmp_path / "c.json"
    results, errors = [], []

    def build() -> None:
        try:
            results.append(write_rows(npy, index, rows(), "<f2", 4, {"key": "k"}))
        except Exception as err:  # noqa: BLE001 - surfaced by the assert below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    assert np.load(npy).shape == (3, 4) and json.loads(index.read_text())["lengths"] == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.npy"]

# ----- sentences and the demo corpus -----
def test_sentence_generator_variety() -> None:
    sentences = SentenceGenerator(seed=0).sentences(1000)
    words = [re.sub(r"[^a-z' ]", " ", normalize_text(s)).split() for s in sentences]
    lengths = np.array([len(w) for w in words])
    assert len({w for ws in words for w in ws}) >= 1000
    assert len(set(sentences)) == 1000
    assert sum(s.endswith("?") for s in sentences) >= 100
    assert sum(bool(re.search(r"\d", s)) for s in sentences) >= 100
    assert lengths.min() >= 3 and lengths.max() <= 22 and np.percentile(lengths, 95) >= 14
    assert SentenceGenerator(seed=0).sentences(50) == sentences[:50]
    assert SentenceGenerator(seed=1).sentences(50) != sentences[:50]


def test_demo_plan_is_deterministic() -> None:
    a = demo_mod.plan(30, ["slt", "kal16"], seed=5)
    assert a == demo_mod.plan(30, ["slt", "kal16"], seed=5)
    assert {voice for _, voice, _, _ in a} == {"slt", "kal16"}
    assert all("|" not in t and not re.search(r"\d", norm) for _, _, t, norm in a)


def test_demo_without_flite_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"sudo apt-get install flite"):
        demo_mod.build_demo(tmp_path / "demo", utterances=2)


def test_flite_corpus_is_complete_and_rerun_is_instant(flite_corpus: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corpus = load_corpus(data_cfg(flite_corpus, heldout=2))
    assert len(corpus.train) + len(corpus.heldout) == FLITE_CORPUS_ARGS["utterances"]
    assert corpus.speakers == ["kal16", "slt"]
    stamp = (flite_corpus / "metadata.csv").stat().st_mtime_ns
    demo_mod.build_demo(flite_corpus, progress=False, **FLITE_CORPUS_ARGS)
    assert (flite_corpus / "metadata.csv").stat().st_mtime_ns == stamp
