"""HiFi-GAN discriminators (Kong et al. 2020, sections 2.2-2.3): multi-period and multi-scale.

Each sub-discriminator returns a score map and its intermediate feature maps (for feature
matching); the ensembles return lists over sub-discriminators. Widths come from HiFiGANConfig
so a CPU-sized model and the paper's V1 share one definition.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from muomni.models.hifigan import LRELU_SLOPE, HiFiGANConfig

Scores = list[Tensor]  # one (B, ...) score map per sub-discriminator
Features = list[list[Tensor]]  # per sub-discriminator, its feature maps



def _conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Leaky-ReLU conv stack shared by both discriminator kinds: scores (B, n_scores) and every feature map."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return x.flatten(1), features

class PeriodDiscriminator(nn.Module):
    """Folds the 1-D wav into (T / p, p) and runs 2-D convs with (k, 1) kernels, so each column sees
    samples p apart (periodic structure of voiced speech)."""

    def __init__(self, period: int, channels: list[int], kernel: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (kernel, 1), (stride, 1), padding=(kernel // 2, 0)))
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.convs.append(weight_norm(nn.Conv2d(channels[-1], channels[-1], (kernel, 1), padding=(kernel // 2, 0))))
        self.conv_post = weight_norm(nn.Conv2d(channels[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:  # (B, N) -> (B, n_scores), features
        b, n = wav.shape
        pad = (-n) % self.period
        x = F.pad(wav, (0, pad), mode="reflect") if pad else wav
        x = x.view(b, 1, (n + pad) // self.period, self.period)  # (B, 1, N / p, p)
        return _conv_stack(self.convs, self.conv_post, x)


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, cfg: HiFiGANConfig):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, cfg.mpd_channels) for p in cfg.mpd_periods)

    def forward(self, wav: Tensor) -> tuple[Scores, Features]:
        outs = [d(wav) for d in self.discriminators]
        return [s for s, _ in outs], [f for _, f in outs]


def _groups(c_in: int, c_out: int, target: int) -> int:
    """The largest group count <= target that divides both widths."""
    g = math.gcd(c_in, c_out)
    return max(d for d in range(1, min(target, g) + 1) if g % d == 0)


class ScaleDiscriminator(nn.Module):
    """MelGAN's strided, grouped 1-D conv stack; widths scale with ``width`` (128 in the paper)."""

    def __init__(self, width: int, max_width: int, use_spectral_norm: bool = False):
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        c = [min(width * m, max_width) for m in (1, 1, 2, 4, 8, 8, 8)]  # paper: 128 ... 1024
        groups = [max(1, round(g * width / 128)) for g in (4, 16, 16, 16, 16)]  # paper: 4, 16, 16, 16, 16
        strides = [2, 2, 4, 4, 1]
        layers = [norm(nn.Conv1d(1, c[0], 15, padding=7))]
        for i, (g, s) in enumerate(zip(groups, strides)):
            layers.append(norm(nn.Conv1d(c[i], c[i + 1], 41, s, groups=_groups(c[i], c[i + 1], g), padding=20)))
        layers.append(norm(nn.Conv1d(c[5], c[6], 5, padding=2)))
        self.convs = nn.ModuleList(layers)
        self.conv_post = norm(nn.Conv1d(c[6], 1, 3, padding=1))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:  # (B, N) -> (B, n_scores), features
        x = wav.unsqueeze(1)  # (B, 1, N)
        return _conv_stack(self.convs, self.conv_post, x)


class MultiScaleDiscriminator(nn.Module):
    """Scale 0 sees the raw wav (with spectral norm, as in the paper), scale i the wav average-pooled
    i times by 2."""

    def __init__(self, cfg: HiFiGANConfig):
        super().__init__()
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(cfg.msd_channels, cfg.msd_max_channels, use_spectral_norm=i == 0)
            for i in range(cfg.msd_scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, wav: Tensor) -> tuple[Scores, Features]:
        scores, features = [], []
        for i, d in enumerate(self.discriminators):
            if i > 0:
                wav = self.pool(wav.unsqueeze(1)).squeeze(1)  # (B, N / 2^i)
            s, f = d(wav)
            scores.append(s)
            features.append(f)
        return scores, features


class Discriminators(nn.Module):
    """MPD and MSD together: forward(wav (B, N)) -> (scores, features) over all sub-discriminators."""

    def __init__(self, cfg: HiFiGANConfig):
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(cfg)
        self.msd = MultiScaleDiscriminator(cfg)

    def forward(self, wav: Tensor) -> tuple[Scores, Features]:
        s1, f1 = self.mpd(wav)
        s2, f2 = self.msd(wav)
        return s1 + s2, f1 + f2


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze the discriminators while the generator's adversarial loss backpropagates through them,
    so gradient accumulation never mixes generator-loss gradients into their grads."""
    for p in module.parameters():
        p.requires_grad_(flag)
