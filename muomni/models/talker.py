"""The Talker: a decoder-only transformer from text to RVQ codes (docs/DESIGN.md §5).

Reads like gpt-fast: RMSNorm in float32, rotary embeddings as two pure functions, grouped-query
attention through ``F.scaled_dot_product_attention``, SwiGLU feed-forward, and a ``KVCache`` with
preallocated buffers indexed by position. Unlike gpt-fast the same ``forward`` trains without a cache.

Sequence (one position per item of the list, per utterance)::

    text_0 .. text_{N-1}  start  frame_0 .. frame_{T-1}
    targets at the audio positions:  frame_0 .. frame_{T-1}  stop

The input at audio position t is frame t-1 (the start position for t = 0) and its target is frame t:
exactly one step ahead. A frame's embedding is the sum of one embedding per codebook.

Alignment ("duration path", ``duration_path``): a plain decoder-only model learns to continue codes
long before it learns *which* text it is saying. So a small non-causal text encoder feeds both the
text prefix and an explicit alignment: monotonic alignment search (Glow-TTS, Kim et al. 2020)
between text tokens and code frames gives per-token durations, a duration predictor learns them
(FastSpeech, Ren et al. 2019), and the aligned encoder state of the frame to be predicted is added
to each audio position's input. At inference predicted durations give the aligned states and the
frame count. See ``aligner.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from muomni.config import ConfigError
from muomni.models.aligner import Aligner, aligned_states, durations_to_path


@dataclass
class TalkerConfig:
    arch: str = "ar"  # ar: this autoregressive Talker | trm: non-autoregressive recursive refinement (trm.py)
    vocab_size: int = 0  # text tokens; 0 = taken from the text processor by train_talker.py
    n_speakers: int = 1
    n_q: int = 2  # codebooks; 0 = taken from the codec
    codebook_size: int = 128
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 3
    n_kv_heads: int = 1  # grouped-query attention: n_heads query heads share n_kv_heads key/value heads
    ffn_dim: int = 768
    swiglu: bool = True
    dropout: float = 0.0
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    text_prefix: bool = True  # text tokens first in the sequence (docs/DESIGN.md §5)
    duration_path: bool = True  # explicit alignment (aligner.py); False = plain decoder-only
    encoder_layers: int = 2  # non-causal text encoder layers (duration path)
    sub_frames: int = 5  # alignment resolution per code frame (5 = one 16 ms mel frame)
    align_codebooks: int = 1  # codebooks scored by the alignment prior
    dur_kernel: int = 3
    depth_layers: int = 0  # > 0: a depth decoder predicts codebooks 1..n_q-1 given codebook 0
    decoder_fraction: float = 0.0625  # fraction of frames the depth decoder trains on
    max_text: int = 0  # fixed text length of a batch (0 = from the corpus, stats.json)
    max_frames: int = 0  # fixed frame count of a batch and generation limit (0 = from the corpus)
    H_cycles: int = 3  # trm: refinement cycles of the answer y; gradients flow through the last one only
    L_cycles: int = 6  # trm: passes of the recursive blocks over the latent z per cycle
    share_output_heads: bool = False  # trm: one output projection for every codebook (each keeps its embedding)
    loss_weights: dict[str, float] = field(default_factory=dict)  # c0, c1, ..., stop, align, dur (trm: length)

    def __post_init__(self):
        if self.arch not in ("ar", "trm"):
            raise ConfigError(f"model.arch = {self.arch!r}: expected ar (autoregressive) or trm (recursive refinement)")
        if self.H_cycles < 1 or self.L_cycles < 1:
            raise ConfigError(f"model: H_cycles ({self.H_cycles}) and L_cycles ({self.L_cycles}) must be >= 1")
        if self.d_model % self.n_heads or self.n_heads % max(self.n_kv_heads, 1):
            raise ConfigError(
                f"model: d_model ({self.d_model}) must divide by n_heads ({self.n_heads}) and n_heads by "
                f"n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(f"model: head_dim = d_model / n_heads = {self.head_dim} must be even for RoPE")
        if not self.text_prefix and not self.duration_path:
            raise ConfigError("model: text_prefix and duration_path are both off: the Talker would not see text")
        if self.depth_layers and self.n_q < 2:
            raise ConfigError("model: a depth decoder needs n_q >= 2")
        if self.depth_layers and self.arch == "trm":
            raise ConfigError("model: depth_layers is an autoregressive option; the trm Talker predicts every codebook")
        named = {"stop", "align", "dur", "depth"} if self.arch == "ar" else {"length"}
        valid = {f"c{k}" for k in range(max(self.n_q, 1))} | named
        for key in self.loss_weights:
            if key not in valid and self.n_q:
                raise ConfigError(f"model.loss_weights: unknown loss {key!r}; valid: {', '.join(sorted(valid))}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def require_data_fields(self) -> None:
        """vocab_size, n_q and codebook_size come from the text processor and the codec; a model needs them."""
        if self.vocab_size < 3 or self.n_q < 1 or self.codebook_size < 2:
            raise ConfigError("model: vocab_size, n_q and codebook_size must be set (from the text processor/codec)")

    def weight(self, name: str) -> float:
        """The weight of a named loss: loss_weights (default 1), times the codebook weighting of the trm Talker."""
        base = 1.0
        if self.arch == "trm" and name[:1] == "c" and name[1:].isdigit() and int(name[1:]) < self.n_q:
            base = codebook_weights(self.n_q)[int(name[1:])]
        return base * float(self.loss_weights.get(name, 1.0))


def codebook_weights(n_q: int) -> list[float]:
    """Codebook 0 (the coarse structure every later codebook refines) weighs 2.0, codebooks 1..7 fall linearly
    from 1.5 to 1.0, the rest 1.0; normalised to mean 1 so the total stays on the scale of one cross-entropy."""
    raw = [2.0] + [1.5 - 0.5 * (k - 1) / 6 for k in range(1, 8)] + [1.0] * max(n_q - 8, 0)
    raw = raw[:n_q]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]


# ---------------------------------------------------------------- building blocks


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
    def __init__(self, cfg: TalkerConfig):
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
    def __init__(self, cfg: TalkerConfig):
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

    def __init__(self, cfg: TalkerConfig, n_layers: int):
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


# ---------------------------------------------------------------- the Talker


@dataclass
class TalkerOutput:
    losses: dict[str, torch.Tensor]  # named, unweighted; "loss" is the weighted total
    counts: dict[str, torch.Tensor]  # per named loss, the number of elements it averages over (for DDP shares)
    metrics: dict[str, torch.Tensor]  # accuracies (c0_accuracy, c1_accuracy, ..., stop_accuracy)
    logits: torch.Tensor  # (B, F, n_heads, K): codebook logits at the audio positions 0..F-1
    stop_logits: torch.Tensor | None  # (B, F + 1); None for the trm Talker, which predicts its length instead
    durations: torch.Tensor | None  # (B, N) sub-frames per text token from the alignment search
    lengths: torch.Tensor | None = None  # (B,) predicted frame counts (trm)


class Talker(nn.Module):
    def __init__(self, cfg: TalkerConfig):
        super().__init__()
        cfg.require_data_fields()
        self.cfg = cfg
        d = cfg.d_model
        self.text_emb = nn.Embedding(cfg.vocab_size, d)
        self.speaker_emb = nn.Embedding(max(cfg.n_speakers, 1), d)
        self.code_emb = nn.ModuleList(nn.Embedding(cfg.codebook_size, d) for _ in range(cfg.n_q))
        self.start = nn.Parameter(torch.randn(d) * 0.02)
        self.aligner = Aligner(cfg, Transformer(cfg, cfg.encoder_layers)) if cfg.duration_path else None
        self.decoder = Transformer(cfg, cfg.n_layers)
        n_heads = 1 if cfg.depth_layers else cfg.n_q
        self.heads = nn.ModuleList(nn.Linear(d, cfg.codebook_size, bias=False) for _ in range(n_heads))
        self.stop_head = nn.Linear(d, 1)
        self.depth = None
        if cfg.depth_layers:
            from muomni.models.depth import DepthDecoder

            self.depth = DepthDecoder(cfg)
        self.apply(_init_weights)

    # -- pieces shared by training and generation (talker_generate.py)

    def encode_text(self, text: torch.Tensor, text_lens: torch.Tensor) -> torch.Tensor:
        """text (B, N) -> prefix states (B, N, D): the encoder's output on the duration path, else embeddings."""
        x = self.text_emb(text)
        if self.aligner is not None:
            x = self.aligner.encode(x, text_lens)
        return x

    def frame_embedding(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T, n_q) -> (B, T, D): the sum of one embedding per codebook."""
        return sum(emb(codes[..., k]) for k, emb in enumerate(self.code_emb))

    def audio_inputs(self, codes, speakers, aligned):
        """Inputs of audio positions 0..T: start, then frames 0..T-1 (teacher forcing, one step behind).

        codes (B, T, n_q), speakers (B,), aligned (B, T + 1, D) or None -> (B, T + 1, D)
        """
        B = codes.shape[0]
        x = torch.cat([self.start.expand(B, 1, -1), self.frame_embedding(codes)], dim=1)
        x = x + self.speaker_emb(speakers)[:, None]
        return x if aligned is None else x + aligned

    def layout(self, text_lens: torch.Tensor, n_text: int, n_audio: int):
        """Positions (B, L) and the attention mask (B, 1, L, L) of a padded [text | audio] sequence.

        Text padding sits between the text and the audio; rotary positions skip it and the mask hides
        it, so an item's outputs do not depend on how much padding its batch has.
        """
        dev = text_lens.device
        B = text_lens.shape[0]
        n_text = n_text if self.cfg.text_prefix else 0
        t = torch.arange(n_text, device=dev).expand(B, -1)
        a = torch.arange(n_audio, device=dev)[None] + (text_lens[:, None] if n_text else 0)
        positions = torch.cat([t, a.expand(B, -1)], dim=1)  # (B, L)
        L = n_text + n_audio
        key_ok = torch.ones(B, L, dtype=torch.bool, device=dev)
        key_ok[:, :n_text] = t < text_lens[:, None]
        causal = torch.ones(L, L, dtype=torch.bool, device=dev).tril()
        mask = (causal[None] & key_ok[:, None]) | torch.eye(L, dtype=torch.bool, device=dev)  # no empty row
        return positions, mask[:, None]

    def predict(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, L, D) -> codebook logits (B, L, n_heads, K), stop logits (B, L)."""
        return torch.stack([head(h) for head in self.heads], dim=2), self.stop_head(h).squeeze(-1)

    @torch.no_grad()
    def generate(self, text: torch.Tensor, text_lens: torch.Tensor, speakers: torch.Tensor, **kw):
        """Batched generation -> codes (B, T, n_q), lengths (B,); keywords as ``talker_generate.generate``."""
        from muomni.models.talker_generate import generate

        return generate(self, text, text_lens, speakers, **kw)

    # -- training

    def forward(
        self, text: torch.Tensor, text_lens: torch.Tensor, codes: torch.Tensor, code_lens: torch.Tensor,
        speakers: torch.Tensor, ended: torch.Tensor | None = None, durations: torch.Tensor | None = None,
    ) -> TalkerOutput:
        """text (B, N) long, text_lens (B,), codes (B, F, n_q) long, code_lens (B,), speakers (B,).

        ended (B,) bool: False for items truncated to F frames (no stop target, free alignment end).
        durations (B, N) sub-frames per token: a given alignment instead of the search (no align/dur loss).
        """
        cfg = self.cfg
        B, Fr, _ = codes.shape
        ended = torch.ones(B, dtype=torch.bool, device=codes.device) if ended is None else ended
        prefix = self.encode_text(text, text_lens)  # (B, N, D)
        losses: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        aligned = None
        if self.aligner is not None and durations is not None:
            path = durations_to_path(durations, Fr * cfg.sub_frames)
            aligned = aligned_states(self.aligner, prefix, path, code_lens, Fr + 1)  # (B, F + 1, D)
        elif self.aligner is not None:
            align = self.aligner(prefix, text_lens, codes, code_lens, ended)
            losses.update(align.losses)
            counts.update(align.counts)
            durations = align.durations
            aligned = aligned_states(self.aligner, prefix, align.path, code_lens, Fr + 1)  # (B, F + 1, D)
        x = self.audio_inputs(codes, speakers, aligned)  # (B, F + 1, D)
        if cfg.text_prefix:
            x = torch.cat([prefix, x], dim=1)
        positions, mask = self.layout(text_lens, text.shape[1], Fr + 1)
        h = self.decoder(x, positions, mask, last=Fr + 1)  # (B, F + 1, D) audio positions
        logits, stop_logits = self.predict(h)
        logits = logits[:, :Fr]  # (B, F, n_heads, K)

        frame_ok = torch.arange(Fr, device=codes.device)[None] < code_lens[:, None]  # (B, F)
        metrics: dict[str, torch.Tensor] = {}
        counts.update({f"c{k}": frame_ok.sum() for k in range(cfg.n_q)})
        for k in range(logits.shape[2]):
            ce = F.cross_entropy(logits[:, :, k].flatten(0, 1).float(), codes[..., k].flatten(), reduction="none")
            losses[f"c{k}"] = _masked_mean(ce.view(B, Fr), frame_ok)
            hit = (logits[:, :, k].argmax(-1) == codes[..., k]).float()
            metrics[f"c{k}_accuracy"] = _masked_mean(hit, frame_ok)
        if self.depth is not None:
            depth_ce, depth_hit = self.depth.loss(h[:, :Fr], codes, frame_ok)
            for k in range(1, cfg.n_q):
                losses[f"c{k}"], metrics[f"c{k}_accuracy"] = depth_ce[k - 1], depth_hit[k - 1]
        pos = torch.arange(Fr + 1, device=codes.device)[None]
        stop_target = (pos == code_lens[:, None]).float()
        stop_ok = (pos <= code_lens[:, None]) & (ended[:, None] | (pos < code_lens[:, None]))
        bce = F.binary_cross_entropy_with_logits(stop_logits.float(), stop_target, reduction="none")
        losses["stop"] = _masked_mean(bce, stop_ok)
        counts["stop"] = stop_ok.sum()
        metrics["stop_accuracy"] = _masked_mean(((stop_logits > 0).float() == stop_target).float(), stop_ok)
        losses["loss"] = sum(cfg.weight(name) * value for name, value in losses.items())
        return TalkerOutput(losses, counts, metrics, logits, stop_logits, durations)


def build_talker(cfg: TalkerConfig) -> nn.Module:
    """The Talker family named by ``cfg.arch``: ``ar`` (this file) or ``trm`` (trm.py)."""
    if cfg.arch == "trm":
        from muomni.models.trm import TRMTalker

        return TRMTalker(cfg)
    return Talker(cfg)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def perplexity(ce: float) -> float:
    return math.exp(min(ce, 50.0))
