"""infer_tts.py: text in, wavs + mel pictures + manifest out; clear errors for bad checkpoints and text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

import infer_tts
from muomni.__main__ import main as muomni_main


@pytest.fixture(scope="module")
def talker_ckpt(tiny_talker) -> Path:
    return tiny_talker["dir"] / "step_00000002.pt"


def test_text_file_to_wavs_and_manifest(talker_ckpt, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("# a comment\nHello there.\nslt|The number is 42.\n")
    assert infer_tts.main(["--talker", str(talker_ckpt), "--text-file", str(lines), "--out-dir", str(tmp_path / "o"),
                           "--max-seconds", "2", "--griffin-lim-iters", "4", "--mel-from", "codes"]) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert {item["mel_from"] for item in manifest["items"]} == {"codes"}
    assert [item["text"] for item in manifest["items"]] == ["Hello there.", "The number is 42."]
    assert manifest["items"][1]["speaker"] == "slt" and manifest["vocoder"].startswith("Griffin-Lim")
    for item in manifest["items"]:
        wav, sr = sf.read(item["wav"])
        assert sr == 16000 and len(wav) == pytest.approx(item["duration"] * sr, abs=1)
        assert 0 < item["duration"] <= 2.0 + 0.08 and item["rtf"] > 0
        assert Path(item["wav"]).with_suffix(".png").stat().st_size > 1000


def test_exported_folder_synthesizes_like_the_checkpoint(talker_ckpt, tmp_path):
    pytest.importorskip("safetensors", reason="the export extra is installed by make test")
    assert muomni_main(["export", str(talker_ckpt), "--out", str(tmp_path / "model")]) == 0
    for source, name in ((talker_ckpt, "a.wav"), (tmp_path / "model", "b.wav")):
        assert infer_tts.main(["--talker", str(source), "--text", "Same words twice.", "--out", str(tmp_path / name),
                               "--max-seconds", "2", "--griffin-lim-iters", "4"]) == 0
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


@pytest.mark.parametrize("talker,text,needle", [
    ("missing.pt", "hello", "no such checkpoint"),
    ("codec", "hello", "codec checkpoint, but a talker checkpoint is needed"),
    ("talker", "", "empty"),
], ids=["missing", "wrong-stage", "empty-text"])
def test_errors_name_file_and_reason(tiny_talker, talker_ckpt, tmp_path, capsys, talker, text, needle):
    path = {"talker": talker_ckpt, "codec": tiny_talker["codec"]}.get(talker, tmp_path / talker)
    try:
        code = infer_tts.main(["--talker", str(path), "--text", text, "--out", str(tmp_path / "x.wav")])
    except SystemExit as exit_:  # argparse errors exit 2
        code = exit_.code
    assert code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


def test_empty_line_in_text_file_is_named(talker_ckpt, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("fine sentence\nslt|   \n")
    with pytest.raises(SystemExit, match="line 2: empty text"):
        infer_tts.main(["--talker", str(talker_ckpt), "--text-file", str(lines), "--out-dir", str(tmp_path)])


def test_evaluate_tts_writes_the_wavs_and_word_error_per_speaker(talker_ckpt, tiny_talker, tmp_path):
    from muomni.eval import evaluate

    report = evaluate.main(["tts", "--talker", str(talker_ckpt), "--data", str(tiny_talker["corpus"]), "--out-dir",
                            str(tmp_path / "wavs"), "--json", str(tmp_path / "tts.json"), "--n-iter", "4",
                            "--asr", "pocketsphinx"])
    for system in ("tts_griffinlim", "ground_truth"):
        assert len(list((tmp_path / "wavs" / system).glob("*.wav"))) == report["utterances"] > 0
    assert (tmp_path / "wavs" / "index.html").is_file()
    assert json.loads((tmp_path / "tts.json").read_text())["wer"] == pytest.approx(report["wer"])
    assert report["asr"]["headline"] == "pocketsphinx" and report["kind"] == "tts"
    # DNSMOS beside word error (--mos defaults to dnsmos where the 'eval' extra is installed)
    assert set(report["mos"]["by_system"]) == {"tts_griffinlim", "ground_truth"}
    assert report["dnsmos_ovrl"] == report["mos"]["by_system"]["tts_griffinlim"]["ovrl"]
    by = report["wer_by_speaker"]["pocketsphinx"]
    assert sum(d["utterances"] for d in by.values()) == report["utterances"]
    words = sum(d["words"] for d in by.values())
    for key, pooled in (("tts_griffinlim", "wer"), ("ground_truth", "wer_ground_truth")):
        assert sum(d[key] * d["words"] for d in by.values()) / words == pytest.approx(report[pooled])


def test_a_paragraph_is_synthesized_in_pieces_joined_by_pauses(talker_ckpt):
    from muomni.audio import HOP_LENGTH, SAMPLE_RATE
    from muomni.load import load_talker
    from muomni.synthesis import split_for_talker, synthesize_with_mels, text_to_codes
    from muomni.synthesis_config import PAUSE_SECONDS

    bundle = load_talker(talker_ckpt)
    sentences = ["The cat sat on the mat by the door.", "Then it walked out, slowly, into the rain.",
                 "Nobody saw it again that day."]
    bundle.model.cfg.max_text = max(len(bundle.text.symbols(s)) for s in sentences)  # as if trained on these
    pieces, owners = split_for_talker(bundle, [" ".join(sentences), "Short."])
    assert pieces == [s.lower() for s in sentences] + ["short."] and owners == [0, 0, 0, 1]
    gen = dict(mel_from="codes", n_iter=2, max_frames=6)
    mels, wavs = synthesize_with_mels(bundle, [" ".join(sentences), "Short."], **gen)
    alone, _ = synthesize_with_mels(bundle, sentences, **gen)
    pause = round(PAUSE_SECONDS * SAMPLE_RATE / HOP_LENGTH)
    assert len(mels) == len(wavs) == 2 and mels[0].shape[0] == sum(m.shape[0] for m in alone) + 2 * pause
    assert len(wavs[0]) == mels[0].shape[0] * HOP_LENGTH
    with pytest.warns(UserWarning, match="ran past the lengths this Talker trained on"):
        text_to_codes(bundle, [" ".join(sentences[:2])], max_frames=4)  # unsplit: longer than max_text
