"""Generation of the autoregressive Talker with a KV cache (gpt-fast style): prefill, decode_one, generate.

``model`` is an autoregressive ``Talker`` (autoregressive.py), which calls ``generate`` from its method; sampling
is ``muomni.models.sampling``.

Cache slots: text tokens 0..N-1 (padded to the batch's longest text), the start position at N,
audio position t (input: frame t-1) at N + t. Padded text slots stay masked; rotary positions skip
them, so a batched item decodes exactly as it would alone.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from muomni.models.layers import Attention, KVCache
from muomni.models.sampling import sample
from muomni.models.talker.aligner import aligned_states, durations_from_prediction, durations_to_path
from muomni.models.talker.common import frame_limit

CACHE_MULTIPLE = 256  # generate() rounds its cache length up to this: later sentences reuse one shape
_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its CachePool


class CachePool:
    """A model's KV caches, allocated once per (batch, length, dtype, device) and reused by later calls,
    so that a compiled (CUDA-graph) decoding step sees the same buffers every time. Kept outside the
    module tree (no buffers for DDP, checkpoints or ``.to()`` to see); the newest ``keep`` shapes stay."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self.shapes: dict[tuple, list[KVCache]] = {}
        self.caches: list[KVCache] = []  # the ones attached last

    def get(self, attns: list[Attention], batch: int, max_seq: int, dtype, device) -> list[KVCache]:
        key = (batch, max_seq, dtype, torch.device(device))
        if key not in self.shapes:
            while len(self.shapes) >= self.keep:
                self.shapes.pop(next(iter(self.shapes)))
            self.shapes[key] = [KVCache(batch, a.n_kv_heads, max_seq, a.head_dim, dtype=dtype, device=device)
                                for a in attns]
        self.shapes[key] = self.shapes.pop(key)  # most recently used last
        self.caches = self.shapes[key]
        return self.caches


def cache_pool(model: nn.Module) -> CachePool:
    if model not in _POOLS:
        _POOLS[model] = CachePool()
    return _POOLS[model]


@contextmanager
def kv_caches(model: nn.Module, batch: int, max_seq: int):
    """Attach the model's (reused) caches (batch, max_seq) to every decoder attention for the block.

    Stale keys from an earlier call need no clearing: the mask hides every slot not written by this one.
    """
    p = next(model.parameters())
    attns = [m for m in model.decoder.modules() if isinstance(m, Attention)]
    with _attached(model, cache_pool(model).get(attns, batch, max_seq, p.dtype, p.device)):
        yield


@dataclass
class GenState:
    text_lens: torch.Tensor  # (B,)
    n_text: int  # text slots in the cache (0 without a text prefix)
    speakers: torch.Tensor  # (B,)
    aligned: torch.Tensor | None  # (B, n_frames.max() + 1, D) on the duration path
    n_frames: torch.Tensor | None  # (B,) frame counts from the durations
    durations: torch.Tensor | None  # (B, N)
    key_ok: torch.Tensor  # (B, max_seq) bool: filled, non-padding slots


def prefill(model: nn.Module, text, text_lens, speakers, max_seq: int, durations: torch.Tensor | None = None,
            duration_scale: float = 1.0):
    """Run the text prefix and the start position through the cached decoder.

    text (B, N), text_lens (B,), speakers (B,); durations (B, N) sub-frames override the predictor.
    -> (logits (B, n_code_heads, K) and stop logits (B,) for frame 0, hidden (B, D), GenState)
    """
    cfg = model.cfg
    B, N = text.shape
    prefix = model.encode_text(text, text_lens, speakers)  # (B, N, D)
    aligned = n_frames = None
    if model.aligner is not None:
        S = cfg.sub_frames
        if durations is None:
            pred_dur = model.aligner.predict_durations(prefix, text_lens, speakers)
            durations, n_frames = durations_from_prediction(pred_dur, text_lens, S, duration_scale)
        else:
            n_frames = (durations.sum(1) + S - 1) // S
        n_max = int(n_frames.max())
        path = durations_to_path(durations, n_max * S)
        aligned = aligned_states(model.aligner, prefix, path, n_frames, n_max + 1)
    n_text = N if cfg.text_prefix else 0
    x = model.audio_inputs(text.new_zeros(B, 0, cfg.n_q), speakers, None if aligned is None else aligned[:, :1])
    if n_text:
        x = torch.cat([prefix, x], dim=1)  # (B, N + 1, D)
    positions, mask = model.layout(text_lens, N, 1)
    L = x.shape[1]
    key_ok = torch.zeros(B, max_seq, dtype=torch.bool, device=text.device)
    key_ok[:, :L] = mask[:, 0, -1]  # what the start position sees = the valid text slots + itself
    full_mask = torch.zeros(B, 1, L, max_seq, dtype=torch.bool, device=text.device)
    full_mask[..., :L] = mask
    h = model.decoder(x, positions, full_mask, torch.arange(L, device=text.device))[:, -1]  # (B, D)
    logits, stop = model.predict(h[:, None])
    state = GenState(text_lens, n_text, speakers, aligned, n_frames, durations, key_ok)
    return logits[:, 0], stop[:, 0], h, state


