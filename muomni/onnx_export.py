"""The inference chain as ONNX graphs: ``python -m muomni export RUN --onnx OUT/`` (docs/DESIGN.md §12).

One graph per step that ``muomni.onnx_runtime`` runs with numpy and onnxruntime alone (no torch):

    text_encoder.onnx   text (1, N), text_lens (1,), speakers (1,) -> states (1, N, D), durations (1, N) in code
                        frames (Talker.encode_text + aligner.predict_durations; zeros without a duration path)
    align.onnx          states, path (1, N, F x sub_frames) 0/1, n_frames (1,) -> aligned states (1, F + 1, D)
    prefill.onnx        [prefix (1, N, D)], speakers, aligned0 (1, 1, D), positions (1, L), mask (1, 1, L, S),
                        slots (L,), the KV cache -> hidden (1, D), logits (1, heads, K), stop (1,), the new cache
    step.onnx           frame (1, n_q), speakers, aligned (1, 1, D), position (1, 1), mask (1, 1, 1, S), slot (1,),
                        the KV cache -> logits, stop, hidden, the new cache (generate.decode_step)
    depth.onnx          hidden (M, D), codes (M, k) -> logits of codebook k (M, K) (the depth decoder, if any)
    codec_decode.onnx   codes (1, T, n_q) -> log-mel (1, 5 T, 128);  codec_expected.onnx: probs (1, T, n_q, K)
    vocoder.onnx        log-mel (1, T, 128) -> wav (1, 256 T) (the HiFi-GAN generator, with --vocoder)
    frontend.json       vocabulary, normaliser mode, audio settings, model sizes, lengths, speakers, graphs
    mel_basis.npy       the mel filters, for Griffin-Lim in numpy

The KV cache is explicit: ``cache_k{i}``/``cache_v{i}`` (1, n_kv_heads, S, head_dim) per decoder layer in, the
same with the new position written out (``present_k{i}``/``present_v{i}``), so the runtime owns it and the
graphs hold no state. Exported with torch's TorchScript-based exporter (opset 17) from the eval-mode modules.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from muomni.audio import FMAX, FMIN, HOP_LENGTH, LOG_FLOOR, N_FFT, N_MELS, SAMPLE_RATE, WIN_LENGTH, mel_basis
from muomni.config import config_to_dict
from muomni.models import layers
from muomni.models.layers import Attention
from muomni.models.talker.common import frame_limit
from muomni.models.talker.generate import CACHE_MULTIPLE, decode_step

OPSET = 17
FRONTEND = "frontend.json"


class FunctionalCache(nn.Module):
    """A KV cache whose update returns new tensors instead of writing into its buffers, so that the cache can
    be a graph input and the updated cache a graph output. (A module: ``Attention.kv_cache`` takes modules.)"""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        super().__init__()
        self.k_cache, self.v_cache = k, v

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k_cache = self.k_cache.index_copy(2, input_pos, k.to(self.k_cache.dtype))
        self.v_cache = self.v_cache.index_copy(2, input_pos, v.to(self.v_cache.dtype))
        return self.k_cache, self.v_cache


def _attend_for_export(q, k, v, mask, dropout_p: float = 0.0):
    """``layers.attend`` in the ops the exporter knows: key/value heads repeated, a boolean mask made additive
    (the same arithmetic; the eager step's ``enable_gqa`` kernel is not exportable)."""
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _rms_norm_for_export(self, x: torch.Tensor) -> torch.Tensor:
    """``layers.RMSNorm.forward`` written out (the exporter has no rms_norm at opset 17)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def _self_attention_for_export(self, x, attn_mask, key_padding_mask, is_causal=False):
    """``nn.TransformerEncoderLayer._sa_block`` (batch first, no mask: the codec decoder's attention layers) with
    the sequence length left free: torch's multi-head attention traces it as a constant."""
    mha = self.self_attn
    B, _, C = x.shape
    H = mha.num_heads
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).reshape(B, -1, 3, H, C // H).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, C)  # (B, T, C)
    return self.dropout1(mha.out_proj(y))


@contextmanager
def exportable():
    """Swap the layer functions the exporter cannot take (or takes with a fixed length) for written-out forms:
    RMSNorm, the Talker's attention, and the self-attention of a codec decoder's attention layers (whose fused
    kernel is turned off too)."""
    attend, norm, block = layers.attend, layers.RMSNorm.forward, nn.TransformerEncoderLayer._sa_block
    fastpath = torch.backends.mha.get_fastpath_enabled()
    layers.attend, layers.RMSNorm.forward = _attend_for_export, _rms_norm_for_export
    nn.TransformerEncoderLayer._sa_block = _self_attention_for_export
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        layers.attend, layers.RMSNorm.forward, nn.TransformerEncoderLayer._sa_block = attend, norm, block
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _attentions(talker: nn.Module) -> list[Attention]:
    return [m for m in talker.decoder.modules() if isinstance(m, Attention)]


def _run_with_cache(talker: nn.Module, caches: tuple[torch.Tensor, ...], fn):
    """fn() with FunctionalCaches made of caches (k0, v0, k1, v1, ...) attached -> (fn's result, new caches)."""
    attns = _attentions(talker)
    functional = [FunctionalCache(caches[2 * i], caches[2 * i + 1]) for i in range(len(attns))]
    for a, c in zip(attns, functional):
        a.kv_cache = c
    try:
        out = fn()
    finally:
        for a in attns:
            a.kv_cache = None
    return out, tuple(t for c in functional for t in (c.k_cache, c.v_cache))


class TextEncoderGraph(nn.Module):
    def __init__(self, talker: nn.Module):
        super().__init__()
        self.talker = talker

    def forward(self, text, text_lens, speakers):
        states = self.talker.encode_text(text, text_lens, speakers)  # (1, N, D)
        if self.talker.aligner is None:
            return states, torch.zeros_like(text, dtype=states.dtype)
        return states, self.talker.aligner.predict_durations(states, text_lens, speakers)


class AlignGraph(nn.Module):
    """``aligner.aligned_states`` for F + 1 positions, F = path length / sub_frames (positions >= n_frames get
    the end state)."""

    def __init__(self, talker: nn.Module):
        super().__init__()
        self.aligner = talker.aligner

    def forward(self, states, path, n_frames):
        B, _, D = states.shape
        S = self.aligner.sub_frames
        sub = torch.einsum("bnm,bnd->bmd", path.to(states.dtype), states)  # (B, F S, D)
        frames = self.aligner.frame_proj(sub.reshape(B, -1, S * D))  # (B, F, D)
        end = self.aligner.end_state.to(frames.dtype).expand(B, 1, D)
        frames = torch.cat([frames, end], dim=1)  # (B, F + 1, D)
        pos = torch.cumsum(torch.ones_like(frames[..., 0], dtype=torch.long), dim=1) - 1  # (B, F + 1)
        return torch.where((pos >= n_frames[:, None])[..., None], end, frames)


class PrefillGraph(nn.Module):
    def __init__(self, talker: nn.Module):
        super().__init__()
        self.talker = talker

    def forward(self, prefix, speakers, aligned0, positions, mask, slots, *caches):
        t = self.talker
        x = t.start.expand(speakers.shape[0], 1, -1) + t.speaker_emb(speakers)[:, None] + aligned0  # audio_inputs
        if prefix is not None:
            x = torch.cat([prefix, x], dim=1)  # (1, N + 1, D)
        h, new = _run_with_cache(t, caches, lambda: t.decoder(x, positions, mask, slots)[:, -1])
        logits, stop = t.predict(h[:, None])
        return (h, logits[:, 0], stop[:, 0], *new)


class PrefillNoTextGraph(PrefillGraph):
    def forward(self, speakers, aligned0, positions, mask, slots, *caches):
        return super().forward(None, speakers, aligned0, positions, mask, slots, *caches)


class StepGraph(nn.Module):
    def __init__(self, talker: nn.Module):
        super().__init__()
        self.talker = talker

    def forward(self, frame, speakers, aligned, positions, mask, slot, *caches):
        (logits, stop, h), new = _run_with_cache(
            self.talker, caches, lambda: decode_step(self.talker, frame, speakers, aligned, positions, mask, slot))
        return (logits, stop, h, *new)


class DepthGraph(nn.Module):
    """``DepthDecoder.logits(h, codes)[:, -1]`` for any number k of known codebooks: the per-codebook embedding
    tables and heads stacked and indexed by position, so that k is a dimension of the graph, not a loop."""

    def __init__(self, talker: nn.Module):
        super().__init__()
        self.depth = talker.depth
        self.register_buffer("tables", torch.stack([e.weight for e in self.depth.code_emb]))  # (n_q - 1, K, D)
        self.register_buffer("heads", torch.stack([h.weight for h in self.depth.heads]))  # (n_q - 1, K, D)

    def forward(self, h, codes):  # h (M, D), codes (M, k) -> logits of codebook k (M, K)
        K, D = self.tables.shape[1:]
        index = torch.cumsum(torch.ones_like(codes[0]), 0) - 1  # (k,) 0 .. k-1
        x = self.tables.reshape(-1, D)[codes + index * K]  # (M, k, D)
        first = self.depth.in_proj(h)[:, None] + x[:, :1]
        x = torch.cat([first, x[:, 1:]], dim=1)
        out = self.depth.transformer(x, index.expand(codes.shape[0], -1), None)  # causal along the codebooks
        return out[:, -1] @ self.heads.index_select(0, index[-1:])[0].T


class CodecGraph(nn.Module):
    def __init__(self, codec: nn.Module, expected: bool):
        super().__init__()
        self.codec, self.expected = codec, expected

    def forward(self, x):
        return self.codec.decode_expected(x) if self.expected else self.codec.decode(x)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            axes: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)


def _cache_names(n_layers: int, prefix: tuple[str, str]) -> list[str]:
    return [f"{prefix[j]}{i}" for i in range(n_layers) for j in (0, 1)]


@torch.no_grad()
def export_onnx(bundle, out_dir: str | Path, vocoder: nn.Module | None = None) -> Path:
    """A loaded TalkerBundle (``muomni.load.load_talker``) and optionally a HiFi-GAN generator -> the folder."""
    talker, codec = bundle.model.eval().cpu(), bundle.codec.eval().cpu()
    if talker.cfg.arch != "ar":
        raise ValueError(f"ONNX export covers the autoregressive Talker; this one is '{talker.cfg.arch}'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with exportable():
        graphs = _export_talker(talker, out)
        graphs.update(_export_codec(codec, talker.cfg, out))
    if vocoder is not None:
        _export(vocoder.eval().cpu(), (torch.zeros(1, 20, N_MELS),), out / "vocoder.onnx", ["mel"], ["wav"],
                {"mel": {1: "frames"}, "wav": {1: "samples"}})
        graphs["vocoder"] = "vocoder.onnx"
    np.save(out / "mel_basis.npy", mel_basis("cpu", torch.float64).numpy())
    (out / FRONTEND).write_text(json.dumps(_frontend(bundle, graphs, vocoder), indent=1))
    return out


def _export_talker(talker: nn.Module, out: Path) -> dict[str, str]:
    """The Talker's graphs (text encoder, aligner, prefill, step, depth decoder), traced on a 7-token text
    -> {graph: file name}."""
    cfg, N = talker.cfg, 7
    text, lens, spk = torch.randint(2, cfg.vocab_size, (1, N)), torch.tensor([N]), torch.zeros(1, dtype=torch.long)
    seq = {0: "batch", 1: "tokens"}
    _export(TextEncoderGraph(talker), (text, lens, spk), out / "text_encoder.onnx",
            ["text", "text_lens", "speakers"], ["states", "durations"],
            {"text": seq, "states": seq, "durations": seq})
    graphs = {"text_encoder": "text_encoder.onnx"}
    states = talker.encode_text(text, lens, spk)  # (1, N, D)
    if talker.aligner is not None:
        n_sub = 3 * cfg.sub_frames  # three code frames' sub-frames, spread over the N tokens
        path = torch.zeros(1, N, n_sub)
        path[0, torch.arange(n_sub) * N // n_sub, torch.arange(n_sub)] = 1
        _export(AlignGraph(talker), (states, path, torch.tensor([3])), out / "align.onnx",
                ["states", "path", "n_frames"], ["aligned"],
                {"states": seq, "path": {1: "tokens", 2: "sub_frames"}, "aligned": {1: "positions"}})
        graphs["align"] = "align.onnx"
    graphs.update(_export_decoder(talker, states, spk, out))
    if talker.depth is not None:
        _export(DepthGraph(talker), (torch.randn(1, cfg.d_model), torch.zeros(1, 2, dtype=torch.long)),
                out / "depth.onnx", ["hidden", "codes"], ["logits"],
                {"hidden": {0: "batch"}, "codes": {0: "batch", 1: "known"}, "logits": {0: "batch"}})
        graphs["depth"] = "depth.onnx"
    return graphs


def _export_decoder(talker: nn.Module, states: torch.Tensor, spk: torch.Tensor, out: Path) -> dict[str, str]:
    """The decoder's two graphs over an explicit KV cache of ``CACHE_MULTIPLE`` slots: prefill (the text prefix
    and the start position at once) and step (one frame) -> {graph: file name}."""
    cfg, S = talker.cfg, CACHE_MULTIPLE
    n_layers, N = len(_attentions(talker)), states.shape[1]
    caches = tuple(torch.zeros(1, cfg.n_kv_heads, S, cfg.head_dim) for _ in range(2 * n_layers))
    cache_in = _cache_names(n_layers, ("cache_k", "cache_v"))
    cache_out = _cache_names(n_layers, ("present_k", "present_v"))
    cache_axes = {name: {2: "cache"} for name in cache_in + cache_out}
    aligned0 = torch.zeros(1, 1, cfg.d_model)
    L = N + 1 if cfg.text_prefix else 1
    positions = torch.arange(L)[None]
    mask = torch.zeros(1, 1, L, S, dtype=torch.bool)
    mask[..., :L] = torch.ones(L, L, dtype=torch.bool).tril()
    lead = ([states] if cfg.text_prefix else [])
    names = (["prefix"] if cfg.text_prefix else []) + ["speakers", "aligned0", "positions", "mask", "slots"]
    _export(PrefillGraph(talker) if cfg.text_prefix else PrefillNoTextGraph(talker),
            (*lead, spk, aligned0, positions, mask, torch.arange(L), *caches), out / "prefill.onnx",
            names + cache_in, ["hidden", "logits", "stop"] + cache_out,
            {"prefix": {0: "batch", 1: "tokens"}, "positions": {1: "length"}, "mask": {2: "length", 3: "cache"},
             "slots": {0: "length"}, **cache_axes})
    frame = torch.zeros(1, cfg.n_q, dtype=torch.long)
    step_mask = torch.zeros(1, 1, 1, S, dtype=torch.bool)
    step_mask[..., :L + 1] = True
    _export(StepGraph(talker), (frame, spk, aligned0, torch.tensor([[L]]), step_mask, torch.tensor([L]), *caches),
            out / "step.onnx", ["frame", "speakers", "aligned", "positions", "mask", "slot"] + cache_in,
            ["logits", "stop", "hidden"] + cache_out, {"mask": {3: "cache"}, **cache_axes})
    return {"prefill": "prefill.onnx", "step": "step.onnx"}


def _export_codec(codec: nn.Module, cfg, out: Path) -> dict[str, str]:
    """The codec decoder twice: from codes, and from the Talker's distributions over them (its expected code
    vectors) -> {graph: file name}. cfg: the Talker's, whose n_q and codebook_size the codec shares."""
    T = 6
    _export(CodecGraph(codec, False), (torch.zeros(1, T, cfg.n_q, dtype=torch.long),),
            out / "codec_decode.onnx", ["codes"], ["mel"], {"codes": {1: "frames"}, "mel": {1: "mel_frames"}})
    _export(CodecGraph(codec, True), (torch.full((1, T, cfg.n_q, cfg.codebook_size), 1 / cfg.codebook_size),),
            out / "codec_expected.onnx", ["probs"], ["mel"], {"probs": {1: "frames"}, "mel": {1: "mel_frames"}})
    return {"codec_decode": "codec_decode.onnx", "codec_expected": "codec_expected.onnx"}


def _frontend(bundle, graphs: dict[str, str], vocoder: nn.Module | None) -> dict:
    """frontend.json: what the runtime needs besides the graphs: vocabulary, speakers, audio settings, the
    Talker's sizes and lengths, the codec's and vocoder's configs."""
    cfg = bundle.model.cfg
    return {
        "format": 1, "graphs": graphs, "opset": OPSET,
        "text": bundle.text.to_dict(), "speakers": list(bundle.speakers),
        "audio": {"sample_rate": SAMPLE_RATE, "hop_length": HOP_LENGTH, "n_fft": N_FFT, "win_length": WIN_LENGTH,
                  "n_mels": N_MELS, "fmin": FMIN, "fmax": FMAX, "log_floor": LOG_FLOOR},
        "talker": {**{k: getattr(cfg, k) for k in ("n_q", "codebook_size", "d_model", "n_kv_heads", "head_dim",
                                                    "n_speakers", "text_prefix", "duration_path", "sub_frames",
                                                    "max_text", "max_frames", "n_code_heads")},
                   "n_layers": len(_attentions(bundle.model)), "depth": bundle.model.depth is not None,
                   "cache_multiple": CACHE_MULTIPLE, "frame_limit": frame_limit(cfg),
                   "step": bundle.step},
        "codec": {**config_to_dict(bundle.codec.cfg), "frame_rate": bundle.codec.cfg.frame_rate},
        "vocoder": config_to_dict(vocoder.cfg) if vocoder is not None else None,
    }
