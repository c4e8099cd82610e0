"""Shared fixtures: a real flite corpus for end-to-end tests, and writers of crafted audio files."""

from __future__ import annotations

import shutil
import signal
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


# A codec small enough to train a step in milliseconds, for tests of the run machinery.
TINY_CODEC = ["model.hidden_dim=32", "model.latent_dim=16", "model.n_blocks=1", "model.dilations=[1]",
              "model.codebook_size=16", "model.codebook_dim=8", "train.batch_size=4", "train.crop_frames=4",
              "train.warmup_steps=1", "train.log_every=1", "train.sample_every=1000", "train.eval_items=2"]


@pytest.fixture(scope="session")
def codec_stage_args(flite_corpus: Path) -> list[str]:
    """The command line of a tiny codec training on the flite corpus (add --set train.* as needed)."""
    import sys

    return [sys.executable, "train_codec.py", "--config", "configs/codec_tiny.json", "--device", "cpu",
            "--set", f"data.path={flite_corpus}", *TINY_CODEC]


@pytest.fixture(scope="session")
def tiny_talker(flite_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny codec (built, not trained), the corpus tokenized with it, and train_talker.py run 2 steps."""
    import torch

    import train_talker
    from muomni.checkpoint import save_checkpoint
    from muomni.data.tokenize import main as tokenize_main
    from muomni.models.codec import CodecConfig, CodecModel, codec_to_dict

    tmp = tmp_path_factory.mktemp("talker")
    torch.manual_seed(0)
    codec = CodecModel(CodecConfig(n_codebooks=2, codebook_size=32, hidden_dim=32, latent_dim=16, codebook_dim=16))
    d = codec_to_dict(codec)
    codec_path = tmp / "codec.pt"
    save_checkpoint(codec_path, {"stage": "codec", "step": 0, "format_version": 1, "config": {"model": d["config"]},
                                 "model": d["model"]})
    tokenize_main(["--codec", str(codec_path), "--data", str(flite_corpus), "--out", str(tmp / "codes")])
    args = ["--config", "configs/talker_tiny.json", "--set", f"data.path={flite_corpus}", f"data.codec={codec_path}",
            f"data.codes={tmp / 'codes'}", f"train.out_dir={tmp}", "train.run_name=run", "train.epochs=0",
            "train.steps=2", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.ffn_dim=64",
            "model.encoder_layers=1", "train.batch_size=4", "train.log_every=1", "train.save_every=2"]
    train_talker.main(args)
    return {"args": args, "dir": tmp / "run", "codec": codec_path, "corpus": flite_corpus, "tmp": tmp}


@pytest.fixture(scope="session")
def talker_stage_args(tiny_talker: dict) -> list[str]:
    """The command line of a tiny Talker training on the flite corpus (add --set train.* as needed)."""
    import sys

    return [sys.executable, "train_talker.py", "--device", "cpu", *tiny_talker["args"]]


@pytest.fixture
def keep_signal_handlers():
    """Run installs SIGINT/SIGTERM handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