def decode_one(model: nn.Module, state: GenState, frame: torch.Tensor, t: int | torch.Tensor, step=None):
    """Feed frame t-1 (B, n_q) at audio position t -> logits (B, n_code_heads, K), stop (B,), hidden (B, D).

    ``step`` is ``decode_step`` or its compiled form (``compiled_decode_step``). The position goes in
    as a tensor, so a compiled step is traced once and replayed at every position.
    """
    pos = torch.as_tensor(t, device=frame.device).reshape(1)  # (1,)
    slot = pos + state.n_text  # (1,) cache slot
    state.key_ok.index_fill_(1, slot, True)  # outside the compiled step: it mutates no input
    aligned = None
    if state.aligned is not None:
        aligned = state.aligned.index_select(1, pos.clamp(max=state.aligned.shape[1] - 1))  # (B, 1, D)
    base = state.text_lens if state.n_text else torch.zeros_like(state.text_lens)
    mask = state.key_ok[:, None, None]  # (B, 1, 1, max_seq); later slots are still False
    return (step or decode_step)(model, frame, state.speakers, aligned, base[:, None] + pos, mask, slot)


def decode_step(model: nn.Module, frame, speakers, aligned, positions, mask, slot):
    """The fixed-shape core of one decoding step: frame (B, n_q), speakers (B,), aligned (B, 1, D) or None,
    positions (B, 1), mask (B, 1, 1, max_seq), slot (1,) -> logits (B, n_code_heads, K), stop (B,), hidden (B, D)."""
    x = model.audio_inputs(frame[:, None], speakers, None)[:, 1:]  # (B, 1, D): drop the start
    if aligned is not None:
        x = x + aligned
    h = model.decoder(x, positions, mask, slot)[:, -1]
    logits, stop = model.predict(h[:, None])
    return logits[:, 0], stop[:, 0], h


@cache
def compiled_decode_step(device_type: str, backend: str = "inductor"):
    """decode_step under torch.compile: CUDA graphs ("reduce-overhead", the KV cache buffers are static)
    on CUDA, the default mode elsewhere. Shapes are fixed by (batch, cache length), so it compiles
    once per generation shape and never per position; the reused caches (``CachePool``) and the
    rounded cache length keep later calls and later sentences on the same graph."""
    if backend != "inductor":  # e.g. aot_eager: the same graphs and guards, without code generation
        return torch.compile(decode_step, backend=backend)
    return torch.compile(decode_step, mode="reduce-overhead" if device_type == "cuda" else "default")


