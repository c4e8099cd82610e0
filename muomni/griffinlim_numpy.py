"""Griffin-Lim in numpy, for the runtime without torch (``muomni.onnx_runtime``): the same mel inversion (NNLS
by FISTA from the clamped pseudo-inverse) and fast Griffin-Lim with momentum (Perraudin et al. 2013) as
``muomni.models.griffinlim``, on the front-end's STFT (centred, reflect padding, periodic Hann window).

Its random initial phases come from numpy, not torch, so its audio is not torch's sample for sample; started
from the same phases (``griffin_lim_from``) the two agree to float32 rounding (tests/test_onnx.py).
"""

from __future__ import annotations

import numpy as np

from muomni.synthesis_config import GRIFFIN_LIM_ITERS

_EPS = 1e-8


class GriffinLim:
    """mel_basis (n_mels, F) float64, as the ONNX folder's ``mel_basis.npy``; n_fft, hop as the front-end."""

    def __init__(self, mel_basis: np.ndarray, n_fft: int = 1024, hop: int = 256, n_iter: int = GRIFFIN_LIM_ITERS,
                 momentum: float = 0.99, nnls_iter: int = 30):
        basis = np.asarray(mel_basis, dtype=np.float64)
        gram = basis.T @ basis
        self.basis, self.gram = basis.astype(np.float32), gram.astype(np.float32)
        self.pinv_t = np.linalg.pinv(basis).T.astype(np.float32)
        self.step = np.float32(1.0 / np.linalg.eigvalsh(gram).max())
        self.n_fft, self.hop, self.n_iter, self.momentum, self.nnls_iter = n_fft, hop, n_iter, momentum, nnls_iter
        n = np.arange(n_fft)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)).astype(np.float32)  # periodic Hann

    def magnitude(self, log_mel: np.ndarray) -> np.ndarray:
        """log power mel (T, n_mels) -> linear magnitude (T, F) by non-negative least squares (FISTA)."""
        mel = np.exp(np.asarray(log_mel, dtype=np.float32))
        target = mel @ self.basis
        power = np.maximum(mel @ self.pinv_t, 0.0)
        point, t = power, 1.0
        for _ in range(self.nnls_iter):
            nxt = np.maximum(point - self.step * (point @ self.gram - target), 0.0)
            t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
            point = nxt + np.float32((t - 1.0) / t_next) * (nxt - power)
            power, t = nxt, t_next
        return np.sqrt(power)

    def stft(self, wav: np.ndarray) -> np.ndarray:
        """(N,) -> complex (T, F), T = N // hop + 1."""
        half = self.n_fft // 2
        padded = np.pad(wav, (half, half), mode="reflect")
        n = 1 + (len(padded) - self.n_fft) // self.hop
        idx = np.arange(self.n_fft)[None] + self.hop * np.arange(n)[:, None]
        return np.fft.rfft(padded[idx] * self.window, axis=-1).astype(np.complex64)

    def istft(self, spec: np.ndarray, length: int) -> np.ndarray:
        """complex (T, F) -> (length,) by weighted overlap-add, as torch.istft(center=True)."""
        frames = np.fft.irfft(spec, n=self.n_fft, axis=-1).astype(np.float32) * self.window  # (T, n_fft)
        T = len(frames)
        total = self.n_fft + self.hop * (T - 1)
        y, env = np.zeros(total, np.float32), np.zeros(total, np.float32)
        for t in range(T):
            y[t * self.hop:t * self.hop + self.n_fft] += frames[t]
            env[t * self.hop:t * self.hop + self.n_fft] += self.window ** 2
        start = self.n_fft // 2
        return y[start:start + length] / env[start:start + length]

    def from_magnitude(self, mag: np.ndarray, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linear magnitude (T, F), unit-modulus angles (T, F) -> (wav (T hop,), the last angles)."""
        length = (len(mag) - 1) * self.hop
        alpha = np.float32(self.momentum / (1.0 + self.momentum))
        angles = np.asarray(angles, dtype=np.complex64)
        rebuilt = np.zeros_like(angles)
        for _ in range(self.n_iter):
            previous = rebuilt
            rebuilt = self.stft(self.istft(mag * angles, length))
            angles = rebuilt - alpha * previous
            angles = (angles / (np.abs(angles) + _EPS)).astype(np.complex64)
        return self.istft(mag * angles, length + self.hop), angles

    def __call__(self, log_mel: np.ndarray, seed: int = 0) -> np.ndarray:
        """log-mel (T, n_mels) -> wav (T hop,), from seeded random phases."""
        phase = np.random.default_rng(seed).random((len(log_mel), self.n_fft // 2 + 1))
        return self.from_magnitude(self.magnitude(log_mel), np.exp(2j * np.pi * phase))[0]
