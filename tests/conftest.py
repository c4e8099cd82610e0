"""Shared fixtures: a real flite corpus for end-to-end tests, and writers of crafted audio files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from muomni.data.demo import FLITE_MISSING, build_demo

FLITE_CORPUS_ARGS = {"utterances": 24, "voices": ["slt", "kal16"], "seed": 7}


@pytest.fixture(scope="session")
def flite_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real demo corpus (24 flite utterances, voices slt and kal16), built once per session.

    Fails, never skips, when flite is missing: end-to-end tests that skip silently prove nothing.
    """
    if shutil.which("flite") is None:
        pytest.fail(FLITE_MISSING)
    return build_demo(tmp_path_factory.mktemp("flite_corpus") / "demo", jobs=2, progress=False, **FLITE_CORPUS_ARGS)


def tone(seconds: float = 1.0, sample_rate: int = 16000, amplitude: float = 0.5, channels: int = 1) -> np.ndarray:
    """A 220 Hz sine, (T,) or (T, channels)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wav = (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return wav if channels == 1 else np.stack([wav] * channels, axis=1)


def write_wav(path: Path, wav: np.ndarray | None = None, sample_rate: int = 16000, subtype: str = "PCM_16",
              text: str | None = None) -> Path:
    """Write a wav (a 1 s tone by default) and, when text is given, a same-named .txt transcript."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(sample_rate=sample_rate) if wav is None else wav, sample_rate, subtype=subtype)
    if text is not None:
        path.with_suffix(".txt").write_text(text, encoding="utf-8")
    return path
