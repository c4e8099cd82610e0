"""What both Talker families share beyond their layers: the text and speaker embeddings they start from, the
output of a training forward, the frame limit of generation, perplexity, and random batches (tests, benches)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from muomni.models.talker.config import SharedConfig

FRAME_LIMIT_FACTOR = 3  # generation stops at this many times the training max_frames ...
MIN_FRAME_LIMIT = 64  # ... taken as at least this many frames (5.1 s at 12.5 frames/s)
MAX_LOG_PERPLEXITY = 50.0  # exp() of a diverged cross-entropy would overflow


class TalkerBase(nn.Module):
    """Both families' start: the config (checked for the sizes data gives), then the text and speaker
    embeddings, created first and under these names (their state-dict keys; tests/state_dicts.json)."""

    def __init__(self, cfg: SharedConfig):
        super().__init__()
        cfg.require_data_fields()
        self.cfg = cfg
        self.text_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.speaker_emb = nn.Embedding(max(cfg.n_speakers, 1), cfg.d_model)

    def speaker(self, speakers: torch.Tensor) -> torch.Tensor:
        """speakers (B,) -> (B, 1, D), to add to every position of a sequence."""
        return self.speaker_emb(speakers)[:, None]

    def embed_text(self, text: torch.Tensor, speakers: torch.Tensor, with_speaker: bool = True) -> torch.Tensor:
        """text (B, N), speakers (B,) -> (B, N, D): token embeddings, plus the speaker's unless with_speaker
        is False."""
        x = self.text_emb(text)
        return x + self.speaker(speakers) if with_speaker else x


@dataclass
class TalkerOutput:
    losses: dict[str, torch.Tensor]  # named, unweighted; "loss" is the weighted total
    counts: dict[str, torch.Tensor]  # per named loss, the number of elements it averages over (for DDP shares)
    metrics: dict[str, torch.Tensor]  # accuracies (c0_accuracy, c1_accuracy, ..., stop_accuracy)
    logits: torch.Tensor  # (B, F, n_code_heads, K): codebook logits at the audio positions 0..F-1
    stop_logits: torch.Tensor | None  # (B, F + 1); None for the trm Talker, which predicts its length instead
    durations: torch.Tensor | None  # (B, N) sub-frames per text token from the alignment search
    lengths: torch.Tensor | None = None  # (B,) predicted frame counts (trm)


def frame_limit(cfg: SharedConfig, max_frames: int | None = None) -> int:
    """The most frames one item may get: max_frames when given, else 3 x the training max_frames (at least 64)."""
    return max_frames or FRAME_LIMIT_FACTOR * max(cfg.max_frames, MIN_FRAME_LIMIT)


def perplexity(ce: float) -> float:
    return math.exp(min(ce, MAX_LOG_PERPLEXITY))


def random_batch(generator: torch.Generator, batch: int, text_len: int, frames: int, *, vocab_size: int, n_q: int,
                 codebook_size: int, text_lens: torch.Tensor | int = 1, code_lens: torch.Tensor | int = 1,
                 zero_padding: bool = False) -> dict[str, torch.Tensor]:
    """Random Talker inputs (tests, benches): text (batch, text_len) of tokens 2..vocab_size-1, codes
    (batch, frames, n_q) and their lengths, given as (batch,) tensors or, as an int, the least of a uniform draw
    up to text_len / frames. The generator draws text, text_lens, codes, code_lens in that order; zero_padding
    zeroes the tokens and codes past each length. The caller adds speakers (and ended)."""
    text = torch.randint(2, vocab_size, (batch, text_len), generator=generator)
    if not isinstance(text_lens, torch.Tensor):
        text_lens = torch.randint(text_lens, text_len + 1, (batch,), generator=generator)
    codes = torch.randint(0, codebook_size, (batch, frames, n_q), generator=generator)
    if not isinstance(code_lens, torch.Tensor):
        code_lens = torch.randint(code_lens, frames + 1, (batch,), generator=generator)
    if zero_padding:
        text = text * (torch.arange(text_len) < text_lens[:, None])
        codes = codes * (torch.arange(frames) < code_lens[:, None])[..., None]
    return {"text": text, "text_lens": text_lens, "codes": codes, "code_lens": code_lens}
