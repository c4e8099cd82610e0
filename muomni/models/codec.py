"""RVQ mel codec: 5-frame log-mel patches (80 ms) <-> n_q discrete codes per code frame (docs/DESIGN.md §3-4).

mel (B, T, 128) --standardise per bin--> patches (B, T//5, 5*128) --linear + residual convs along the
code-frame axis--> latent (B, T//5, latent_dim) --residual VQ--> codes (B, T//5, n_q)
--residual convs + linear--> 5 mel frames per code frame --un-standardise--> mel (B, 5*(T//5), 128).

Quantizing patches instead of 80 ms-hop mels keeps the 16 ms hop the vocoder needs; the convolutions give
every code frame its neighbours as context (SoundStream/EnCodec use the same encoder -> RVQ -> decoder
shape on waveforms). Trailing mel frames that do not fill a whole patch are dropped by ``encode``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from muomni.audio import HOP_LENGTH, N_MELS, SAMPLE_RATE
from muomni.config import ConfigError, config_to_dict, model_from_dict
from muomni.models.quantize import LOOKUPS, STRAIGHT_THROUGH, QuantizedResult, ResidualVQ, codebook_usage

FRAMES_PER_TOKEN = 5  # 5 mel frames of 16 ms = one 80 ms code frame (12.5 code frames/s)


@dataclass
class CodecConfig:
    n_mels: int = N_MELS
    frames_per_token: int = FRAMES_PER_TOKEN
    hidden_dim: int = 128  # channels of the convolution stacks
    latent_dim: int = 64  # encoder output / decoder input, the space the RVQ works in
    kernel_size: int = 3
    n_blocks: int = 2  # residual conv blocks in the encoder and again in the decoder
    dilations: list[int] = field(default_factory=lambda: [1, 2])  # cycled over the blocks
    # The decoder may see wider context than the encoder: None keeps the encoder's blocks / dilations.
    decoder_blocks: int | None = None
    decoder_dilations: list[int] | None = None
    decoder_attention_layers: int = 0  # pre-norm self-attention layers over code frames after the decoder convs
    attention_heads: int = 4
    n_codebooks: int = 2
    codebook_size: int = 128
    codebook_dim: int = 64  # each quantizer projects latent_dim -> codebook_dim -> latent_dim
    # "cosine": codes picked by angle (l2-normalised lookup); with a small codebook_dim, factorized codes.
    # In short demo runs it used ~100 % of every codebook; word error rose at 600 steps and came level with
    # the Euclidean codes' at 1,200, within noise, so no recipe uses it yet.
    codebook_lookup: str = "euclidean"
    ema_decay: float = 0.99
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.05  # fraction of the uniform usage under which a code is replaced
    # How the encoder's gradient passes the residual stack (quantize.STRAIGHT_THROUGH): EnCodec's "residual",
    # the demo recipe's best round trip at 2,400 steps (docs/RESULTS.md 2026-12-07). Codecs trained before
    # 2026-12-07 used "per_layer" (n_q x the gradient); the forward is the same in every form, so they load
    # (and resume, with the corrected gradient) under the default.
    straight_through: str = "residual"

    def __post_init__(self):
        for name in ("hidden_dim", "latent_dim", "kernel_size", "n_codebooks", "codebook_size", "codebook_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size must be odd (same-length convolutions), got {self.kernel_size}")
        if self.codebook_size > 32768:
            raise ConfigError(f"model.codebook_size {self.codebook_size} > 32768 does not fit the int16 code cache")
        for name in ("dilations", "decoder_dilations"):
            value = getattr(self, name)
            if value is not None and (not value or min(value) < 1):
                raise ConfigError(f"model.{name} must be a non-empty list of ints >= 1, got {value}")
        if self.decoder_blocks is not None and self.decoder_blocks < 0:
            raise ConfigError(f"model.decoder_blocks must be >= 0, got {self.decoder_blocks}")
        if self.decoder_attention_layers < 0:
            raise ConfigError(f"model.decoder_attention_layers must be >= 0, got {self.decoder_attention_layers}")
        if self.decoder_attention_layers and self.hidden_dim % self.attention_heads:
            raise ConfigError(f"model.hidden_dim {self.hidden_dim} is not a multiple of model.attention_heads "
                              f"{self.attention_heads}")
        if self.codebook_lookup not in LOOKUPS:
            raise ConfigError(f"model.codebook_lookup must be one of {', '.join(LOOKUPS)}, "
                              f"got '{self.codebook_lookup}'")
        if self.straight_through not in STRAIGHT_THROUGH:
            raise ConfigError(f"model.straight_through must be one of {', '.join(STRAIGHT_THROUGH)}, "
                              f"got '{self.straight_through}'")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in (0, 1), got {self.ema_decay}")

    # Derived quantities are properties, so that config_to_dict -> config_from_dict round-trips.
    @property
    def frame_rate(self) -> float:
        """Code frames per second (12.5 for 5 frames of 16 ms)."""
        return SAMPLE_RATE / HOP_LENGTH / self.frames_per_token

    @property
    def bitrate(self) -> float:
        """Bits per second: frame_rate * n_q * log2(codebook_size)."""
        return self.frame_rate * self.n_codebooks * math.log2(self.codebook_size)


@dataclass
class CodecOutput:
    mel: torch.Tensor  # (B, 5*T_frames, 128) reconstruction, log-mel scale
    codes: torch.Tensor  # (B, T_frames, n_q) int64
    losses: dict[str, torch.Tensor]  # LOSSES, each on the standardised scale, plus "commit"
    replaced: torch.Tensor | int = 0  # dead codes replaced in this call (training only; a 0-d tensor)


class ResBlock(nn.Module):
    """x + conv1x1(GELU(conv_k(GELU(x)))) along the code-frame axis, same length."""

    def __init__(self, dim: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
        self.proj = nn.Conv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        return x + self.proj(F.gelu(self.conv(F.gelu(x))))


class ConvStack(nn.Module):
    """Linear in -> residual convs along time -> (self-attention layers) -> linear out, on (B, T, C) tensors.

    The attention layers carry no position embedding: the convolutions before them already make each
    frame's vector depend on its neighbours, and without absolute positions the layers apply unchanged
    to utterances longer than the training crops.
    """

    def __init__(self, d_in: int, d_out: int, cfg: CodecConfig, n_blocks: int, dilations: list[int],
                 attention_layers: int = 0):
        super().__init__()
        self.inp = nn.Linear(d_in, cfg.hidden_dim)
        self.blocks = nn.Sequential(*(ResBlock(cfg.hidden_dim, cfg.kernel_size, dilations[i % len(dilations)])
                                      for i in range(n_blocks)))
        if attention_layers:  # only then, so that codecs without attention keep the old weight names
            self.attention = nn.ModuleList(
                nn.TransformerEncoderLayer(cfg.hidden_dim, cfg.attention_heads, 2 * cfg.hidden_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
                for _ in range(attention_layers))
        self.norm = nn.LayerNorm(cfg.hidden_dim)
        self.out = nn.Linear(cfg.hidden_dim, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_in) -> (B, T, d_out)
        h = self.blocks(self.inp(x).transpose(1, 2)).transpose(1, 2)
        for layer in getattr(self, "attention", ()):
            h = layer(h)
        return self.out(F.gelu(self.norm(h)))


POOL_SCALES = (1, 2, 4, 8)  # time x frequency pooling windows of the "pooled_l1" term


def spectral_losses(rec: torch.Tensor, target: torch.Tensor,
                    std: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Named reconstruction losses between standardised log-mels (B, T, 128); ``std`` (128,) is the
    per-bin scale back to the raw log-mel (ones when not given).

    MSE alone is minimised by the average of the plausible spectra, a blur that raises the floor of
    silences and smears harmonics. L1 is minimised by the median instead, and L1 on the differences
    along time and along frequency is aimed at the flattened onsets, closures and harmonic ridges
    that Griffin-Lim turns into noise (the log-mel terms of DAC/EnCodec's multi-scale spectral loss,
    on the one resolution the codec reproduces). Every term is returned; train.loss_weights picks.
    In short demo runs the extra terms raised word error over MSE alone, with the commitment weight
    left at 0.25 or raised to 1.0, so no recipe turns them on yet.

    ``pooled_l1`` is the multi-resolution term on the raw log-mel: L1 between the two spectrograms
    average-pooled over s x s (time x mel bin) windows, averaged over ``POOL_SCALES``. On the raw scale a
    loud bin counts as much as it sounds, not as much as its standardised spread; the coarse windows see
    the level of silences and the formant envelope that the per-value terms average away. Beside MSE
    at weight 0.25 in a short demo run it did not lower word error either (0.428 vs 0.394), so it too
    is logged and not trained on by any recipe.
    """
    err = rec - target
    raw = (err if std is None else err * std)[:, None]  # (B, 1, T, 128)
    pooled = [F.avg_pool2d(raw, s, ceil_mode=True).abs().mean() if s > 1 else raw.abs().mean() for s in POOL_SCALES]
    return {
        "recon": err.pow(2).mean(),
        "l1": err.abs().mean(),
        "delta_time": (err[:, 1:] - err[:, :-1]).abs().mean(),
        "delta_freq": (err[..., 1:] - err[..., :-1]).abs().mean(),
        "pooled_l1": torch.stack(pooled).mean(),
    }


