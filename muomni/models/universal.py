"""HiFi-GAN V1's "universal" generator heard from muomni's mels (docs/DESIGN.md §6).

The universal generator (Kong, Kim & Bae 2020, "HiFi-GAN", V1 trained on many speakers) reads another
world's mel: 22,050 Hz audio, n_fft 1024, hop 256 (11.6 ms), 80 Slaney mel bins from 0 to 8 kHz, and the
log of the mel of the STFT *magnitude*. muomni's mel is 16 kHz, hop 256 (16 ms), 128 bins, log of the mel
of the *power*. ``MelAdapter`` maps one to the other with no training; ``AdaptedGenerator`` is the
adapter, the generator and, where the generator's output is 22.05 kHz audio, a resampler back to 16 kHz,
so that it maps muomni's log-mel (B, T, 128) to a 16 kHz wav (B, T * 256) like every vocoder in muomni.

Adapters (``HiFiGANConfig.adapter``):

- ``"resample"``: the linear magnitude by non-negative least squares on muomni's mel basis (the Griffin-Lim
  front half, ``mel_to_magnitude``), linearly interpolated from the 16 kHz bin centres (15.6 Hz apart) onto
  the 22.05 kHz ones (21.5 Hz apart) and pooled by the 80-bin basis, both in one fixed matrix, then linearly
  interpolated in time from 16 ms onto 11.6 ms frames; the 22.05 kHz output is resampled to 16 kHz by a
  windowed-sinc polyphase filter (``Resample``, 441 -> 320).
- ``"stretch"``: the 16 kHz magnitude bins are pooled as if they were the 22.05 kHz bins (the spectrum
  stretched up by 22050 / 16000), the generator runs at muomni's frame rate, and its samples are played at
  16 kHz, which stretches time and frequency back down: no interpolation of frames, no resampling, 28 %
  fewer samples to generate; but the basis stops at 8 kHz of the stretched spectrum, so 5.8-8 kHz is lost.

The resample adapter scales the interpolated magnitude by sqrt(22050 / 16000), which makes a noise band's
pooled magnitude what the 22.05 kHz STFT would give (docs/RESULTS.md has the round trip at other gains).
Mel cells at muomni's floor (log 1e-5) are read as ``adapter_floor`` (a lower log power) before the
inversion: the floor hides quieter cells, and inverted as it is it lays a noise floor under every silence.

Neither adapter is trained, and both lose what muomni's mel cannot say back exactly (the least-squares
magnitude smears the harmonics; 16 ms frames are interpolated onto 11.6 ms ones). ``adapter_refine``
adds ``MelRefiner``, a small convolutional correction of the adapted mel, trained by regression onto
``UniversalMel``: the mel the generator was trained on, computed from the real audio resampled to 22.05 kHz
(``train_vocoder.py`` with ``train.trainable = "adapter"``; the generator stays as shipped).

The module does no file I/O; ``muomni.pretrained`` finds and maps the shipped weights.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from muomni.audio import HOP_LENGTH, LOG_FLOOR, N_FFT, N_MELS, SAMPLE_RATE
from muomni.models.griffinlim import mel_to_magnitude
from muomni.models.hifigan import Generator, HiFiGANConfig, remove_weight_norm

UNIVERSAL_RATE = 22050
UNIVERSAL_N_MELS = 80
UNIVERSAL_FMAX = 8000.0
ADAPTERS = ("resample", "stretch")


UNIVERSAL_ARCHITECTURE = {"n_mels": UNIVERSAL_N_MELS, "upsample_rates": [8, 8, 2, 2],
                          "upsample_kernel_sizes": [16, 16, 4, 4], "upsample_initial_channel": 512,
                          "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3}


def universal_config(adapter: str = "resample", **settings) -> HiFiGANConfig:
    """HiFi-GAN V1 (Kong et al. 2020, table 1: 512 channels, MRF kernels [3, 7, 11], dilations [1, 3, 5]) on
    80 mel bins, behind ``adapter``; other settings (adapter options, discriminators) as given."""
    return HiFiGANConfig(**UNIVERSAL_ARCHITECTURE, adapter=adapter, **settings)


def universal_mismatch(cfg: HiFiGANConfig) -> list[str]:
    """'key: value != universal value' for every generator setting where ``cfg`` is not HiFi-GAN V1's
    universal architecture behind an adapter (empty when the universal weights fit it)."""
    out = [f"{k}: {getattr(cfg, k)!r} != {v!r}" for k, v in UNIVERSAL_ARCHITECTURE.items() if getattr(cfg, k) != v]
    return out + ([] if cfg.adapter else [f"adapter: '' (one of {', '.join(ADAPTERS)} is needed)"])


def _sinc_kernel(orig: int, new: int, zeros: int, rolloff: float) -> tuple[Tensor, int]:
    """Hann-windowed sinc low-pass sampled at each of the ``new`` output phases (float64): (new, K) taps over K
    input samples, and the half-width W in input samples (tap i of phase j sits at input offset i - W)."""
    cutoff = rolloff * min(orig, new) / orig  # cycles per input sample x 2: the low-pass edge below both Nyquists
    half = math.ceil(zeros / cutoff)  # W: ``zeros`` zero crossings of the sinc each side
    taps = torch.arange(orig + 2 * half, dtype=torch.float64)  # (K,)
    phase = torch.arange(new, dtype=torch.float64)[:, None] * orig / new  # (new, 1): output j sits at input j*orig/new
    d = phase + half - taps  # (new, K): distance from the output's position to each tap, in input samples
    window = torch.where(d.abs() <= half, torch.cos(d * math.pi / (2 * half)) ** 2, torch.zeros_like(d))
    return cutoff * torch.sinc(cutoff * d) * window, half


class Resample(nn.Module):
    """Polyphase windowed-sinc resampling by ``new / orig`` (reduced by their gcd), in torch, batched.

    One strided conv: input frames of ``orig`` samples give ``new`` outputs each, one filter phase per
    output (Smith's bandlimited interpolation with a Hann-windowed sinc, ``zeros`` zero crossings a side,
    the low-pass at ``rolloff`` of the lower Nyquist frequency). (B, N) -> (B, ceil(N * new / orig)).
    """

    def __init__(self, orig: int, new: int, zeros: int = 16, rolloff: float = 0.96):
        super().__init__()
        g = math.gcd(orig, new)
        self.orig, self.new = orig // g, new // g
        kernel, self.half = _sinc_kernel(self.orig, self.new, zeros, rolloff)
        self.register_buffer("kernel", kernel.float().unsqueeze(1), persistent=False)  # (new, 1, K)

    def forward(self, wav: Tensor) -> Tensor:  # (B, N) -> (B, ceil(N * new / orig))
        n = wav.shape[-1]
        out_len = -(-n * self.new // self.orig)
        frames = -(-n // self.orig)  # enough input frames to cover every output
        x = F.pad(wav.unsqueeze(1), (self.half, self.half + frames * self.orig - n))  # (B, 1, N')
        y = F.conv1d(x, self.kernel.to(wav.dtype), stride=self.orig)  # (B, new, frames)
        return y.transpose(1, 2).reshape(wav.shape[0], -1)[:, :out_len]


def _bin_interpolation(src_rate: int, dst_rate: int) -> np.ndarray:
    """(F, F) matrix taking an N_FFT-point magnitude spectrum at ``src_rate`` to the bin centres of one at
    ``dst_rate`` by linear interpolation in frequency; zero above the source's Nyquist frequency."""
    n_bins = N_FFT // 2 + 1
    src = np.arange(n_bins) * src_rate / N_FFT  # (F,) Hz
    dst = np.arange(n_bins) * dst_rate / N_FFT
    out = np.zeros((n_bins, n_bins))
    for j, f in enumerate(dst):
        if f > src[-1]:
            break
        k = min(int(f * N_FFT // src_rate), n_bins - 2)
        w = (f - src[k]) / (src[k + 1] - src[k])
        out[j, k], out[j, k + 1] = 1.0 - w, w
    return out


class MelAdapter(nn.Module):
    """muomni log-power mel (B, T, 128) -> the universal generator's log-magnitude mel (B, G, 80).

    ``"resample"``: G = ceil(T * 22050 / 16000) frames of 11.6 ms; ``"stretch"``: G = T (see the module
    docstring). ``nnls_iter``: iterations of the magnitude's least-squares solve (0: the clamped
    pseudo-inverse); ``floor``: the log power read for cells at muomni's floor (None: read them as they are).
    """

    def __init__(self, kind: str = "resample", nnls_iter: int = 30, floor: float | None = -14.5, gain: float = 0.0,
                 refine: int = 0):
        super().__init__()
        if kind not in ADAPTERS:
            raise ValueError(f"unknown mel adapter {kind!r}; choose one of {', '.join(ADAPTERS)}")
        self.kind, self.nnls_iter, self.floor = kind, nnls_iter, floor
        basis = librosa.filters.mel(sr=UNIVERSAL_RATE, n_fft=N_FFT, n_mels=UNIVERSAL_N_MELS, fmin=0.0,
                                    fmax=UNIVERSAL_FMAX).astype(np.float64)  # (80, F) on the 22.05 kHz bins
        if kind == "resample":
            # (80, F) on the 16 kHz bins. Gain sqrt(22050 / 16000) by default: interpolated onto the sparser
            # 22.05 kHz grid, a noise band's magnitude sums to sqrt(16000 / 22050) of what the 22.05 kHz STFT gives
            # (a harmonic's to 16000 / 22050); the noise level is the one the measured round trip prefers
            # (docs/RESULTS.md). The stretch adapter pools the very STFT the generator's world would take: gain 1.
            basis = basis @ _bin_interpolation(SAMPLE_RATE, UNIVERSAL_RATE)
            gain = gain or math.sqrt(UNIVERSAL_RATE / SAMPLE_RATE)
        self.register_buffer("pool", torch.from_numpy(basis.T * (gain or 1.0)).float(), persistent=False)  # (F, 80)
        self.refine = MelRefiner(refine) if refine else None

    def frames(self, n_frames: int) -> int:
        """G: how many generator frames T muomni frames become."""
        return -(-n_frames * UNIVERSAL_RATE // SAMPLE_RATE) if self.kind == "resample" else n_frames

    def forward(self, log_mel: Tensor) -> Tensor:  # (B, T, 128) -> (B, G, 80)
        with torch.no_grad():  # the fixed part has no parameters; its input is data
            log_mel = log_mel.float()
            floored = log_mel
            if self.floor is not None:
                at_floor = log_mel <= math.log(LOG_FLOOR) + 1e-3
                floored = torch.where(at_floor, torch.full_like(log_mel, self.floor), log_mel)
            mag = mel_to_magnitude(floored, self.nnls_iter)  # (B, T, F) linear magnitude
            mel = mag @ self.pool  # (B, T, 80) magnitude mel
            if self.kind == "resample":
                mel = self._retime(mel)
            adapted = torch.log(torch.clamp(mel, min=LOG_FLOOR))
        if self.refine is None:
            return adapted
        return self.refine(adapted, self._retime(log_mel) if self.kind == "resample" else log_mel)

    def _retime(self, mel: Tensor) -> Tensor:
        """Linear interpolation in time: generator frame g is centred on sample g * 256 + 128 of the 22.05 kHz
        output (its training mel padded (n_fft - hop) / 2 a side, uncentred), i.e. at muomni frame
        (g + 1/2) * 16000 / 22050 (muomni's frame t centred on sample t * 256)."""
        t = mel.shape[1]
        g = torch.arange(self.frames(t), device=mel.device, dtype=torch.float64)
        pos = ((g + 0.5) * SAMPLE_RATE / UNIVERSAL_RATE).clamp(max=t - 1)
        lo = pos.floor().long().clamp(max=max(t - 2, 0))
        w = (pos - lo).to(mel.dtype)[None, :, None]  # (1, G, 1)
        hi = (lo + 1).clamp(max=t - 1)
        return mel[:, lo] * (1 - w) + mel[:, hi] * w


class MelRefiner(nn.Module):
    """The adapter's learned correction: (adapted mel (B, G, 80), muomni's log-mel on the same frames
    (B, G, 128)) -> adapted mel + a residual from a stack of 1-D convolutions over time (kernel 5, dilations
    1, 2, 4: +-14 frames seen). The last layer starts at zero, so an untrained refiner is the fixed adapter."""

    def __init__(self, channels: int, kernel: int = 5, dilations: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.inp = nn.Conv1d(UNIVERSAL_N_MELS + N_MELS, channels, kernel, padding=kernel // 2)
        self.hidden = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel // 2))
                                    for d in dilations)
        self.out = nn.Conv1d(channels, UNIVERSAL_N_MELS, kernel, padding=kernel // 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, adapted: Tensor, source: Tensor) -> Tensor:  # (B, G, 80), (B, G, 128) -> (B, G, 80)
        # log-mels span about -12..4: a quarter keeps the first layer's inputs near unit scale
        h = F.leaky_relu(self.inp(torch.cat([adapted, source], -1).transpose(1, 2) / 4), 0.1)  # (B, C, G)
        for conv in self.hidden:
            h = h + F.leaky_relu(conv(h), 0.1)
        return adapted + self.out(h).transpose(1, 2)


class UniversalMel(nn.Module):
    """16 kHz wav (B, N) -> the mel the universal generator was trained on, from the audio itself: resampled
    to 22.05 kHz, HiFi-GAN's STFT (n_fft 1024, hop 256, Hann 1024, reflect-padded 384 a side, uncentred),
    magnitude, 80 Slaney bins 0-8 kHz, log clamped at 1e-5: (B, G, 80), frame g centred on 22.05 kHz sample
    g * 256 + 128 as the adapter's frames are. The regression target of ``MelRefiner``."""

    def __init__(self):
        super().__init__()
        self.resample = Resample(SAMPLE_RATE, UNIVERSAL_RATE)
        basis = librosa.filters.mel(sr=UNIVERSAL_RATE, n_fft=N_FFT, n_mels=UNIVERSAL_N_MELS, fmin=0.0,
                                    fmax=UNIVERSAL_FMAX)
        self.register_buffer("basis", torch.from_numpy(basis).float(), persistent=False)  # (80, F)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, wav: Tensor) -> Tensor:  # (B, N) -> (B, G, 80)
        x = self.resample(wav.float())
        pad = (N_FFT - HOP_LENGTH) // 2
        x = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(x, N_FFT, HOP_LENGTH, N_FFT, self.window, center=False, return_complex=True)
        mag = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)  # (B, F, G)
        return torch.log(torch.clamp(self.basis @ mag, min=LOG_FLOOR)).transpose(1, 2)


def refiner_loss(adapter: MelAdapter, target_fn: UniversalMel, wav: Tensor, mel: Tensor, edge: int = 2) -> Tensor:
    """L1 between the refined adapter's mel of ``mel`` (B, T, 128) and ``target_fn``'s mel of the audio ``wav``
    (B, T * 256), on the frames both have, ``edge`` frames from each end left out (a segment's edges see
    padding on both sides, differently)."""
    pred = adapter(mel)
    with torch.no_grad():
        target = target_fn(wav)
    n = min(pred.shape[1], target.shape[1])
    return F.l1_loss(pred[:, edge:n - edge], target[:, edge:n - edge])


def stft_loss(fake: Tensor, real: Tensor, resolutions: tuple[int, ...] = (256, 512, 1024), trim: int = 1024) -> Tensor:
    """Mean over STFT sizes (hop a quarter, Hann) of the L1 between log magnitudes of two wavs (B, N), ``trim``
    samples left out at each end (a segment's edges are generated without their context)."""
    fake, real = fake[:, trim:fake.shape[1] - trim].float(), real[:, trim:real.shape[1] - trim].float()
    total = fake.new_zeros(())
    for n_fft in resolutions:
        window = torch.hann_window(n_fft, device=fake.device)
        logs = [torch.log(torch.stft(x, n_fft, n_fft // 4, n_fft, window, return_complex=True).abs() + 1e-5)
                for x in (fake, real)]
        total = total + F.l1_loss(logs[0], logs[1])
    return total / len(resolutions)


class AdaptedGenerator(nn.Module):
    """MelAdapter -> HiFi-GAN generator (cfg, 80 mel bins) -> 16 kHz: muomni log-mel (B, T, 128) or (T, 128)
    -> wav (B, T * 256) or (T * 256,), aligned with what muomni's own vocoders return."""

    def __init__(self, cfg: HiFiGANConfig):
        super().__init__()
        self.cfg = cfg
        self.adapter = MelAdapter(cfg.adapter, cfg.adapter_nnls_iter, cfg.adapter_floor, cfg.adapter_gain,
                                  cfg.adapter_refine)
        self.generator = Generator(cfg)
        self.resample = Resample(UNIVERSAL_RATE, SAMPLE_RATE) if cfg.adapter == "resample" else None

    def forward(self, mel: Tensor) -> Tensor:
        squeeze = mel.dim() == 2
        mel = mel.unsqueeze(0) if squeeze else mel
        n_out = mel.shape[1] * HOP_LENGTH
        wav = self.generator(self.adapter(mel))  # (B, G * 256) at the generator's rate
        if self.resample is not None:
            wav = self.resample(wav)  # (B, ~T * 256) at 16 kHz
        wav = F.pad(wav, (0, max(0, n_out - wav.shape[1])))[:, :n_out]  # (B, T * 256)
        return wav.squeeze(0) if squeeze else wav

    def remove_weight_norm(self) -> AdaptedGenerator:
        remove_weight_norm(self.generator)
        return self


def build_generator(cfg: HiFiGANConfig) -> nn.Module:
    """The vocoder ``cfg`` describes: a plain Generator on muomni's mels, or one behind ``cfg.adapter``."""
    return AdaptedGenerator(cfg) if cfg.adapter else Generator(cfg)
