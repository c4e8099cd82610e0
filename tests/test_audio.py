"""The audio front-end: loading, saving and librosa mel parity."""

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from muomni import audio


def _chirp(seconds: float = 1.0, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * (200 + 1500 * t) * t)).astype(np.float32)


def test_mel_matches_librosa():
    wav = _chirp(1.3) + 0.01 * np.random.default_rng(0).standard_normal(20800).astype(np.float32)
    ours = audio.MelSpectrogram().power(torch.from_numpy(wav))[0].numpy().T  # (128, frames)
    ref = librosa.feature.melspectrogram(
        y=wav, sr=16000, n_fft=1024, hop_length=256, win_length=1024, window="hann", center=True,
        pad_mode="reflect", power=2.0, n_mels=128, fmin=0.0, fmax=8000.0)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * ref.max())
    log = audio.log_mel(wav)
    assert log.shape == (1, audio.num_frames(len(wav)), 128)
    np.testing.assert_allclose(log[0].numpy().T, np.log(np.maximum(ref, 1e-5)), atol=1e-3)


@pytest.mark.parametrize(
    "subtype,sr,channels",
    [("PCM_U8", 16000, 1), ("PCM_24", 16000, 1), ("FLOAT", 16000, 1), ("PCM_16", 16000, 2), ("PCM_16", 48000, 1)],
    ids=["8bit", "24bit", "float", "stereo", "48kHz"],
)
def test_load_audio_formats(tmp_path, subtype, sr, channels):
    wav16 = _chirp(0.5)
    wav = librosa.resample(wav16, orig_sr=16000, target_sr=sr) if sr != 16000 else wav16
    data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
    path = tmp_path / "x.wav"
    sf.write(path, data, sr, subtype=subtype)
    loaded = audio.load_audio(path)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(len(loaded) - len(wav16)) <= 2
    n = min(len(loaded), len(wav16))
    tol = 0.02 if subtype == "PCM_U8" else 0.01
    assert np.sqrt(np.mean((loaded[:n] - wav16[:n]) ** 2)) < tol


def test_broken_files_name_file_and_reason(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "text.wav"
    text.write_text("not audio at all")
    for path in (empty, text, tmp_path / "missing.wav"):
        with pytest.raises(audio.AudioError) as err:
            audio.load_audio(path)
        assert str(path) in str(err.value)


def test_save_wav_roundtrip(tmp_path):
    wav = _chirp(0.25)
    path = tmp_path / "sub" / "out.wav"
    audio.save_wav(path, torch.from_numpy(wav))
    back = audio.load_audio(path)
    np.testing.assert_allclose(back, wav, atol=1e-3)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temp file left behind
