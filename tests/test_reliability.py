"""Runs survive broken data and polite stops (the kill-and-resume soak is in test_kill_resume.py).

The gallery below holds every kind of bad item a real corpus has shipped with; the checker
and the training scripts must name each file with its reason and never crash.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_CODEC, tone, write_wav

from muomni.checkpoint import load_checkpoint, step_checkpoints
from muomni.training.stop import EXIT_STOPPED

ROOT = Path(__file__).resolve().parents[1]
# file stem -> the reason kind the checker must give (None: a valid file that must load)
GALLERY = {
    "truncated_header": "unreadable", "zero_bytes": "unreadable", "not_audio": "unreadable",
    "pcm8": None, "pcm24": None, "float32": None, "stereo": None, "rate48k": None,
    "nan_samples": "non-finite samples", "silence": "silence", "clipped": "clipping",
    "tiny_clip": "too short", "sixty_seconds": "too long", "no_transcript": "missing transcript",
    "empty_text": "empty text", "whitespace_text": "empty text", "latin1_text": "text not UTF-8",
    "dup": "duplicate id",
}


def build_gallery(root: Path, good_corpus: Path) -> Path:
    """A folder corpus: real flite utterances plus one file of each broken or unusual kind."""
    for i, wav in enumerate(sorted((good_corpus / "wavs").glob("*.wav"))[:12]):
        shutil.copy(wav, root / f"good_{i:02d}.wav")
        (root / f"good_{i:02d}.txt").write_text("a sentence that flite read aloud")
    text = "this file has a transcript"
    write_wav(root / "truncated_header.wav", text=text)
    (root / "truncated_header.wav").write_bytes((root / "truncated_header.wav").read_bytes()[:30])
    (root / "zero_bytes.wav").write_bytes(b"")
    (root / "zero_bytes.txt").write_text(text)
    (root / "not_audio.wav").write_text("<html>this is a web page saved with a .wav name</html>")
    (root / "not_audio.txt").write_text(text)
    write_wav(root / "pcm8.wav", subtype="PCM_U8", text=text)
    write_wav(root / "pcm24.wav", subtype="PCM_24", text=text)
    write_wav(root / "float32.wav", subtype="FLOAT", text=text)
    write_wav(root / "stereo.wav", tone(channels=2), text=text)
    write_wav(root / "rate48k.wav", tone(sample_rate=48000), sample_rate=48000, text=text)
    nan = tone()
    nan[100:200] = np.nan
    write_wav(root / "nan_samples.wav", nan, subtype="FLOAT", text=text)
    write_wav(root / "silence.wav", np.zeros(16000, np.float32), text=text)
    write_wav(root / "clipped.wav", np.clip(tone(amplitude=4.0), -1, 1), text=text)
    write_wav(root / "tiny_clip.wav", tone(0.05), text=text)
    write_wav(root / "sixty_seconds.wav", tone(60.0), text=text)
    write_wav(root / "no_transcript.wav")
    write_wav(root / "empty_text.wav", text="")
    write_wav(root / "whitespace_text.wav", text="   \n\t ")
    write_wav(root / "latin1_text.wav")
    (root / "latin1_text.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    write_wav(root / "dup.wav", text=text)
    sf.write(root / "dup.flac", tone(), 16000)  # same id "dup" as dup.wav
    (root / "dup.lab").write_text(text)
    return root


@pytest.fixture(scope="module")
def gallery(flite_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gallery(tmp_path_factory.mktemp("gallery"), flite_corpus)


def test_checker_names_every_broken_item(gallery: Path):
    proc = subprocess.run([sys.executable, "-m", "muomni.data", "check", str(gallery), "--max-seconds", "20"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr  # usable items remain
    bad = {line for line in proc.stdout.splitlines() if line.startswith("BAD")}
    for stem, kind in GALLERY.items():
        lines = [line for line in bad if f"{stem}." in line or f" {stem} " in line]
        if kind is None:
            assert not lines, f"{stem} must load, but the checker said: {lines}"
        else:
            assert any(kind in line for line in lines), f"{stem}: expected '{kind}', got {lines}"
    assert "usable 18" in proc.stdout  # 12 flite + 5 unusual-but-valid formats + the first 'dup'


@pytest.mark.timeout(180)  # 25 s measured on 2 cores under a load of ~8
def test_training_skips_each_broken_item_by_name(gallery: Path, tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "train_codec.py", "--config", "configs/codec_tiny.json", "--device", "cpu", "--set",
         f"data.path={gallery}", "data.format=folder", "data.max_seconds=20", "data.heldout=2",
         f"train.out_dir={tmp_path}", "train.run_name=gallery", "train.steps=2", "train.save_every=2",
         "train.eval_every=2", *TINY_CODEC],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "always"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stem, kind in GALLERY.items():
        if kind is not None:
            assert stem in proc.stderr, f"training did not name the skipped item {stem}"
    assert load_checkpoint(tmp_path / "gallery" / "step_00000002.pt", "codec")["step"] == 2


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def _codec_cmd(corpus: Path, out_dir: Path, run_name: str, *extra: str) -> list[str]:
    return [sys.executable, "train_codec.py", "--config", "configs/codec_tiny.json", "--device", "cpu", "--set",
            f"data.path={corpus}", f"train.out_dir={out_dir}", f"train.run_name={run_name}", "train.steps=60",
            "train.save_every=1000", "train.eval_every=1000", *TINY_CODEC, *extra]


@pytest.fixture(scope="module")
def reference_curve(flite_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """60 uninterrupted steps of a tiny codec: the curve a stopped-and-resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(_codec_cmd(flite_corpus, out, "ref"), capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _losses(out / "ref")


@pytest.mark.timeout(180)  # 25 s measured on 2 cores under a load of ~8
def test_time_budget_stops_with_a_checkpoint_and_exit_0(flite_corpus, tmp_path):
    """train.max_minutes on a run far too long for it: a checkpoint at the step where time ran out, held-out
    evaluation there and so a best.pt, exit 0."""
    proc = subprocess.run(_codec_cmd(flite_corpus, tmp_path, "budget", "train.steps=1000000", "train.max_minutes=0.1"),
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train.max_minutes = 0.1 reached" in proc.stderr
    saved = step_checkpoints(tmp_path / "budget")
    last = json.loads((tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()[-1])
    assert saved and 0 < saved[-1][0] < 1000000 and saved[-1][0] == last["step"]
    stats = json.loads((tmp_path / "budget" / "stats.json").read_text())
    assert stats["ended"]["reason"] == "max_minutes" and stats["ended"]["step"] == saved[-1][0]  # the demo: finished
    # evaluated where time ran out, though eval_every (1000) was never reached: the stopped run has its best.pt
    assert (tmp_path / "budget" / "best.pt").is_file() and stats["best_step"] == saved[-1][0]


@pytest.mark.timeout(420)  # 60-95 s measured on 2 cores under a load of ~8
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_polite_stop_saves_then_resume_continues_the_curve(flite_corpus, reference_curve, tmp_path, sig):
    proc = subprocess.Popen(_codec_cmd(flite_corpus, tmp_path, "stopped"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 5):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    saved = step_checkpoints(tmp_path / "stopped")
    assert saved and 5 <= saved[-1][0] < 60, err[-2000:]  # saved at the step boundary after the signal
    assert f"{sig.name} received" in err
    assert proc.returncode == EXIT_STOPPED  # the same status from every stage (test_faults.py: all three)
    resumed = subprocess.run(_codec_cmd(flite_corpus, tmp_path, "stopped") + ["--resume"],
                             capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = _losses(tmp_path / "stopped")
    assert sorted(got) == sorted(reference_curve) == list(range(1, 61))
    for step, loss in reference_curve.items():
        assert abs(loss - got[step]) < 1e-6, step
