"""The listening page, rendered by a real browser (headless Chromium) from disk."""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import unquote

import pytest

from muomni.audio import load_audio
from muomni.data import Item
from muomni.eval.listening import write_listening_page
from muomni.eval.scoring import score_systems

CHROMIUM_MISSING = "headless Chromium is needed: apt-get install chromium (or `make system-deps`)"


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return name
    pytest.fail(CHROMIUM_MISSING)


def test_listening_page_links_only_existing_files(tmp_path):
    if shutil.which("flite") is None:
        pytest.fail("flite is needed: sudo apt-get install flite")
    texts = {"slt_0001": "The farmer carried the long road in the rain.", "awb_0002": "It cost $3.50 on May 5th."}
    utts, truth = [], []
    for uid, text in texts.items():
        subprocess.run(["flite", "-voice", uid[:3], "-t", text, "-o", str(tmp_path / f"{uid}.wav")], check=True)
        utts.append(Item(uid, str(tmp_path / f"{uid}.wav"), uid[:3], text, 0.0))
        truth.append(load_audio(tmp_path / f"{uid}.wav"))
    quiet = [0.3 * w for w in truth]
    out = tmp_path / "my page"  # a space in the folder: links must still resolve
    codec = score_systems(utts, {"original": quiet}, [("pocketsphinx", "")], out)
    tts = score_systems(utts, {"ground_truth": truth, "tts_griffinlim": quiet}, [("pocketsphinx", "")], out,
                        mos="dnsmos")
    page = write_listening_page(out / "index.html", [{"kind": "tts", **tts}, {"kind": "codec", **codec}])

    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    audio = re.findall(r"<audio[^>]*\ssrc=\"([^\"]+)\"", dom)
    images = re.findall(r"<img[^>]*\ssrc=\"([^\"]+)\"", dom)
    assert len(audio) == len(images) == 2 * 3  # two sentences, three systems each, side by side
    for src in audio + images:
        assert not src.startswith(("/", "file:", "http")), src  # relative: the folder can move
        assert (page.parent / unquote(src)).is_file(), src
    assert "ground truth" in dom and "TTS + Griffin-Lim" in dom and "Griffin-Lim, original mels" in dom
    assert dom.count("<table class=\"summary\">") == 2 and "pocketsphinx" in dom
    assert texts["awb_0002"] in dom
    # DNSMOS: a column per rating in the rated report's summary, and each rated utterance's ratings under it
    assert dom.count("<th>DNSMOS OVRL</th>") == 1 and dom.count("class=\"mos\"") == 2 * 2
    rating = tts["per_utterance"][0]["systems"]["ground_truth"]["mos"]["ovrl"]
    assert f"DNSMOS OVRL {rating:.2f}" in dom
    shot = tmp_path / "page.png"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000  # something was painted


def test_demo_report_prints_every_recogniser_and_writes_the_page(tmp_path, capsys):
    """The demo's closing table has a column per recogniser and a row per system; its page links every wav."""
    import argparse
    import json

    from muomni.demo import Demo

    if shutil.which("flite") is None:
        pytest.fail("flite is needed: sudo apt-get install flite")
    text = "The farmer carried the long road in the rain."
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(tmp_path / "a.wav")], check=True)
    wav = load_audio(tmp_path / "a.wav")
    utts, out = [Item("slt_0001", str(tmp_path / "a.wav"), "slt", text, 0.0)], tmp_path / "demo"
    asrs = [("whisper", ""), ("pocketsphinx", "")]
    tts = score_systems(utts, {"ground_truth": [wav], "tts_universal": [wav], "tts_griffinlim": [0.5 * wav]}, asrs, out,
                        mos="dnsmos")
    codec = score_systems(utts, {"original": [wav], "codec": [0.5 * wav]}, asrs, out)
    (out / "tts.json").write_text(json.dumps({"kind": "tts", "utterances": 1, "rtf": 0.5, "duration_ratio": 1.0,
                                              **tts}))
    (out / "codec.json").write_text(json.dumps({"kind": "codec", **codec}))
    Demo(argparse.Namespace(out=str(out))).report()
    printed = capsys.readouterr().out
    assert "| audio | whisper:tiny.en | pocketsphinx | DNSMOS OVRL | SIG | BAK | P.808 |" in printed
    for row in ("ground truth", "Griffin-Lim on original mels", "codec round trip", "Talker + universal HiFi-GAN",
                "Talker + Griffin-Lim"):
        assert row in printed
    summary = json.loads((out / "summary.json").read_text())
    ovrl = tts["mos"]["by_system"]["tts_universal"]["ovrl"]
    assert summary["mos"]["TTS: Talker + universal HiFi-GAN"]["ovrl"] == ovrl and f"| {ovrl:.2f} |" in printed
    assert "n/a" in printed  # the codec report was scored without DNSMOS: its rows say so
    assert summary["wer"]["ground truth (flite audio)"]["pocketsphinx"] == tts["wer_by_asr"]["pocketsphinx"][
        "ground_truth"]
    dom = (out / "index.html").read_text()
    srcs = re.findall(r"<audio[^>]*\ssrc='([^']+)'", dom)
    assert len(srcs) == 5 and all((out / unquote(s)).is_file() for s in srcs)