def pick_frame(model: nn.Module, logits, h, temperature, top_k, top_p, generator,
               probs_out: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Sample one frame (B, n_q) from the heads (and the depth decoder for codebooks 1..).

    probs_out: a list that receives the model's distribution over each codebook's codes (B, n_q, K), at
    temperature 1 whatever the sampling temperature, each codebook given the picks of the ones before it.
    """
    first = [sample(logits[:, k], temperature, top_k, top_p, generator) for k in range(logits.shape[1])]
    if model.depth is None:
        frame, every = torch.stack(first, dim=-1), logits
    else:
        rest: list[torch.Tensor] = []
        frame = model.depth.generate(h, first[0], lambda lg: sample(lg, temperature, top_k, top_p, generator),
                                     rest if probs_out is not None else None)
        every = torch.stack([logits[:, 0]] + rest, dim=1) if probs_out is not None else None
    if probs_out is not None:
        probs_out.append(torch.softmax(every.float(), dim=-1))
    return frame


def _plan(model: nn.Module, text, text_lens, speakers, max_frames, durations, duration_scale):
    """-> (the frame limit, the cache length, durations): on the duration path without max_frames the durations
    set the length, so the cache is sized for them (and they are predicted here, once)."""
    cfg = model.cfg
    limit = frame_limit(cfg, max_frames)
    if model.aligner is not None and not max_frames:
        enc = model.encode_text(text, text_lens, speakers)
        if durations is None:
            pred_dur = model.aligner.predict_durations(enc, text_lens, speakers)
            durations = durations_from_prediction(pred_dur, text_lens, cfg.sub_frames, duration_scale)[0]
        limit = int((durations.sum(1).max() + cfg.sub_frames - 1) // cfg.sub_frames)
    max_seq = (text.shape[1] if cfg.text_prefix else 0) + limit + 1
    max_seq = -(-max_seq // CACHE_MULTIPLE) * CACHE_MULTIPLE  # one cache shape for most sentences
    return limit, max_seq, durations


@torch.no_grad()
def generate(model: nn.Module, text: torch.Tensor, text_lens: torch.Tensor, speakers: torch.Tensor,
             max_frames: int | None = None, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, generator: torch.Generator | None = None,
             durations: torch.Tensor | None = None, duration_scale: float = 1.0, compile: bool | str = False,
             return_probs: bool = False):
    """Batched generation -> codes (B, T, n_q) long, lengths (B,) [, probs (B, T, n_q, K)].

    compile: run the decoding step compiled (``compiled_decode_step``; CUDA graphs on a GPU); a string
    names another torch.compile backend than inductor.
    return_probs: also return the model's distribution over every codebook's codes at every frame
    (``pick_frame``), for the codec's ``decode_expected``.

    On the duration path the (predicted or given) durations fix each item's frame count, capped by
    max_frames when given; otherwise an item ends at its first stop prediction or at max_frames
    (default: 3 x the training max_frames).
    """
    cfg = model.cfg
    B = text.shape[0]
    limit, max_seq, durations = _plan(model, text, text_lens, speakers, max_frames, durations, duration_scale)
    backend = compile if isinstance(compile, str) else "inductor"
    step = compiled_decode_step(text.device.type, backend) if compile else None
    with kv_caches(model, B, max_seq):
        logits, stop, h, state = prefill(model, text, text_lens, speakers, max_seq, durations, duration_scale)
        if state.n_frames is not None:
            lengths = state.n_frames.clamp(max=limit)
            limit = int(lengths.max())
        else:
            lengths = torch.full((B,), limit, dtype=torch.long, device=text.device)
        done = torch.zeros(B, dtype=torch.bool, device=text.device)
        frames, probs = [], [] if return_probs else None
        for t in range(limit):
            if state.n_frames is None:  # with durations, limit is the longest item: no check (host sync)
                ends = (stop > 0) & ~done
                lengths = torch.where(ends, torch.full_like(lengths, t), lengths)
                done |= ends
                if bool(done.all()):
                    break
            frame = pick_frame(model, logits, h, temperature, top_k, top_p, generator, probs)  # (B, n_q)
            frames.append(frame)
            if t + 1 < limit:
                logits, stop, h = decode_one(model, state, frame, t + 1, step)
    codes = torch.stack(frames, dim=1) if frames else text.new_zeros(B, 0, cfg.n_q)
    lengths = lengths.clamp(max=codes.shape[1])
    if not return_probs:
        return codes, lengths
    probs = torch.stack(probs, dim=1) if probs else codes.new_zeros(B, 0, cfg.n_q, cfg.codebook_size).float()
    return codes, lengths, probs


@contextmanager
def _attached(model: nn.Module, caches: list[KVCache]):
    attns = [m for m in model.decoder.modules() if isinstance(m, Attention)]
    for a, c in zip(attns, caches):
        a.kv_cache = c
    try:
        yield
    finally:
        for a in attns:
            a.kv_cache = None


def stream_frames(model: nn.Module, text: torch.Tensor, text_lens: torch.Tensor, speakers: torch.Tensor,
                  max_frames: int | None = None, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None,
                  durations: torch.Tensor | None = None, duration_scale: float = 1.0, return_probs: bool = False):
    """``generate`` for one item (text (1, N)), a frame at a time: yields each frame (n_q,) as it is picked, with
    its distributions (n_q, K) when return_probs, else None. The same steps in the same order as ``generate``
    with a batch of one, so the same frames (greedy, or sampled from the same generator).

    The stream owns its KV caches (not the model's shared pool) and attaches them only while it computes, so
    other generation may run between its frames.
    """
    if text.shape[0] != 1:
        raise ValueError(f"stream_frames decodes one text at a time, got a batch of {text.shape[0]}")
    limit, max_seq, durations = _plan(model, text, text_lens, speakers, max_frames, durations, duration_scale)
    p = next(model.parameters())
    caches = [KVCache(1, a.n_kv_heads, max_seq, a.head_dim, dtype=p.dtype, device=p.device)
              for a in model.decoder.modules() if isinstance(a, Attention)]
    with torch.no_grad(), _attached(model, caches):
        logits, stop, h, state = prefill(model, text, text_lens, speakers, max_seq, durations, duration_scale)
    if state.n_frames is not None:
        limit = int(state.n_frames.clamp(max=limit)[0])
    for t in range(limit):
        if state.n_frames is None and bool(stop[0] > 0):
            return
        probs: list[torch.Tensor] | None = [] if return_probs else None
        with torch.no_grad():
            frame = pick_frame(model, logits, h, temperature, top_k, top_p, generator, probs)  # (1, n_q)
        yield frame[0], probs[0][0] if return_probs else None
        if t + 1 < limit:
            with torch.no_grad(), _attached(model, caches):
                logits, stop, h = decode_one(model, state, frame, t + 1)
