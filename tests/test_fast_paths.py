"""The fast paths equal the formulas they replace: real-valued RoPE, fused-kernel attention, the
vectorised alignment search, the fixed-shape depth decoder picks, the reused KV cache and the
compiled decoding step that does not recompile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from muomni.models.layers import apply_rope, attend, rope_angles
from muomni.models.talker import Talker, TalkerConfig
from muomni.models.talker.aligner import monotonic_alignment_search
from muomni.models.talker.generate import cache_pool, generate


def rope_reference(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """The complex (torch.polar) rotary embedding the Talker used before the real-valued one."""
    hd = x.shape[-1]
    freqs = 1.0 / base ** (torch.arange(0, hd, 2).float() / hd)
    angles = positions.float()[..., None] * freqs
    rope = torch.polar(torch.ones_like(angles), angles)  # (B, L, hd/2) complex
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rope[:, None]).flatten(-2).type_as(x)


def mas_reference(logp, x_lens, y_lens, free_end=None):
    """The per-frame monotonic alignment search the vectorised one replaced (Glow-TTS)."""
    B, N, M = logp.shape
    neg = -1e9
    tok_ok = torch.arange(N)[None] < x_lens[:, None]
    logp = logp.float().masked_fill(~tok_ok[..., None], neg)
    q = torch.full((B, N), neg)
    q[:, 0] = logp[:, 0, 0]
    advanced = torch.zeros(B, N, M, dtype=torch.bool)
    last = q.clone()
    pad = torch.full((B, 1), neg)
    for j in range(1, M):
        prev = torch.cat([pad, q[:, :-1]], dim=1)
        advanced[:, :, j] = prev > q
        q = torch.maximum(q, prev) + logp[:, :, j]
        last = torch.where((y_lens - 1 == j)[:, None], q, last)
    end = x_lens - 1
    if free_end is not None:
        end = torch.where(free_end, last.masked_fill(~tok_ok, 2 * neg).argmax(1), end)
    path = torch.zeros(B, N, M)
    i, rows = end.clone(), torch.arange(B)
    for j in range(M - 1, -1, -1):
        active = j < y_lens
        path[rows[active], i[active], j] = 1.0
        if j > 0:
            i = (i - (advanced[rows, i, j] & active).long()).clamp(min=0)
    return path


def test_real_rope_equals_the_complex_form():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 17, 64)
    positions = torch.randint(0, 500, (2, 17))
    ref = rope_reference(x, positions)
    assert torch.allclose(apply_rope(x, rope_angles(positions, 64)), ref, atol=1e-5, rtol=1e-5)
    half = apply_rope(x.to(torch.bfloat16), rope_angles(positions, 64))
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), ref, atol=0.1)


@pytest.mark.parametrize("kv", [1, 3], ids=["gqa", "mha"])
@pytest.mark.parametrize("kind", ["padding", "causal", "none"], ids=["bool-mask", "causal-mask", "is-causal"])
def test_attention_equals_enable_gqa_with_a_boolean_mask(kv, kind):
    torch.manual_seed(1)
    B, H, L, hd = 3, 3, 11, 16
    q, k, v = torch.randn(B, H, L, hd), torch.randn(B, kv, L, hd), torch.randn(B, kv, L, hd)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    if kind == "padding":
        mask = (torch.rand(B, 1, L, L) < 0.6) | torch.eye(L, dtype=torch.bool)
    else:
        mask = causal[None, None].expand(B, 1, L, L)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv != H)
    got = attend(q, k, v, None if kind == "none" else mask)
    assert torch.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("kind", ["padding", "none"], ids=["bool-mask", "is-causal"])
def test_attention_under_cpu_bf16_autocast_is_computed_in_float32(kind):
    """bf16 inputs under CPU autocast: the result is bf16, and exactly the float32 attention of the same
    (bf16-valued) inputs rounded once, not the bf16 kernel's (which rounds inside and differs)."""
    torch.manual_seed(3)
    B, H, L, hd = 2, 3, 9, 16
    q, k, v = (torch.randn(B, n, L, hd).to(torch.bfloat16) for n in (H, 1, 1))
    mask = None if kind == "none" else (torch.rand(B, 1, L, L) < 0.6) | torch.eye(L, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attend(q, k, v, mask)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, attend(q.float(), k.float(), v.float(), mask).to(torch.bfloat16))
    rep = (q, k.repeat_interleave(H, 1), v.repeat_interleave(H, 1))
    in_bf16 = F.scaled_dot_product_attention(*rep, is_causal=True) if mask is None else \
        F.scaled_dot_product_attention(*rep, attn_mask=mask)
    assert not torch.equal(got, in_bf16)  # the bf16 kernel's result: what the float32 path replaces


