"""The listening page, rendered by a real browser (headless Chromium) from disk."""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import unquote

import pytest

from muomni.audio import load_audio
from muomni.listening import write_listening_page
from muomni.scoring import Utterance, score_systems

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
        utts.append(Utterance(uid, uid[:3], text))
        truth.append(load_audio(tmp_path / f"{uid}.wav"))
    quiet = [0.3 * w for w in truth]
    out = tmp_path / "my page"  # a space in the folder: links must still resolve
    codec = score_systems(utts, {"original": quiet}, [("pocketsphinx", "")], out)
    tts = score_systems(utts, {"ground_truth": truth, "tts_griffinlim": quiet}, [("pocketsphinx", "")], out)
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
    shot = tmp_path / "page.png"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000  # something was painted
