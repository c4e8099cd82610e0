"""HiFi-GAN generator and losses (Kong, Kim & Bae 2020, "HiFi-GAN: Generative Adversarial Networks
for Efficient and High Fidelity Speech Synthesis").

log-mel (B, T, 128), time-major as everywhere in muomni -> wav (B, T * 256) at 16 kHz.
The discriminators live in discriminators.py; the losses here are returned unweighted as named
dicts, and the training script weights them from the config (``train.loss_weights``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from muomni.audio import HOP_LENGTH, N_MELS
from muomni.config import ConfigError

LRELU_SLOPE = 0.1


@dataclass
class HiFiGANConfig:
    """Generator and discriminator architecture; the seed ("tiny") settings are the defaults."""

    n_mels: int = N_MELS
    upsample_rates: list[int] = field(default_factory=lambda: [8, 8, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16, 4, 4])
    upsample_initial_channel: int = 128
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 5, 7])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 2], [1, 2], [1, 2]])
    # Multi-period discriminator (Kong et al. 2020, section 2.2): periods and the widths of its 4 strided 2-D convs.
    mpd_periods: list[int] = field(default_factory=lambda: [2, 3, 5])
    mpd_channels: list[int] = field(default_factory=lambda: [32, 128, 512, 1024])
    # Multi-scale discriminator (ibid. section 2.3, from MelGAN): scales (raw, then x2 average-pooled ...)
    # and the width of its first conv; deeper convs widen x2 / x4 / x8, capped at msd_max_channels.
    msd_scales: int = 2
    msd_channels: int = 128
    msd_max_channels: int = 1024
    # "": the generator reads muomni's log-mels itself. "resample" or "stretch": it reads the 80-bin, 22.05 kHz
    # log-magnitude mel of HiFi-GAN's published models, made from muomni's by that adapter (models/universal.py),
    # so that the universal generator's weights load; n_mels must then be 80.
    adapter: str = ""
    adapter_nnls_iter: int = 30  # the adapter's least-squares iterations for the linear magnitude (0: pinv)
    # log power given to mel cells at muomni's floor (log 1e-5) before the adapter inverts them: the floor
    # hides quieter cells, and read as 1e-5 it puts a noise floor under the silences (docs/RESULTS.md)
    adapter_floor: float = -14.5
    # the magnitude's scale before the log; 0: the adapter's own (sqrt(22050 / 16000) for resample, 1 for stretch)
    adapter_gain: float = 0.0
    # channels of the adapter's learned correction (models/universal.py MelRefiner); 0: the fixed adapter alone
    adapter_refine: int = 0

    def __post_init__(self):
        if self.adapter and (self.adapter not in ("resample", "stretch") or self.n_mels != 80):
            raise ConfigError(f"model.adapter = {self.adapter!r}: expected '' (muomni's mels), 'resample' or 'stretch' "
                              f"(HiFi-GAN's 80-bin mels, with model.n_mels = 80; got {self.n_mels})")
        if self.adapter_refine and not self.adapter:
            raise ConfigError(f"model.adapter_refine = {self.adapter_refine} corrects a mel adapter's output: set "
                              "model.adapter (resample or stretch) or model.adapter_refine = 0")
        if math.prod(self.upsample_rates) != HOP_LENGTH:
            raise ConfigError(f"model.upsample_rates {self.upsample_rates} must multiply to the hop {HOP_LENGTH}")
        if len(self.upsample_kernel_sizes) != len(self.upsample_rates):
            raise ConfigError("model.upsample_kernel_sizes needs one kernel per upsample rate")
        for k, u in zip(self.upsample_kernel_sizes, self.upsample_rates):
            if k < u or (k - u) % 2:
                raise ConfigError(f"model.upsample_kernel_sizes: kernel {k} for rate {u} must be >= it and "
                                  "differ from it by an even number (so the output is exactly T * hop)")
        if len(self.resblock_dilation_sizes) != len(self.resblock_kernel_sizes):
            raise ConfigError("model.resblock_dilation_sizes needs one dilation list per resblock kernel")
        if self.upsample_initial_channel % 2 ** len(self.upsample_rates):
            raise ConfigError(f"model.upsample_initial_channel must be divisible by {2 ** len(self.upsample_rates)}")
        if len(self.mpd_channels) != 4:
            raise ConfigError("model.mpd_channels lists the 4 widths of the period discriminator's strided convs")


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """One MRF branch (HiFi-GAN's ResBlock1): per dilation, a dilated conv then an undilated conv,
    each after a leaky ReLU, with a residual connection."""

    def __init__(self, channels: int, kernel: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel))) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, L) -> (B, C, L)
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class Generator(nn.Module):
    """Transposed-conv upsampling x8 x8 x2 x2 = 256 samples per mel frame, each stage followed by a
    multi-receptive-field fusion (the mean of len(resblock_kernel_sizes) ResBlocks), tanh out."""

    def __init__(self, cfg: HiFiGANConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(cfg.n_mels, ch, 7, padding=3))
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            c_in, c_out = ch // 2**i, ch // 2 ** (i + 1)
            # padding (k - u) / 2 makes the output exactly L * u long
            self.ups.append(weight_norm(nn.ConvTranspose1d(c_in, c_out, k, u, padding=(k - u) // 2)))
            self.mrfs.append(nn.ModuleList(
                ResBlock(c_out, rk, rd) for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
            ))
        self.conv_post = weight_norm(nn.Conv1d(c_out, 1, 7, padding=3))
        self.apply(_init_weights)

    def forward(self, mel: Tensor) -> Tensor:
        """mel (B, T, n_mels) or (T, n_mels) -> wav (B, T * 256) or (T * 256,)."""
        squeeze = mel.dim() == 2
        x = self.conv_pre((mel.unsqueeze(0) if squeeze else mel).transpose(1, 2))  # (B, C, T)
        for up, mrf in zip(self.ups, self.mrfs):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # (B, C / 2, T * u)
            x = sum(block(x) for block in mrf) / len(mrf)
        # leaky_relu default slope (0.01) before the last conv, as in the reference implementation
        wav = torch.tanh(self.conv_post(F.leaky_relu(x))).squeeze(1)  # (B, T * 256)
        return wav.squeeze(0) if squeeze else wav

    def remove_weight_norm(self) -> Generator:
        """Fold weight norm into plain weights for inference (identical outputs, less work per call)."""
        remove_weight_norm(self)
        return self


def remove_weight_norm(module: nn.Module) -> None:
    """Fold every weight-norm parametrization under module into a plain weight."""
    # Under no_grad the folded weight would come back as a plain tensor (not a Parameter), which
    # .to(device) and state_dict() then miss; so fold with grad mode on.
    with torch.enable_grad():
        for m in module.modules():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def _init_weights(m: nn.Module) -> None:
    # N(0, 0.01) on every conv, as the reference implementation (before weight norm splits g and v)
    if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
        if parametrize.is_parametrized(m, "weight"):
            with torch.no_grad():
                v = torch.randn_like(m.weight) * 0.01
                m.weight = v  # the parametrization's right_inverse sets g = ||v|| and v
        else:
            nn.init.normal_(m.weight, 0.0, 0.01)


# ---------------------------------------------------------------- losses (Kong et al. 2020, section 2.4)


def discriminator_losses(real_scores: list[Tensor], fake_scores: list[Tensor]) -> dict[str, Tensor]:
    """Least-squares GAN (Mao et al. 2017) discriminator terms, summed over sub-discriminators."""
    return {
        "d_real": sum(torch.mean((1 - r.float()) ** 2) for r in real_scores),
        "d_fake": sum(torch.mean(f.float() ** 2) for f in fake_scores),
    }


def generator_adversarial_loss(fake_scores: list[Tensor]) -> Tensor:
    return sum(torch.mean((1 - f.float()) ** 2) for f in fake_scores)


def feature_matching_loss(real_features: list[list[Tensor]], fake_features: list[list[Tensor]]) -> Tensor:
    """L1 between the discriminators' intermediate features of real and generated audio."""
    return sum(
        torch.mean(torch.abs(r.detach().float() - f.float()))
        for real, fake in zip(real_features, fake_features)
        for r, f in zip(real, fake)
    )


def mel_l1(real_mel: Tensor, fake_mel: Tensor) -> Tensor:
    """Mean absolute difference of log-mels (B, T, n_mels)."""
    return F.l1_loss(fake_mel.float(), real_mel.float())


def mel_loss(real_log_power: Tensor, fake_log_power: Tensor) -> Tensor:
    """The generator's mel term: the L1 of log-*magnitude* mels, on which HiFi-GAN's weight 45 was tuned
    (Kong et al. 2020, section 2.3: log of the mel of the STFT magnitude). muomni's front end is the log of the
    *power* mel, twice the log magnitude: half of it puts the term on the scale its weight expects (the L1 of
    log-power mels is twice as large, which made the mel term weigh ~90 against adversarial 1 and feature
    matching 2). Inputs (B, T, n_mels) natural-log power mels (muomni.audio.MelSpectrogram)."""
    return 0.5 * mel_l1(real_log_power, fake_log_power)


def weighted_total(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """sum_k weights[k] * losses[k]; every loss term must have a weight (a missing one is a typo)."""
    missing = [k for k in losses if k not in weights]
    if missing:
        raise KeyError(f"no loss weight for {missing}; weights given: {sorted(weights)}")
    return sum(weights[k] * v for k, v in losses.items())
