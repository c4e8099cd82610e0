"""The Talker's duration path: text encoder, alignment search, duration predictor, aligned states.

Why: a small decoder-only model learns to continue codes long before it learns which text it is
saying. Telling each audio position which text token it is on makes the text usable from the start
(the "duration-informed" decoder; FastSpeech, Ren et al. 2019; Glow-TTS, Kim et al. 2020).

- Alignment prior: each encoded text token i predicts a categorical distribution over the
  codebook-0 ids (``align_codebooks`` codebooks); ``log p(frame j | token i)`` scores every
  (token, frame) pair. Its negative log-likelihood along the best path is the ``align`` loss
  (the maximum-likelihood step of Glow-TTS, with discrete codes instead of a flow's Gaussians).
- Monotonic alignment search (Glow-TTS) finds that path by dynamic programming, without gradient.
  Code frames are 80 ms, often shorter than one character, so each frame is split into
  ``sub_frames`` (5 = one 16 ms mel frame) sharing its score: every token then gets >= 1 sub-frame
  and durations are counted in mel frames.
- Duration predictor (FastSpeech): two convolutions over the detached encoder states, trained with
  MSE on the duration in code frames (the ``dur`` loss); at inference its rounded output sets the
  path. Not on log durations as FastSpeech does: the searched durations are noisy within a frame
  (every sub-frame of a frame has the same score), and a log-domain regression predicts their
  geometric mean: measured, utterances came out 24% short (duration ratio 0.76 on held-out texts).
- Aligned state of frame j: the encoder states of its sub-frames, concatenated and projected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from muomni.models.layers import INIT_STD
from muomni.models.talker.config import TalkerConfig


@dataclass
class AlignResult:
    losses: dict[str, torch.Tensor]  # align, dur
    counts: dict[str, torch.Tensor]  # the number of elements each loss averages over
    path: torch.Tensor  # (B, N, F * sub_frames) 0/1, no gradient
    durations: torch.Tensor  # (B, N) sub-frames per token


class DurationPredictor(nn.Module):
    """Two convolutions over the text states. With ``n_speakers`` > 0 its own speaker table is added to them
    first (VITS conditions its duration predictor on the speaker too), so each voice gets its own rate."""

    def __init__(self, d_model: int, kernel: int, n_speakers: int = 0):
        super().__init__()
        self.speaker = nn.Embedding(n_speakers, d_model) if n_speakers else None  # only then: old names kept
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(2))
        self.out = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor, text_ok: torch.Tensor, speakers: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D), text_ok (B, N) bool, speakers (B,) ids -> duration in code frames (B, N)."""
        if self.speaker is not None:
            x = x + self.speaker(speakers)[:, None]
        m = text_ok[..., None].to(x.dtype)
        for conv, norm in zip(self.convs, self.norms):
            x = norm(F.relu(conv((x * m).transpose(1, 2)).transpose(1, 2)))
        return self.out(x * m).squeeze(-1)