@pytest.mark.parametrize("free", [False, True], ids=["fixed-end", "free-end"])
def test_vectorised_alignment_search_equals_the_reference(free):
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        B, N, M = 6, 13, 70
        logp = torch.randn(B, N, M, generator=g) * 3
        x_lens = torch.randint(1, N + 1, (B,), generator=g)
        y_lens = torch.maximum(torch.randint(1, M + 1, (B,), generator=g), x_lens)  # every token >= 1 frame
        x_lens[0], y_lens[0] = N, M
        free_end = torch.rand(B, generator=g) < 0.5 if free else None
        ref = mas_reference(logp, x_lens, y_lens, free_end)
        got = monotonic_alignment_search(logp, x_lens, y_lens, free_end)
        assert torch.equal(got, ref)
        assert torch.equal(got.sum(1), (torch.arange(M)[None] < y_lens[:, None]).float())  # one token per frame


def tiny(depth: int = 0, **kw) -> Talker:
    torch.manual_seed(0)
    return Talker(TalkerConfig(vocab_size=20, n_q=3, codebook_size=16, d_model=32, n_layers=2, n_heads=4,
                               n_kv_heads=2, ffn_dim=64, encoder_layers=1, depth_layers=depth, max_frames=12,
                               **kw)).eval()


def test_depth_decoder_trains_on_valid_frames_only_with_a_fixed_count():
    model = tiny(depth=1, decoder_fraction=0.25)
    B, Fr = 4, 12
    h = torch.randn(B, Fr, 32)
    codes = torch.randint(0, 16, (B, Fr, 3))
    frame_ok = torch.arange(Fr)[None] < torch.tensor([12, 5, 1, 8])[:, None]
    idx, weight = model.depth.pick(frame_ok)
    assert idx.shape == (12,)  # ceil(0.25 x 4 x 12), whatever the lengths
    assert bool(frame_ok.flatten()[idx][weight > 0].all()) and int(weight.sum()) == 12
    only_item_2 = frame_ok & (torch.arange(B)[:, None] == 2)
    idx, weight = model.depth.pick(only_item_2)
    assert int(weight.sum()) == 1 and int(idx[weight > 0][0]) == 2 * Fr  # the one valid frame, once
    ce, acc, count = model.depth.train().loss(h, codes, only_item_2)  # training: the random pick
    assert int(count) == 1
    logits = model.depth.logits(h[2, :1], codes[2, :1, :-1])  # the same frame alone
    assert torch.allclose(ce[0], F.cross_entropy(logits[:, 0], codes[2, :1, 1]), atol=1e-6)


def test_kv_cache_is_allocated_once_and_reused():
    model = tiny()
    text, lens, spk = torch.randint(2, 20, (2, 7)), torch.tensor([7, 4]), torch.zeros(2, dtype=torch.long)
    dur = torch.full((2, 7), 4)
    first = generate(model, text, lens, spk, temperature=0.0, durations=dur)
    buffers = [m.k_cache.data_ptr() for m in cache_pool(model).caches]
    second = generate(model, text[:, :5], lens.clamp(max=5), spk, temperature=0.0, durations=dur[:, :5])
    assert [m.k_cache.data_ptr() for m in cache_pool(model).caches] == buffers
    assert torch.equal(generate(model, text, lens, spk, temperature=0.0, durations=dur)[0], first[0])
    assert second[0].shape[1] < first[0].shape[1]


def test_second_compiled_generate_does_not_recompile():
    """The first compiled call traces the decoding step; a second call of the same shapes, and another
    sentence of the same batch size, reuse it. Recompilation is decided by dynamo's guards whatever the
    backend, so the graphs are counted with aot_eager (inductor takes minutes on a small CPU)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny()
    text, lens, spk = torch.randint(2, 20, (2, 7)), torch.tensor([7, 4]), torch.zeros(2, dtype=torch.long)
    dur = torch.full((2, 7), 4)
    eager = generate(model, text, lens, spk, temperature=0.0, durations=dur)
    first = generate(model, text, lens, spk, temperature=0.0, durations=dur, compile="aot_eager")
    assert counters["stats"]["unique_graphs"] >= 1  # the first call compiled the decoding step
    counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        second = generate(model, text, lens, spk, temperature=0.0, durations=dur, compile="aot_eager")
        other = torch.randint(2, 20, (2, 6))  # another sentence of the same batch size
        generate(model, other, torch.tensor([6, 5]), spk, temperature=0.0, durations=dur[:, :6], compile="aot_eager")
    assert counters["stats"]["unique_graphs"] == 0 and not counters["recompiles"]
    assert torch.equal(first[0], eager[0]) and torch.equal(second[0], eager[0])
