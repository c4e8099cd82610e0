"""Griffin-Lim vocoder: log-mel -> linear magnitude (NNLS) -> fast Griffin-Lim, in torch.

Needs no training; the pipeline falls back to it when no HiFi-GAN checkpoint is given. The one entry
point from a log-mel is ``mel_to_wav``; ``griffin_lim`` is its phase step on a linear magnitude.

- Mel inversion: non-negative least squares ``min_{P >= 0} ||M P - mel||^2`` for the power
  spectrogram P, solved batched by accelerated projected gradient (FISTA, Beck & Teboulle 2009)
  started from the clamped pseudo-inverse (as librosa's ``nnls`` starts its L-BFGS-B).
- Phase: fast Griffin-Lim with momentum (Perraudin, Balazs & Sondergaard 2013, "A fast
  Griffin-Lim algorithm"), the same update as ``librosa.griffinlim``.

Everything runs on the device and dtype of the input, so a GPU mel is inverted on the GPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from muomni.audio import HOP_LENGTH, N_FFT, WIN_LENGTH, mel_basis
from muomni.synthesis_config import GRIFFIN_LIM_ITERS

_EPS = 1e-8
_CACHE: dict[tuple[str, torch.dtype], dict[str, Tensor]] = {}
_WINDOWS: dict[tuple[str, torch.dtype], Tensor] = {}


def _window(device: torch.device, dtype: torch.dtype) -> Tensor:
    key = (str(device), dtype)
    if key not in _WINDOWS:
        _WINDOWS[key] = torch.hann_window(WIN_LENGTH, device=device, dtype=dtype)
    return _WINDOWS[key]


def _nnls_operators(device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """Per (device, dtype): M, M^T M, pinv(M)^T and the projected-gradient step 1/L."""
    key = (str(device), dtype)
    if key not in _CACHE:
        basis = mel_basis(torch.device("cpu"), torch.float64)  # (n_mels, F), solved in float64 once
        gram = basis.T @ basis  # (F, F)
        lipschitz = torch.linalg.eigvalsh(gram).max()
        ops = {
            "basis": basis,  # (n_mels, F)
            "gram": gram,
            "pinv_t": torch.linalg.pinv(basis).T,  # (n_mels, F)
            "step": 1.0 / lipschitz,
        }
        _CACHE[key] = {k: v.to(device=device, dtype=dtype) for k, v in ops.items()}
    return _CACHE[key]


def mel_to_magnitude(log_mel: Tensor, n_iter: int = 30) -> Tensor:
    """Linear STFT magnitude from a log power mel by NNLS.

    log_mel: (B, T, n_mels) or (T, n_mels), natural log of the power mel (muomni.audio.log_mel).
    Returns: (B, T, F) or (T, F) with F = N_FFT // 2 + 1, non-negative.
    """
    ops = _nnls_operators(log_mel.device, log_mel.dtype)
    mel = log_mel.exp()  # (..., T, n_mels) power mel
    target = mel @ ops["basis"]  # (..., T, F): M^T mel, time-major so each frame is a row
    power = (mel @ ops["pinv_t"]).clamp_min(0.0)  # (..., T, F) pinv start, projected
    # FISTA: gradient of 0.5 ||M p - m||^2 is M^T M p - M^T m; gram is symmetric so p @ gram works.
    momentum_point, t = power, 1.0
    for _ in range(n_iter):
        grad = momentum_point @ ops["gram"] - target
        nxt = (momentum_point - ops["step"] * grad).clamp_min(0.0)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        momentum_point = nxt + ((t - 1.0) / t_next) * (nxt - power)
        power, t = nxt, t_next
    return power.sqrt()


def _stft(wav: Tensor, window: Tensor) -> Tensor:
    """(B, N) -> complex (B, F, T); the front-end's STFT (centred, reflect padding)."""
    return torch.stft(wav, N_FFT, HOP_LENGTH, WIN_LENGTH, window, center=True, pad_mode="reflect",
                      return_complex=True)


def _istft(spec: Tensor, window: Tensor, length: int) -> Tensor:
    """complex (B, F, T) -> (B, length)."""
    return torch.istft(spec, N_FFT, HOP_LENGTH, WIN_LENGTH, window, center=True, length=length)


