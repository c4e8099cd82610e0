"""Transformer layers shared by both Talker families (docs/DESIGN.md §5): torch only, no project imports.

As gpt-fast: RMSNorm computed in float32, rotary embeddings as two pure functions, grouped-query attention
through ``F.scaled_dot_product_attention``, SwiGLU feed-forward and a ``KVCache`` with preallocated buffers
indexed by position. Unlike gpt-fast the same ``forward`` trains without a cache.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02  # GPT-2's initialisation of weights and learned vectors


class TransformerSettings(Protocol):
    """What the layers read from a config; both Talker families' configs have these fields."""

    d_model: int
    n_heads: int  # attention (query) heads
    n_kv_heads: int  # key/value heads, shared by n_heads / n_kv_heads query heads each
    head_dim: int
    ffn_dim: int
    swiglu: bool
    dropout: float
    rope_base: float
    norm_eps: float


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (Zhang & Sennrich 2019), cast back to the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight


def rope_angles(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Rotary tables (Su et al. 2021, RoFormer): positions (B, L) -> (B, L, head_dim // 2, 2) = (cos, sin).

    Real-valued (no complex tensors, which inductor does not generate code for); the same rotation of
    interleaved pairs (x[2i], x[2i + 1]) as the complex form, so older checkpoints give the same outputs.
    """
    freqs = 1.0 / base ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[..., None] * freqs  # (B, L, hd/2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, L, hd) pairwise by rope (B, L, hd/2, 2) (cos, sin); computed in float32."""
    xp = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, H, L, hd/2, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    cos, sin = rope[:, None, ..., 0], rope[:, None, ..., 1]  # (B, 1, L, hd/2)
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2).type_as(x)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
           dropout_p: float = 0.0) -> torch.Tensor:
    """Grouped-query attention that the fused CUDA kernels can take.

    q (B, H, L, hd), k and v (B, KV, S, hd); mask (B or 1, 1, L or 1, S) bool (True = may attend), or None
    for plain causal attention (L == S). ``enable_gqa`` with a mask only runs the math kernel on CUDA, so
    K/V are expanded to H heads (query head h reads key/value head h // (H / KV), as ``enable_gqa``);
    a mask becomes an additive float mask (memory-efficient kernel) and None becomes ``is_causal``
    (flash kernel). Every row must keep one key: a fully masked row would be NaN.
    """
    if q.dtype == torch.bfloat16 and q.device.type == "cpu":
        # Under CPU bf16 autocast: the CPU flash kernel's forward + backward runs ~2x slower in bf16 than in
        # float32 (16 x 3 heads x 112 x 64: 26 vs 13 ms), so attention is computed in float32, as RMSNorm is.
        with torch.autocast("cpu", enabled=False):  # autocast would cast the float32 inputs back to bf16
            return attend(q.float(), k.float(), v.float(), mask, dropout_p).to(q.dtype)
    if q.shape[2] == 1 and mask is not None:  # one decoding step: no kernel choice to win, no K/V copy to pay
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                              enable_gqa=k.shape[1] != q.shape[1])
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class KVCache(nn.Module):
    """Preallocated key/value buffers (B, n_kv_heads, max_seq, head_dim) written at input_pos.

    Fixed shapes and ``index_copy_`` keep generation capturable by torch.compile / CUDA graphs.
    """

    def __init__(self, batch: int, n_kv_heads: int, max_seq: int, head_dim: int, dtype=torch.float32, device=None):
        super().__init__()
        shape = (batch, n_kv_heads, max_seq, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_pos (L,) slots; k, v (B, n_kv_heads, L, hd) -> the whole buffers."""
        self.k_cache.index_copy_(2, input_pos, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(2, input_pos, v.to(self.v_cache.dtype))
        return self.k_cache, self.v_cache


class Attention(nn.Module):
    def __init__(self, cfg: TransformerSettings):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.d_model, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout
        self.kv_cache: KVCache | None = None

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor, input_pos: torch.Tensor | None = None,
        last: int = 0,
    ) -> torch.Tensor:
        """x (B, L, D); mask (B, 1, L, S) bool, True = may attend, or None = causal; input_pos (L,) cache slots.

        last > 0: only the last positions ask (queries), every position answers -> (B, last, D).
        """
        B, L, _ = x.shape
        hd = self.head_dim
        q, k, v = self.wqkv(x).split([self.n_heads * hd, self.n_kv_heads * hd, self.n_kv_heads * hd], dim=-1)
        if last:
            q, mask = q[:, -last:], mask[:, :, -last:]
        Lq = q.shape[1]
        q = apply_rope(q.view(B, Lq, self.n_heads, hd).transpose(1, 2), rope[:, -Lq:])  # (B, H, Lq, hd)
        k = apply_rope(k.view(B, L, self.n_kv_heads, hd).transpose(1, 2), rope)  # (B, KV, L, hd)
        v = v.view(B, L, self.n_kv_heads, hd).transpose(1, 2)
        if self.kv_cache is not None and input_pos is not None:
            k, v = self.kv_cache.update(input_pos, k, v)
        y = attend(q, k, v, mask, self.dropout if self.training else 0.0)  # (B, H, Lq, hd)
        return self.wo(y.transpose(1, 2).reshape(B, Lq, -1))


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020) or a GELU MLP."""

    def __init__(self, d_model: int, ffn_dim: int, swiglu: bool):
        super().__init__()
        self.swiglu = swiglu
        self.w1 = nn.Linear(d_model, ffn_dim, bias=False)
        self.w3 = nn.Linear(d_model, ffn_dim, bias=False) if swiglu else None
        self.w2 = nn.Linear(ffn_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.w1(x)) * self.w3(x) if self.swiglu else F.gelu(self.w1(x))
        return self.w2(h)


class Block(nn.Module):
    def __init__(self, cfg: TransformerSettings):
        super().__init__()
        self.attn_norm, self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps), RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.swiglu)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope, mask, input_pos=None, last: int = 0):
        """last > 0: the outputs of the last positions only (B, last, D), the earlier ones read as keys."""
        a = self.attn(self.attn_norm(x), rope, mask, input_pos, last)
        x = (x[:, -last:] if last else x) + self.drop(a)
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class Transformer(nn.Module):
    """A pre-norm stack; causality lives in the mask the caller passes."""

    def __init__(self, cfg: TransformerSettings, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head_dim, self.rope_base = cfg.head_dim, cfg.rope_base

    def forward(self, x, positions, mask, input_pos=None, last: int = 0):
        """x (B, L, D), positions (B, L) long, mask (B, 1, L, S) bool or None (causal) -> (B, L, D).

        last > 0: only the last positions' outputs are wanted (B, last, D); the final layer then skips the
        projection and feed-forward of the others (training reads the audio positions only).
        """
        rope = rope_angles(positions, self.head_dim, self.rope_base)
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, mask, input_pos, last if i == len(self.layers) - 1 else 0)
        return self.norm(x)


def init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation (normal, std 0.02; zero biases) for ``module.apply``."""
    if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d)):
        nn.init.normal_(module.weight, std=INIT_STD)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of x over the elements where mask is true (0 where none is)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
