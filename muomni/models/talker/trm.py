"""The TRM Talker: non-autoregressive text -> codes by recursive refinement (``"arch": "trm"``).

After the Tiny Recursive Model (Jolicoeur-Martineau 2025, "Less is More: Recursive Reasoning with Tiny
Networks"): a small network is applied many times to improve a latent ``z`` and an answer ``y``::

    text --encoder (+ speaker)--> memory (B, N, D) --length predictor--> T frames
    y, z = learned initial answer and latent, repeated over T frames
    for each of H_cycles:
        L_cycles x:  z = blocks(z + frame queries)   self-attention on z, cross-attention to the text
                                                     and to y, feed-forward (post-norm, as TRM)
        y = norm(h + update(h)), h = y + z           the answer update reads z at full scale (TRM)
    codes = heads(y): every frame and codebook in one pass

Only the last H cycle carries gradients; the earlier ones run under ``torch.no_grad()`` (TRM's deep
recursion), so training memory does not grow with ``H_cycles``. The learned initial y and z can only
be trained when ``H_cycles == 1``; with more cycles no gradient reaches them, so they are frozen at
their random initialisation (TRM's fixed initial states) and data-parallel training sees no unused
trainable parameter.

Alignment needs no search: a frame's query carries its position as a fraction of the utterance, and
the text cross-attention rotates keys by token positions stretched onto the frame axis
(token n of N at (n + 0.5) T / N), so rotary attention sees the diagonal of the text-frame plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from muomni.models.layers import (
    Attention,
    FeedForward,
    RMSNorm,
    Transformer,
    apply_rope,
    attend,
    init_weights,
    masked_mean,
    rope_angles,
)
from muomni.models.sampling import sample
from muomni.models.talker.common import TalkerBase, TalkerOutput, frame_limit
from muomni.models.talker.config import TRMConfig

FRACTION_FREQS = 16  # Fourier features of a frame's position in its utterance (t + 0.5) / T


class CrossAttention(nn.Module):
    """Grouped-query attention from x to a memory, both rotated by their own positions."""

    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wkv = nn.Linear(cfg.d_model, 2 * cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, mem, rope_x, rope_mem, mask):
        """x (B, T, D), mem (B, S, D), rope_x (B, T, hd/2, 2), rope_mem (B, S, hd/2, 2), mask (B, 1, 1, S)
        -> (B, T, D)."""
        B, T, _ = x.shape
        S, hd = mem.shape[1], self.head_dim
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, hd).transpose(1, 2), rope_x)  # (B, H, T, hd)
        k, v = self.wkv(mem).view(B, S, 2 * self.n_kv_heads, hd).transpose(1, 2).chunk(2, dim=1)  # (B, KV, S, hd)
        y = attend(q, apply_rope(k, rope_mem), v, mask, self.dropout if self.training else 0.0)  # (B, H, T, hd)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


@dataclass
class Context:
    """What every recursive block reads besides z and y; fixed for one utterance batch."""

    text: torch.Tensor  # (B, N, D) encoder memory
    text_mask: torch.Tensor  # (B, 1, 1, N) valid text tokens
    text_rope: torch.Tensor  # (B, N, hd/2, 2) token positions stretched onto the frame axis
    frame_mask: torch.Tensor  # (B, 1, 1, T) frames inside each item's length
    frame_rope: torch.Tensor  # (B, T, hd/2, 2)
    queries: torch.Tensor  # (B, T, D) injected into z at every pass


class RecursiveBlock(nn.Module):
    """Self-attention on z, cross-attention to the text and to y, feed-forward; post-norm keeps the
    recurrent state at unit scale however many times the block is applied (TRM)."""

    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.text_attn = CrossAttention(cfg)
        self.answer_attn = CrossAttention(cfg)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.swiglu)
        self.norms = nn.ModuleList(RMSNorm(cfg.d_model, cfg.norm_eps) for _ in range(4))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, z: torch.Tensor, y: torch.Tensor, ctx: Context) -> torch.Tensor:
        """z, y (B, T, D) -> z (B, T, D)."""
        z = self.norms[0](z + self.drop(self.self_attn(z, ctx.frame_rope, ctx.frame_mask)))
        z = self.norms[1](z + self.drop(self.text_attn(z, ctx.text, ctx.frame_rope, ctx.text_rope, ctx.text_mask)))
        z = self.norms[2](z + self.drop(self.answer_attn(z, y, ctx.frame_rope, ctx.frame_rope, ctx.frame_mask)))
        return self.norms[3](z + self.drop(self.ffn(z)))


class LengthPredictor(nn.Module):
    """Frames per text token (softplus, so positive), summed over an item's tokens -> its frame count.

    It reads the encoder memory detached (as Glow-TTS's duration predictor): its gradients are orders of
    magnitude larger than the codebook losses' at the start, and through Adam's per-parameter scaling
    they would otherwise drown the codebook signal in the shared text encoder.
    """

    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.hidden = nn.Linear(cfg.d_model, cfg.d_model)
        self.out = nn.Linear(cfg.d_model, 1)

    def forward(self, memory: torch.Tensor, text_ok: torch.Tensor) -> torch.Tensor:
        """memory (B, N, D), text_ok (B, N) bool -> frames (B,) float."""
        rate = F.softplus(self.out(F.silu(self.hidden(self.norm(memory.detach()))))).squeeze(-1)  # (B, N)
        return (rate * text_ok).sum(1)


class TRMTalker(TalkerBase):
    cfg: TRMConfig

    def __init__(self, cfg: TRMConfig):
        super().__init__(cfg)  # text_emb, speaker_emb
        d = cfg.d_model
        self.encoder = Transformer(cfg, cfg.encoder_layers)
        self.length = LengthPredictor(cfg)
        self.frame_query = nn.Sequential(nn.Linear(2 * FRACTION_FREQS, d), RMSNorm(d, cfg.norm_eps))  # unit scale
        self.blocks = nn.ModuleList(RecursiveBlock(cfg) for _ in range(cfg.n_layers))
        self.update = FeedForward(d, cfg.ffn_dim, cfg.swiglu)  # y <- norm(h + update(h)), h = y + z
        self.answer_norm = RMSNorm(d, cfg.norm_eps)
        self.codebook_emb = nn.Embedding(cfg.n_q, d)
        self.head_norm = RMSNorm(d, cfg.norm_eps)
        self.heads = nn.ModuleList(
            nn.Linear(d, cfg.codebook_size, bias=False) for _ in range(1 if cfg.share_output_heads else cfg.n_q)
        )
        self.apply(init_weights)
        trainable = cfg.H_cycles == 1  # see the module docstring
        self.y_init = nn.Parameter(torch.randn(d), requires_grad=trainable)
        self.z_init = nn.Parameter(torch.randn(d), requires_grad=trainable)

    # -- pieces shared by training and generation

    def encode_text(self, text: torch.Tensor, text_lens: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
        """text (B, N), text_lens (B,), speakers (B,) -> memory (B, N, D); the speaker is added to every token."""
        B, N = text.shape
        text_ok = torch.arange(N, device=text.device)[None] < text_lens[:, None]  # (B, N)
        mask = text_ok[:, None, None] | torch.eye(N, dtype=torch.bool, device=text.device)  # (B, 1, N, N)
        x = self.embed_text(text, speakers)
        return self.encoder(x, torch.arange(N, device=text.device).expand(B, -1), mask)

    def context(self, memory: torch.Tensor, text_lens: torch.Tensor, lengths: torch.Tensor, T: int) -> Context:
        """memory (B, N, D), text_lens (B,), lengths (B,) frames of each item, T padded frames -> Context."""
        B, N, _ = memory.shape
        dev = memory.device
        lengths = lengths.clamp(min=1).float()
        t = torch.arange(T, device=dev).float() + 0.5  # (T,) frame centres
        n = torch.arange(N, device=dev).float() + 0.5
        text_pos = n[None] * lengths[:, None] / text_lens.clamp(min=1)[:, None].float() - 0.5  # (B, N)
        frac = t[None] / lengths[:, None]  # (B, T) position in the utterance, 0..1 on its frames
        angles = math.pi * frac[..., None] * torch.arange(1, FRACTION_FREQS + 1, device=dev)  # (B, T, F)
        hd, base = self.cfg.head_dim, self.cfg.rope_base
        return Context(
            text=memory,
            text_mask=(torch.arange(N, device=dev)[None] < text_lens[:, None])[:, None, None],
            text_rope=rope_angles(text_pos, hd, base),
            frame_mask=(t[None] < lengths[:, None])[:, None, None],
            frame_rope=rope_angles((t - 0.5).expand(B, -1), hd, base),
            queries=self.frame_query(torch.cat([angles.sin(), angles.cos()], dim=-1)),
        )

    def cycle(self, y: torch.Tensor, z: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """One H cycle: L_cycles passes of the blocks over z, then the answer update. y, z (B, T, D)."""
        for _ in range(self.cfg.L_cycles):
            z = z + ctx.queries
            for block in self.blocks:
                z = block(z, y, ctx)
        h = y + z
        return self.answer_norm(h + self.update(h)), z

    def refine(self, ctx: Context) -> torch.Tensor:
        """The recursion from the learned initial y and z -> the answer y (B, T, D); gradients: last cycle only."""
        B, T, D = ctx.queries.shape
        y, z = self.y_init.expand(B, T, D), self.z_init.expand(B, T, D)
        with torch.no_grad():
            for _ in range(self.cfg.H_cycles - 1):
                y, z = self.cycle(y, z, ctx)
        return self.cycle(y, z, ctx)[0]

    def predict(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, T, D) -> logits (B, T, n_q, K): each codebook reads y plus its own embedding."""
        h = self.head_norm(y)[:, :, None] + self.codebook_emb.weight  # (B, T, n_q, D)
        if len(self.heads) == 1:
            return self.heads[0](h)
        return torch.stack([head(h[:, :, k]) for k, head in enumerate(self.heads)], dim=2)

    # -- training

    def forward(
        self, text: torch.Tensor, text_lens: torch.Tensor, codes: torch.Tensor, code_lens: torch.Tensor,
        speakers: torch.Tensor, ended: torch.Tensor | None = None, durations: torch.Tensor | None = None,
    ) -> TalkerOutput:
        """text (B, N) long, text_lens (B,), codes (B, F, n_q) long, code_lens (B,), speakers (B,).

        ended (B,) bool: False for items truncated to F frames. Their true length is unknown, and their text
        runs past their frames, so they teach neither the length nor a whole-utterance alignment: they are
        left out of every loss. durations: accepted for the training loop's interface, not needed here.
        """
        cfg = self.cfg
        B, Fr, _ = codes.shape
        dev = codes.device
        ended = torch.ones(B, dtype=torch.bool, device=dev) if ended is None else ended
        memory = self.encode_text(text, text_lens, speakers)  # (B, N, D)
        text_ok = torch.arange(text.shape[1], device=dev)[None] < text_lens[:, None]
        pred_len = self.length(memory, text_ok)  # (B,)
        logits = self.predict(self.refine(self.context(memory, text_lens, code_lens, Fr)))  # (B, F, n_q, K)

        frame_ok = (torch.arange(Fr, device=dev)[None] < code_lens[:, None]) & ended[:, None]  # (B, F)
        losses: dict[str, torch.Tensor] = {}
        metrics: dict[str, torch.Tensor] = {}
        counts = {f"c{k}": frame_ok.sum() for k in range(cfg.n_q)}
        for k in range(cfg.n_q):
            ce = F.cross_entropy(logits[:, :, k].flatten(0, 1).float(), codes[..., k].flatten(), reduction="none")
            losses[f"c{k}"] = masked_mean(ce.view(B, Fr), frame_ok)
            metrics[f"c{k}_accuracy"] = masked_mean((logits[:, :, k].argmax(-1) == codes[..., k]).float(), frame_ok)
        true_len = code_lens.clamp(min=1).float()
        log_err = pred_len.float().clamp(min=1e-3).log() - true_len.log()  # (B,)
        losses["length"] = masked_mean(log_err.square(), ended)
        counts["length"] = ended.sum()
        metrics["length_error"] = masked_mean((pred_len.detach() - true_len).abs() / true_len, ended)
        losses["loss"] = sum(cfg.weight(name) * value for name, value in losses.items())
        return TalkerOutput(losses, counts, metrics, logits, None, None, pred_len)

    # -- generation

    @torch.no_grad()
    def generate(self, text: torch.Tensor, text_lens: torch.Tensor, speakers: torch.Tensor,
                 max_frames: int | None = None, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 durations: torch.Tensor | None = None, duration_scale: float = 1.0, compile: bool = False,
                 return_probs: bool = False):
        """Every frame in one pass -> codes (B, T, n_q) long (zeros past each length), lengths (B,)
        [, probs (B, T, n_q, K): the distribution over every codebook's codes at temperature 1].

        The frame count is the length predictor's (times duration_scale), or the given durations' (B, N)
        sub-frames, clamped to [1, max_frames] (default as the autoregressive Talker's limit). compile is
        accepted for the common signature: there is no per-frame step to compile.
        """
        cfg = self.cfg
        B = text.shape[0]
        memory = self.encode_text(text, text_lens, speakers)
        if durations is not None:
            frames = (durations.sum(1) + cfg.sub_frames - 1) // cfg.sub_frames
        else:
            text_ok = torch.arange(text.shape[1], device=text.device)[None] < text_lens[:, None]
            frames = torch.round(self.length(memory, text_ok) * duration_scale)
        lengths = frames.long().clamp(1, frame_limit(cfg, max_frames))  # (B,)
        T = int(lengths.max())
        logits = self.predict(self.refine(self.context(memory, text_lens, lengths, T)))  # (B, T, n_q, K)
        codes = sample(logits.flatten(0, 2), temperature, top_k, top_p, generator).view(B, T, cfg.n_q)
        codes = codes * (torch.arange(T, device=text.device)[None] < lengths[:, None])[..., None]
        return (codes, lengths, torch.softmax(logits.float(), dim=-1)) if return_probs else (codes, lengths)