LOSSES = ("recon", "l1", "delta_time", "delta_freq", "pooled_l1")  # the names spectral_losses returns


def weighted_loss(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The loss a codec trains on: sum of weights[name] * losses[name]. A loss without a weight (or with
    weight 0) is logged only and left out of the sum, so that backward does not run through it."""
    return sum(weights[name] * value for name, value in losses.items() if weights.get(name, 0.0))


class CodecModel(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        patch = cfg.frames_per_token * cfg.n_mels
        # Per-bin statistics of the training log-mels; set once from the dataset by set_stats().
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))
        self.encoder = ConvStack(patch, cfg.latent_dim, cfg, cfg.n_blocks, cfg.dilations)
        self.rvq = ResidualVQ(cfg.n_codebooks, cfg.straight_through, dim=cfg.latent_dim,
                              codebook_dim=cfg.codebook_dim, size=cfg.codebook_size, decay=cfg.ema_decay,
                              kmeans_iters=cfg.kmeans_iters, dead_threshold=cfg.dead_code_threshold,
                              lookup=cfg.codebook_lookup)
        self.decoder = ConvStack(cfg.latent_dim, patch, cfg,
                                 cfg.n_blocks if cfg.decoder_blocks is None else cfg.decoder_blocks,
                                 cfg.decoder_dilations or cfg.dilations, cfg.decoder_attention_layers)

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-bin mean and std (128,) of the training log-mels."""
        self.mel_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.mel_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-3))

    def _patches(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, 128) -> standardised patches (B, T//5, 5*128); trailing frames dropped."""
        if mel.dim() != 3 or mel.shape[-1] != self.cfg.n_mels:
            raise ValueError(f"codec expects a log-mel (B, T, {self.cfg.n_mels}), got shape {tuple(mel.shape)}")
        n = self.cfg.frames_per_token
        if mel.shape[1] < n:
            raise ValueError(f"mel has {mel.shape[1]} frames, fewer than one code frame ({n} frames = 80 ms)")
        if not torch.isfinite(mel).all():
            raise ValueError("mel contains NaN or infinite values; the codec cannot encode it")
        t = mel.shape[1] // n
        z = (mel[:, : t * n].float() - self.mel_mean) / self.mel_std
        return z.reshape(mel.shape[0], t, n * self.cfg.n_mels)

    def _unpatch(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, T_frames, 5*128) standardised -> (B, 5*T_frames, 128) standardised."""
        return patches.reshape(patches.shape[0], -1, self.cfg.n_mels)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, 128) -> codes (B, T//5, n_q) int64. Trailing T % 5 frames are dropped."""
        return self.rvq.encode(self.encoder(self._patches(mel)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T_frames, n_q) -> mel (B, 5*T_frames, 128) on the log-mel scale."""
        return self._decode_latent(self.rvq.decode(codes))

    def decode_expected(self, probs: torch.Tensor) -> torch.Tensor:
        """probs (B, T_frames, n_q, K), a distribution over each codebook's codes -> mel (B, 5*T_frames, 128).

        Decodes the expected latent instead of one pick per codebook. Where a predictor (the Talker) is
        unsure between codes, the pick adds a whole wrong code vector and the expectation only the spread,
        so its mel is closer on average (one-hot probs give ``decode``).
        """
        return self._decode_latent(self.rvq.decode_expected(probs))

    def _decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        z = self._unpatch(self.decoder(latent).float())
        return z * self.mel_std + self.mel_mean

    def forward(self, mel: torch.Tensor) -> CodecOutput:
        """Reconstruction, codes and named losses; in eval mode ``mel`` equals decode(encode(mel))."""
        target = self._patches(mel)  # (B, T_frames, 640) standardised
        vq: QuantizedResult = self.rvq(self.encoder(target))
        recon = self._unpatch(self.decoder(vq.quantized).float())  # (B, 5*T_frames, 128) standardised
        losses = {**spectral_losses(recon, self._unpatch(target), self.mel_std), "commit": vq.commit_loss}
        mel_hat = recon * self.mel_std + self.mel_mean
        return CodecOutput(mel_hat, vq.codes, losses, vq.replaced)

    def usage(self, codes: torch.Tensor) -> tuple[list[float], list[float]]:
        """Per-codebook fraction of codes used and perplexity over codes (..., n_q)."""
        return codebook_usage(codes, self.cfg.codebook_size)


# ------------------------------------------------------------ checkpoint <-> model (no I/O in the class)


def codec_to_dict(model: CodecModel) -> dict:
    """Plain payload that rebuilds the codec alone: {"config": dict, "model": state_dict}."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"config": config_to_dict(model.cfg), "model": state}


def codec_from_dict(d: dict, source: str = "checkpoint") -> CodecModel:
    """Inverse of codec_to_dict (also accepts a codec-stage checkpoint payload); returns the model in eval mode."""
    cfg_dict = d.get("config", {})
    if "model" in cfg_dict and isinstance(cfg_dict["model"], dict):  # a full run config: take its model section
        cfg_dict = cfg_dict["model"]
    cfg = model_from_dict(CodecConfig, cfg_dict, source=source)
    model = CodecModel(cfg)
    state = d.get("model")
    if not isinstance(state, dict):
        raise ConfigError(f"{source}: no codec weights (key 'model') in the payload")
    expected = model.state_dict()
    for key in expected:
        if key not in state:
            raise ConfigError(f"{source}: codec weights lack '{key}' (was it saved by another model?)")
        if tuple(state[key].shape) != tuple(expected[key].shape):
            raise ConfigError(f"{source}: '{key}' has shape {tuple(state[key].shape)}, the config implies "
                              f"{tuple(expected[key].shape)}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise ConfigError(f"{source}: unexpected key '{extra[0]}' in codec weights")
    model.load_state_dict(state)
    return model.eval()


def codec_hash(model: CodecModel) -> str:
    """sha256 of the codec's config and weights: identifies the codes it produces."""
    h = hashlib.sha256(repr(sorted(config_to_dict(model.cfg).items())).encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()