def griffin_lim(magnitude: Tensor, n_iter: int = GRIFFIN_LIM_ITERS, momentum: float = 0.99,
                seed: int | None = 0) -> Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013). magnitude: (B, T, F) time-major -> wav (B, T * hop).

    seed: random initial phase from a seeded generator (librosa's ``init="random"``);
    None starts from zero phase.
    """
    squeeze = magnitude.dim() == 2
    mag = (magnitude.unsqueeze(0) if squeeze else magnitude).transpose(1, 2)  # (B, F, T)
    # T centred frames span (T - 1) * hop samples; iterate at that length so STFT(ISTFT(.)) keeps T
    # frames, then zero-pad the output to T * hop, the length every vocoder in muomni returns.
    length = (mag.shape[-1] - 1) * HOP_LENGTH
    window = _window(mag.device, mag.dtype)
    if seed is None:
        angles = torch.ones_like(mag, dtype=torch.complex64 if mag.dtype != torch.float64
                                 else torch.complex128)
    else:
        # one (F, T) draw shared by the batch, so an item's result does not depend on its batch-mates
        gen = torch.Generator(device="cpu").manual_seed(seed)
        phase = 2 * torch.pi * torch.rand(mag.shape[1:], generator=gen, dtype=torch.float64)
        angles = torch.polar(torch.ones_like(phase), phase).expand_as(mag).to(mag.device)
        angles = angles.to(torch.complex128 if mag.dtype == torch.float64 else torch.complex64)
    angles = _iterate(mag, angles, window, length, n_iter, momentum)
    wav = _istft(mag * angles, window, length + HOP_LENGTH)  # (B, T * hop)
    return wav.squeeze(0) if squeeze else wav


def _iterate(mag: Tensor, angles: Tensor, window: Tensor, length: int, n_iter: int, momentum: float) -> Tensor:
    """n_iter fast Griffin-Lim steps: mag (B, F, T), unit-modulus angles (B, F, T) -> the last angles."""
    # The TF consistency projection: rebuilt = STFT(ISTFT(mag * angles)); then extrapolate with
    # momentum alpha = momentum / (1 + momentum) on the previous projection (Perraudin eq. 4).
    alpha = momentum / (1.0 + momentum)
    rebuilt = torch.zeros_like(angles)
    for _ in range(n_iter):
        previous = rebuilt
        rebuilt = _stft(_istft(mag * angles, window, length), window)
        angles = rebuilt - alpha * previous
        angles = angles / (angles.abs() + _EPS)
    return angles


@torch.no_grad()
def magnitude_of(log_mel: np.ndarray, nnls_iter: int = 30) -> np.ndarray:
    """``mel_to_magnitude`` on numpy: log-mel (T, n_mels) -> linear magnitude (T, F). Each frame is solved on its own
    (FISTA's step sizes do not depend on the data), so frames may be inverted in any grouping."""
    return mel_to_magnitude(torch.from_numpy(np.asarray(log_mel, dtype=np.float32)), nnls_iter).numpy()


@torch.no_grad()
def griffin_lim_from(magnitude: np.ndarray, angles: np.ndarray, n_iter: int = GRIFFIN_LIM_ITERS,
                     momentum: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """``griffin_lim`` started from given phases, for streaming (``muomni.streaming.WarmGriffinLim``): magnitude
    (T, F) and unit-modulus angles (T, F) complex64 -> (wav (T * 256,), the last angles (T, F)), numpy."""
    mag = torch.from_numpy(np.ascontiguousarray(magnitude.T, dtype=np.float32))[None]  # (1, F, T)
    length = (mag.shape[-1] - 1) * HOP_LENGTH
    window = _window(mag.device, mag.dtype)
    angles = _iterate(mag, torch.from_numpy(np.ascontiguousarray(angles.T))[None], window, length, n_iter, momentum)
    wav = _istft(mag * angles, window, length + HOP_LENGTH)[0]
    return wav.numpy(), angles[0].T.numpy()


@torch.no_grad()
def mel_to_wav(log_mel: Tensor | np.ndarray, n_iter: int = GRIFFIN_LIM_ITERS, momentum: float = 0.99,
               nnls_iter: int = 30, seed: int | None = 0) -> Tensor | np.ndarray:
    """log-mel (B, T, n_mels) or (T, n_mels) -> wav (B, T * 256) or (T * 256,), by Griffin-Lim.

    A tensor gives a tensor on its device (computed in float32, or float64 for a float64 mel); a numpy
    array gives a float32 numpy array. n_iter: Griffin-Lim iterations; nnls_iter: those of the mel
    inversion; seed: the initial phase (``griffin_lim``).
    """
    if isinstance(log_mel, np.ndarray):
        return mel_to_wav(torch.from_numpy(np.asarray(log_mel, dtype=np.float32)), n_iter, momentum, nnls_iter,
                          seed).numpy()
    if log_mel.dtype != torch.float64:
        log_mel = log_mel.float()
    return griffin_lim(mel_to_magnitude(log_mel, nnls_iter), n_iter, momentum, seed)


def spectral_convergence(wav: Tensor, target_mag: Tensor) -> Tensor:
    """||target - |STFT(wav)|||_F / ||target||_F per item (Sturmel & Daudet 2011).

    wav: (B, N) or (N,); target_mag: (B, T, F) or (T, F) time-major linear magnitude.
    The wav is trimmed or zero-padded to T frames. Returns (B,) or a scalar.
    """
    squeeze = wav.dim() == 1
    wav = wav.unsqueeze(0) if squeeze else wav
    target = (target_mag.unsqueeze(0) if target_mag.dim() == 2 else target_mag).to(wav.dtype)
    window = _window(wav.device, wav.dtype)
    n_frames = target.shape[1]
    mag = _stft(wav, window).abs().transpose(1, 2)  # (B, T', F)
    if mag.shape[1] < n_frames:
        mag = nn.functional.pad(mag, (0, 0, 0, n_frames - mag.shape[1]))
    mag = mag[:, :n_frames]
    sc = torch.linalg.vector_norm(target - mag, dim=(1, 2)) / torch.linalg.vector_norm(target, dim=(1, 2))
    return sc.squeeze(0) if squeeze else sc


def linear_magnitude(wav: Tensor) -> Tensor:
    """|STFT(wav)| time-major: (B, N) -> (B, N // hop + 1, F); the target for spectral_convergence."""
    squeeze = wav.dim() == 1
    wav = wav.unsqueeze(0) if squeeze else wav
    mag = _stft(wav, _window(wav.device, wav.dtype)).abs().transpose(1, 2)
    return mag.squeeze(0) if squeeze else mag
