"""The one audio front-end shared by every stage (docs/DESIGN.md §2).

16 kHz mono float32 audio; log-mel spectrograms with a 16 ms hop (n_fft 1024, Hann window
1024, hop 256), 128 Slaney mel bins from 0 to 8 kHz, ``log(clamp(mel, 1e-5))``.
Mels are time-major everywhere: ``(B, T, 128)``.

The STFT runs in torch; the mel basis comes from ``librosa.filters.mel`` (Slaney scale and
norm). torchaudio is not used: its I/O moved out and its mel defaults (HTK, no norm)
silently differ from librosa's.
"""

from __future__ import annotations

import os
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
from torch import nn

from muomni.files import atomic_path

SAMPLE_RATE = 16000
N_FFT = 1024
WIN_LENGTH = 1024
HOP_LENGTH = 256
N_MELS = 128
FMIN = 0.0
FMAX = 8000.0
LOG_FLOOR = 1e-5


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample_rate, n_samples, channels) from the header alone."""
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises RuntimeError/LibsndfileError subclasses
        raise AudioError(path, f"unreadable audio ({_short(err)})") from None
    return info.samplerate, info.frames, info.channels


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any file soundfile reads (8/16/24/32-bit, float, any rate, any channel count) as mono float32 (T,).

    Stereo is mixed down by averaging; other rates are resampled with soxr (librosa's default).
    """
    if not Path(path).is_file():
        raise AudioError(path, "file not found")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except Exception as err:
        raise AudioError(path, f"unreadable or truncated audio ({_short(err)})") from None
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr != sample_rate and len(wav) > 0:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate).astype(np.float32)
    return np.ascontiguousarray(wav, dtype=np.float32)


def save_wav(path: str | os.PathLike, wav: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> None:
    """Write a mono 16-bit wav atomically (temp file + rename), creating the folder."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().float().cpu().numpy()
    wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(tmp, wav, sample_rate, subtype="PCM_16", format="WAV")


def num_frames(n_samples: int) -> int:
    """Mel frames for a signal of n_samples (centred STFT)."""
    return n_samples // HOP_LENGTH + 1


_MEL_BASIS: dict[tuple[str, torch.dtype], torch.Tensor] = {}


def mel_basis(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """librosa's Slaney mel filterbank (N_MELS, N_FFT // 2 + 1), cached per (device, dtype)."""
    device = torch.device(device or "cpu")
    key = (str(device), dtype)
    if key not in _MEL_BASIS:
        basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)
        _MEL_BASIS[key] = torch.from_numpy(basis).to(device=device, dtype=dtype)
    return _MEL_BASIS[key]


class MelSpectrogram(nn.Module):
    """wav (B, T) or (T,) -> log-mel (B, T // 256 + 1, 128)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN_LENGTH), persistent=False)

    def power(self, wav: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram (B, frames, 128), before the log."""
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        wav = wav.float()
        spec = torch.stft(
            wav, N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=self.window.to(wav.device),
            center=True, pad_mode="reflect", return_complex=True,
        )  # (B, F, frames)
        power = spec.real.square() + spec.imag.square()
        return torch.matmul(mel_basis(wav.device), power).transpose(1, 2)  # (B, frames, 128)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(self.power(wav), min=LOG_FLOOR))


_MEL_MODULES: dict[str, MelSpectrogram] = {}


def log_mel(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Functional form of MelSpectrogram, the module cached per device."""
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(wav)
    key = str(wav.device)
    if key not in _MEL_MODULES:
        _MEL_MODULES[key] = MelSpectrogram().to(wav.device)
    with torch.no_grad():
        return _MEL_MODULES[key](wav)


def mel_to_png(path: str | os.PathLike, mels: list, titles: list[str]) -> None:
    """Stacked log-mel panels, one per (T, 128) mel, written as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(mels), 1, figsize=(10, 2.6 * len(mels)), squeeze=False)
    for ax, mel, title in zip(axes[:, 0], mels, titles):
        if isinstance(mel, torch.Tensor):
            mel = mel.detach().float().cpu().numpy()
        ax.imshow(np.asarray(mel).T, origin="lower", aspect="auto", interpolation="none", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel(f"frame ({1000 * HOP_LENGTH // SAMPLE_RATE} ms)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _short(err: Exception) -> str:
    return str(err).strip().splitlines()[-1][:160] if str(err).strip() else type(err).__name__
