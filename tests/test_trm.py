"""TRM Talker invariants on tiny models (CPU, seconds): padding-invariant loss, codebook weights, the length
loss on true lengths only, gradients through the last cycle only, one-pass generation, and the whole
train -> resume -> checkpoint -> infer_tts chain through the same scripts as the autoregressive Talker."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from muomni.models.talker import TRMTalker, build_talker, codebook_weights
from muomni.models.talker import talker_config as TalkerConfig  # a config of either family from flat keys
from muomni.models.talker.common import random_batch


def tiny(**kw) -> TRMTalker:
    torch.manual_seed(0)
    args = dict(arch="trm", vocab_size=20, n_speakers=2, n_q=3, codebook_size=16, d_model=32, n_layers=1, n_heads=4,
                n_kv_heads=2, ffn_dim=64, encoder_layers=1, H_cycles=2, L_cycles=2, max_frames=16)
    return build_talker(TalkerConfig(**{**args, **kw}))


def toy_batch(n_q: int = 3, K: int = 16, seed: int = 0) -> dict:
    b = random_batch(torch.Generator().manual_seed(seed), 3, 7, 10, vocab_size=20, n_q=n_q, codebook_size=K,
                     text_lens=torch.tensor([7, 5, 3]), code_lens=torch.tensor([10, 8, 6]), zero_padding=True)
    return {**b, "speakers": torch.tensor([0, 1, 0]), "ended": torch.ones(3, dtype=torch.bool)}


def test_arch_selects_the_family_and_ar_stays_default():
    assert TalkerConfig().arch == "ar"
    assert type(tiny()).__name__ == "TRMTalker"
    assert type(tiny(arch="ar")).__name__ == "Talker"
    with pytest.raises(ValueError, match="model.arch"):
        TalkerConfig(arch="diffusion")
    with pytest.raises(ValueError, match="unknown loss 'stop'"):
        TalkerConfig(arch="trm", n_q=2, loss_weights={"stop": 1.0})


@pytest.mark.parametrize("shared", [False, True], ids=["separate_heads", "shared_heads"])
def test_padding_frames_with_any_ids_never_change_the_loss(shared):
    model = tiny(share_output_heads=shared).eval()
    assert len(model.heads) == (1 if shared else 3)
    b = toy_batch()
    g = torch.Generator().manual_seed(5)
    padded = {**b, "text": F.pad(b["text"], (0, 4), value=7),
              "codes": torch.cat([b["codes"], torch.randint(0, 16, (3, 6, 3), generator=g)], dim=1)}
    with torch.no_grad():
        a, c = model(**b), model(**padded)
    for name in a.losses:
        torch.testing.assert_close(a.losses[name], c.losses[name], atol=1e-5, rtol=1e-5)
    for i, n in enumerate(b["code_lens"].tolist()):
        torch.testing.assert_close(a.logits[i, :n], c.logits[i, :n], atol=1e-5, rtol=1e-5)
    assert all(int(a.counts[f"c{k}"]) == int(b["code_lens"].sum()) for k in range(3))


def test_code_id_zero_is_a_target_not_padding():
    model = tiny().eval()
    b = {**toy_batch(), "codes": torch.zeros(3, 10, 3, dtype=torch.long)}  # every real frame is code 0
    with torch.no_grad():
        out = model(**b)
    ok = torch.arange(10)[None] < b["code_lens"][:, None]
    expected = -out.logits[..., 0, :].log_softmax(-1)[..., 0][ok].mean()
    torch.testing.assert_close(out.losses["c0"], expected)
    assert float(out.losses["c0"]) > 0.5


def test_codebook_weights_and_the_weighted_total():
    raw = [2.0, 1.5, 1.5 - 0.5 / 6, 1.5 - 1 / 6, 1.25, 1.5 - 2 / 6, 1.5 - 2.5 / 6, 1.0, 1.0, 1.0]
    for n_q in (1, 2, 8, 10):
        w = codebook_weights(n_q)
        mean = sum(raw[:n_q]) / n_q
        assert w == pytest.approx([r / mean for r in raw[:n_q]]) and sum(w) / n_q == pytest.approx(1.0)
    w8 = codebook_weights(8)
    assert w8[0] / w8[7] == pytest.approx(2.0) and w8[1] / w8[7] == pytest.approx(1.5)
    model = tiny(n_q=8).eval()
    assert [model.cfg.weight(f"c{k}") for k in range(8)] == pytest.approx(w8)
    assert TalkerConfig(n_q=8).weight("c0") == 1.0  # the autoregressive Talker keeps unweighted codebooks
    assert TalkerConfig(arch="trm", n_q=8, loss_weights={"c0": 0.5}).weight("c0") == pytest.approx(0.5 * w8[0])
    with torch.no_grad():
        out = model(**toy_batch(n_q=8))
    total = sum(w8[k] * out.losses[f"c{k}"] for k in range(8)) + out.losses["length"]
    torch.testing.assert_close(out.losses["loss"], total)
    assert set(out.counts) == set(out.losses) - {"loss"}


def test_length_loss_uses_true_lengths_of_ended_items_only():
    model = tiny().eval()
    b = toy_batch()
    truncated = {**b, "ended": torch.tensor([True, False, True])}
    changed = {**truncated, "code_lens": torch.tensor([10, 3, 6])}  # the truncated item's length is meaningless
    with torch.no_grad():
        full, a, c = model(**b), model(**truncated), model(**changed)
    torch.testing.assert_close(a.losses["length"], c.losses["length"])
    assert int(a.counts["length"]) == 2 and int(full.counts["length"]) == 3
    keep = torch.tensor([0, 2])
    expected = (a.lengths[keep].log() - b["code_lens"][keep].float().log()).square().mean()
    torch.testing.assert_close(a.losses["length"], expected)
    assert not torch.allclose(full.losses["length"], a.losses["length"])
    with torch.no_grad():
        none = model(**{**b, "ended": torch.zeros(3, dtype=torch.bool)})
    assert float(none.losses["length"]) == 0.0 and int(none.counts["length"]) == 0


def _saved_bytes(model: TRMTalker, batch: dict) -> tuple[int, int]:
    """(count, bytes) of the tensors autograd saves for backward during one training forward."""
    seen = []

    def pack(t):
        seen.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch).losses["loss"].backward()
    return len(seen), sum(seen)


def test_gradients_flow_through_the_last_cycle_only():
    b = toy_batch()
    saved = {h: _saved_bytes(tiny(H_cycles=h).train(), b) for h in (2, 5)}
    assert saved[2] == saved[5], saved  # memory does not grow with the cycle count
    assert _saved_bytes(tiny(H_cycles=2, L_cycles=4).train(), b)[1] > saved[2][1]  # but it does with L_cycles
    model = tiny(H_cycles=3).train()
    model(**b).losses["loss"].backward()
    # the same weights, earlier cycles run by hand and detached: identical gradients
    twin = tiny(H_cycles=3).train()
    memory = twin.encode_text(b["text"], b["text_lens"], b["speakers"])
    ctx = twin.context(memory, b["text_lens"], b["code_lens"], 10)
    y, z = twin.y_init.expand(3, 10, -1), twin.z_init.expand(3, 10, -1)
    for _ in range(2):
        y, z = (s.detach() for s in twin.cycle(y, z, ctx))
    y = twin.cycle(y, z, ctx)[0]
    logits = twin.predict(y)
    ok = torch.arange(10)[None] < b["code_lens"][:, None]
    text_ok = torch.arange(7)[None] < b["text_lens"][:, None]
    loss = sum(twin.cfg.weight(f"c{k}") * F.cross_entropy(logits[..., k, :][ok], b["codes"][..., k][ok])
               for k in range(3))
    loss = loss + (twin.length(memory, text_ok).log() - b["code_lens"].float().log()).square().mean()
    loss.backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert not model.y_init.requires_grad and model.y_init.grad is None
    one = tiny(H_cycles=1).train()
    one(**b).losses["loss"].backward()
    assert one.y_init.grad is not None and one.z_init.grad is not None  # learned when the gradient reaches them
    with torch.no_grad():
        two = model.eval()(**b).logits
        three = tiny(H_cycles=4).eval()(**b).logits
    assert not torch.allclose(two, three)  # the earlier cycles do run


def test_generation_one_pass_predicted_length_in_range_and_seedable():
    model = tiny().eval()
    b = toy_batch()
    gen = lambda seed, **kw: model.generate(b["text"], b["text_lens"], b["speakers"], temperature=1.0,  # noqa: E731
                                            generator=torch.Generator().manual_seed(seed), **kw)
    codes, lengths = gen(3)
    with torch.no_grad():
        predicted = model(**b).lengths
    limit = 3 * 64  # the default limit: 3 x max(max_frames, 64)
    assert torch.equal(lengths, torch.round(predicted).long().clamp(1, limit))
    assert codes.shape == (3, int(lengths.max()), 3) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 16
    for i, n in enumerate(lengths.tolist()):
        assert not codes[i, n:].any()
    assert torch.equal(gen(3)[0], codes) and not torch.equal(gen(4)[0], codes)
    assert int(gen(3, max_frames=2)[1].max()) <= 2
    dur = torch.tensor([[5, 5, 5, 5, 5, 5, 5], [10, 10, 10, 10, 11, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
    assert gen(3, durations=dur)[1].tolist() == [7, 11, 1]
    greedy = model.generate(b["text"], b["text_lens"], b["speakers"], temperature=0.0)[0]
    assert torch.equal(gen(9, top_k=1)[0], greedy)
    probs = model.generate(b["text"], b["text_lens"], b["speakers"], temperature=0.0, return_probs=True)[2]
    assert probs.shape == (*greedy.shape, 16)
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(probs[i, :n].argmax(-1), greedy[i, :n])  # the distributions the picks come from
    alone = model.generate(b["text"][2:, :3], b["text_lens"][2:], b["speakers"][2:], temperature=0.0)[0]
    n = int(lengths[2])
    assert torch.equal(alone[0, :n], greedy[2, :n])  # a batched item decodes as it would alone


@pytest.mark.timeout(420)  # 34-87 s measured on 2 cores under a load of 5-8
def test_trm_learns_text_dependent_codes():
    """The code of frame t is the text token at the same fraction of the utterance (text lengths vary):
    only reachable through the text cross-attention and the alignment the positions give."""
    model = tiny(n_q=1, H_cycles=2, L_cycles=1, vocab_size=8, codebook_size=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        text_lens = torch.randint(2, 5, (16,), generator=g)
        text = torch.randint(0, 8, (16, 4), generator=g) * (torch.arange(4) < text_lens[:, None])
        code_lens = 2 * text_lens
        codes = text.repeat_interleave(2, dim=1)[..., None]  # each token spoken for two frames
        out = model(text, text_lens, codes, code_lens, torch.zeros(16, dtype=torch.long))
        opt.zero_grad()
        out.losses["loss"].backward()
        opt.step()
    assert float(out.metrics["c0_accuracy"]) > 0.9, out.metrics


# ---------------------------------------------------------------- end to end (flite corpus)


@pytest.fixture(scope="module")
def trm_run(tiny_talker) -> dict:
    import train_talker

    args = [a if a != "configs/talker_tiny.json" else "configs/talker_trm_tiny.json" for a in tiny_talker["args"]]
    args = [a if a != "train.run_name=run" else "train.run_name=trm" for a in args]
    args += ["model.H_cycles=2", "model.L_cycles=2", "model.n_layers=1"]
    train_talker.main(args)
    return {"args": args, "dir": tiny_talker["tmp"] / "trm"}


def test_train_two_steps_resume_and_synthesize(trm_run, tmp_path):
    import infer_tts
    import train_talker
    from muomni.load import load_talker

    run = trm_run["dir"]
    assert (run / "step_00000002.pt").is_file() and (run / "samples" / "step_00000002" / "00.wav").is_file()
    assert json.loads((run / "config.json").read_text())["model"]["arch"] == "trm"
    train_talker.main(trm_run["args"] + ["train.steps=3", "--resume"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] != "speech"]  # the speech check has its own test file
    assert steps.count(2) == 2 and records[-1]["step"] == 3
    for key in ("loss", "length", "c0_accuracy", "c1_accuracy", "length_error", "perplexity", "frames_per_s"):
        assert key in records[0]
    bundle = load_talker(run / "step_00000003.pt")
    assert isinstance(bundle.model, TRMTalker) and bundle.step == 3 and bundle.model.cfg.H_cycles == 2
    out = tmp_path / "hello.wav"
    assert infer_tts.main(["--talker", str(run / "step_00000003.pt"), "--text", "Hello there.", "--out", str(out),
                           "--max-seconds", "2", "--griffin-lim-iters", "4"]) == 0
    item = json.loads(out.with_suffix(".json").read_text())["items"][0]
    assert out.stat().st_size > 44 and 0 < item["duration"] <= 2.0 + 0.08