class Aligner(nn.Module):
    def __init__(self, cfg: TalkerConfig, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder  # a non-causal muomni.models.layers.Transformer
        self.sub_frames, self.n_align = cfg.sub_frames, min(cfg.align_codebooks, cfg.n_q)
        self.prior = nn.ModuleList(nn.Linear(cfg.d_model, cfg.codebook_size) for _ in range(self.n_align))
        self.duration = DurationPredictor(cfg.d_model, cfg.dur_kernel,
                                          max(cfg.n_speakers, 1) if cfg.speaker_durations else 0)
        self.frame_proj = nn.Linear(cfg.sub_frames * cfg.d_model, cfg.d_model)
        self.end_state = nn.Parameter(torch.randn(cfg.d_model) * INIT_STD)  # audio positions past the last frame

    def encode(self, x: torch.Tensor, text_lens: torch.Tensor) -> torch.Tensor:
        """Embedded text (B, N, D) -> encoder states (B, N, D), attending both ways."""
        B, N, _ = x.shape
        positions = torch.arange(N, device=x.device).expand(B, -1)
        key_ok = positions < text_lens[:, None]
        return self.encoder(x, positions, key_ok[:, None, None])  # mask (B, 1, 1, N)

    def log_prior(self, states: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """log p(frame j | token i): states (B, N, D), codes (B, F, n_q) -> (B, N, F)."""
        out = 0.0
        for k, head in enumerate(self.prior):
            logp = F.log_softmax(head(states).float(), dim=-1)  # (B, N, K)
            idx = codes[..., k][:, None].expand(-1, states.shape[1], -1)  # (B, N, F)
            out = out + logp.gather(2, idx)
        return out

    def predict_durations(self, states: torch.Tensor, text_lens: torch.Tensor,
                          speakers: torch.Tensor | None = None) -> torch.Tensor:
        """states (B, N, D), speakers (B,) -> predicted duration in code frames (B, N), a float. The states
        are detached: the duration loss trains the predictor alone (FastSpeech)."""
        text_ok = torch.arange(states.shape[1], device=states.device)[None] < text_lens[:, None]
        return self.duration(states.detach(), text_ok, speakers)

    def forward(self, states, text_lens, codes, code_lens, ended, speakers=None) -> AlignResult:
        """states (B, N, D), text_lens (B,), codes (B, F, n_q), code_lens (B,), ended (B,) bool, speakers (B,)."""
        S = self.sub_frames
        logp = self.log_prior(states, codes)  # (B, N, F)
        logp_sub = logp.repeat_interleave(S, dim=2) / S  # (B, N, F * S): a frame's score shared by its sub-frames
        path = monotonic_alignment_search(logp_sub.detach(), text_lens, code_lens * S, free_end=~ended)
        nll = -(path * logp_sub).sum() / code_lens.sum().clamp(min=1)
        durations = path.sum(2)  # (B, N)
        text_ok = torch.arange(states.shape[1], device=states.device)[None] < text_lens[:, None]
        dur_ok = (text_ok & ended[:, None]).float()
        err = (self.predict_durations(states, text_lens, speakers).float() - durations / S) ** 2  # float32 loss
        dur_loss = (err * dur_ok).sum() / dur_ok.sum().clamp(min=1)
        counts = {"align": code_lens.sum(), "dur": dur_ok.sum()}
        return AlignResult({"align": nll, "dur": dur_loss}, counts, path, durations.long())


@torch.compiler.disable  # a loop over frames: compiled, it would unroll every frame
@torch.no_grad()
def monotonic_alignment_search(
    logp: torch.Tensor, x_lens: torch.Tensor, y_lens: torch.Tensor, free_end: torch.Tensor | None = None
) -> torch.Tensor:
    """Most likely monotonic path (Glow-TTS, Kim et al. 2020), batched over items.

    logp (B, N, M) scores of token i at frame j; x_lens, y_lens (B,). The path starts at (0, 0),
    moves one frame at a time staying on a token or advancing by one, and ends at
    (x_len - 1, y_len - 1), or on the best token where free_end (truncated audio). -> (B, N, M) 0/1.

    The forward pass is two whole-batch ops per frame on the device, writing every frame's scores
    into one buffer; the choices (advance or stay) come out of that buffer in one op, and the
    backtrack runs on the host over small integer arrays: no per-frame device sync.
    """
    B, N, M = logp.shape
    dev, neg = logp.device, -1e9
    tok_ok = torch.arange(N, device=dev)[None] < x_lens[:, None]
    scores = logp.float().masked_fill(~tok_ok[..., None], neg).permute(2, 0, 1).contiguous()  # (M, B, N)
    # q[j, :, 1 + i]: best score of a path at token i, frame j; column 0 stays at -inf-like neg (token -1).
    q = torch.full((M, B, N + 1), neg, device=dev)
    q[0, :, 1] = scores[0, :, 0]
    for j in range(1, M):
        torch.maximum(q[j - 1, :, 1:], q[j - 1, :, :-1], out=q[j, :, 1:])
        q[j, :, 1:] += scores[j]
    advanced = q[:-1, :, :-1] > q[:-1, :, 1:]  # (M - 1, B, N): frame j + 1 came from token i - 1
    end = x_lens - 1
    if free_end is not None:
        last = q[(y_lens - 1).clamp(min=0), torch.arange(B, device=dev), 1:]  # (B, N) scores at the last frame
        end = torch.where(free_end, last.masked_fill(~tok_ok, 2 * neg).argmax(1), end)
    adv, i, y = advanced.cpu().numpy(), end.cpu().numpy().copy(), y_lens.cpu().numpy()
    rows = np.arange(B)
    tokens = np.zeros((B, M), dtype=np.int64)  # the path's token at every frame
    for j in range(M - 1, -1, -1):
        active = j < y
        tokens[:, j] = i
        if j > 0:
            i = np.maximum(i - (adv[j - 1, rows, i] & active), 0)
    frame_ok = torch.arange(M, device=dev)[None] < y_lens[:, None]  # (B, M)
    path = torch.zeros(B, N, M, device=dev)
    return path.scatter_(1, torch.from_numpy(tokens).to(dev)[:, None], frame_ok[:, None].float())


def durations_to_path(durations: torch.Tensor, n_sub: int) -> torch.Tensor:
    """durations (B, N) sub-frames per token -> path (B, N, n_sub) 0/1 (tokens laid end to end)."""
    ends = durations.cumsum(1)
    starts = ends - durations
    s = torch.arange(n_sub, device=durations.device)[None, None]
    return ((s >= starts[..., None]) & (s < ends[..., None])).float()


def aligned_states(aligner: Aligner, states, path, code_lens, n_positions: int) -> torch.Tensor:
    """Aligned text state of every audio position (B, n_positions, D).

    states (B, N, D), path (B, N, F * S); position j < code_len gets frame j's sub-frame states
    (concatenated, projected); later positions get the learned end state.
    """
    B, _, D = states.shape
    S = aligner.sub_frames
    sub = torch.einsum("bnm,bnd->bmd", path.to(states.dtype), states)  # (B, F * S, D)
    Fr = sub.shape[1] // S
    frames = aligner.frame_proj(sub.reshape(B, Fr, S * D))  # (B, F, D)
    frames = F.pad(frames, (0, 0, 0, max(n_positions - Fr, 0)))[:, :n_positions]
    past = (torch.arange(n_positions, device=states.device)[None] >= code_lens[:, None])[..., None]
    return torch.where(past, aligner.end_state.to(frames.dtype), frames)


def durations_from_prediction(pred: torch.Tensor, text_lens: torch.Tensor, sub_frames: int, scale: float = 1.0):
    """Predicted durations in code frames (B, N) -> integer sub-frames (B, N), >= 1 on real tokens, and
    frame counts (B,). The last token is stretched so that the total fills whole code frames."""
    text_ok = torch.arange(pred.shape[1], device=pred.device)[None] < text_lens[:, None]
    d = torch.clamp(torch.round(pred.float() * sub_frames * scale), min=1).long() * text_ok
    total = d.sum(1)
    n_frames = (total + sub_frames - 1) // sub_frames
    extra = n_frames * sub_frames - total
    d[torch.arange(d.shape[0]), text_lens - 1] += extra
    return d, n_frames
