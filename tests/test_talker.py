"""Talker invariants on tiny models (CPU, seconds): cache == full forward, causality, one-step-ahead
targets, padding-invariant loss, end-to-end training + resume, self-contained checkpoints, bad input."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from muomni.models.sampling import logits_to_probs
from muomni.models.talker import Talker, TalkerConfig
from muomni.models.talker.aligner import durations_to_path, monotonic_alignment_search
from muomni.models.talker.common import random_batch
from muomni.models.talker.generate import decode_one, generate, kv_caches, prefill

VARIANTS = {
    "duration_path": {},
    "plain_decoder": {"duration_path": False},
    "no_text_prefix": {"text_prefix": False},
    "depth_decoder": {"n_q": 3, "depth_layers": 1, "decoder_fraction": 1.0},
}


def tiny(**kw) -> Talker:
    torch.manual_seed(0)
    args = dict(vocab_size=20, n_q=2, codebook_size=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                ffn_dim=64, encoder_layers=1)
    return Talker(TalkerConfig(**{**args, **kw}))


def toy_batch(n_q: int = 2, K: int = 16, seed: int = 0):
    b = random_batch(torch.Generator().manual_seed(seed), 3, 7, 10, vocab_size=20, n_q=n_q, codebook_size=K,
                     text_lens=torch.tensor([7, 5, 3]), code_lens=torch.tensor([10, 8, 6]), zero_padding=True)
    return {**b, "speakers": torch.zeros(3, dtype=torch.long)}


@pytest.mark.parametrize("kw", VARIANTS.values(), ids=VARIANTS.keys())
def test_cached_decoding_equals_full_forward(kw):
    model = tiny(**kw).eval()
    b = toy_batch(model.cfg.n_q)
    with torch.no_grad():
        out = model(**b)
        max_seq = 7 + 10 + 1
        with kv_caches(model, 3, max_seq):
            logits, stop, _, state = prefill(model, b["text"], b["text_lens"], b["speakers"], max_seq,
                                             durations=out.durations)
            steps = [(logits, stop)]
            for t in range(1, 10):
                logits, stop, _ = decode_one(model, state, b["codes"][:, t - 1], t)
                steps.append((logits, stop))
    for t, (logits, stop) in enumerate(steps):
        ok = t < b["code_lens"]
        torch.testing.assert_close(logits[ok], out.logits[:, t][ok], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stop[ok], out.stop_logits[:, t][ok], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [{"duration_path": False}, {}], ids=["plain_decoder", "duration_path"])
def test_causal_appending_input_never_changes_earlier_outputs(kw):
    model = tiny(**kw).eval()
    b = toy_batch()
    durations = torch.tensor([[5, 5, 10, 5, 5, 10, 10], [10, 10, 5, 10, 5, 0, 0], [10, 10, 10, 0, 0, 0, 0]])
    short = {**b, "codes": b["codes"][:, :6], "code_lens": torch.full((3,), 6)}
    longer = {**b, "codes": torch.cat([b["codes"][:, :6], torch.randint(0, 16, (3, 4, 2))], 1),
              "code_lens": torch.full((3,), 10)}
    with torch.no_grad():
        a = model(**short, durations=durations)
        c = model(**longer, durations=durations)
    torch.testing.assert_close(a.logits[:, :6], c.logits[:, :6], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.stop_logits[:, :6], c.stop_logits[:, :6], atol=1e-6, rtol=1e-6)


def _train(model: Talker, make_codes, steps: int = 150) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        codes = make_codes(g)  # (8, 12, 1)
        batch = {"text": torch.full((8, 3), 5), "text_lens": torch.full((8,), 3), "codes": codes,
                 "code_lens": torch.full((8,), 12), "speakers": torch.zeros(8, dtype=torch.long)}
        out = model(**batch)
        opt.zero_grad()
        out.losses["loss"].backward()
        opt.step()
    return {k: float(v.detach()) for k, v in {**out.losses, **out.metrics}.items()}


@pytest.mark.timeout(300)  # 43-59 s measured on 2 cores under a load of 5-8
def test_targets_are_exactly_one_step_ahead():
    """Frame t = 3 * frame t-1 + 1 (mod 16) from a random first frame: learnable to ~100% only if the
    input at t is frame t-1 and the target frame t. With independent random frames nothing is
    learnable, so a leak of the target into the input would show as high accuracy there."""
    def chain(g):
        first = torch.randint(0, 16, (8, 1), generator=g)
        frames = [first]
        for _ in range(11):
            frames.append((frames[-1] * 3 + 1) % 16)
        return torch.cat(frames, 1)[..., None]

    learned = _train(tiny(n_q=1, duration_path=False), chain)
    assert learned["c0_accuracy"] > 0.88, learned  # 11 of 12 frames follow from the previous one
    noise = _train(tiny(n_q=1, duration_path=False), lambda g: torch.randint(0, 16, (8, 12, 1), generator=g), 60)
    assert noise["c0_accuracy"] < 0.3, noise


@pytest.mark.parametrize("kw", [{}, {"duration_path": False}], ids=["duration_path", "plain_decoder"])
def test_padding_does_not_change_the_loss(kw):
    model = tiny(**kw).eval()
    b = toy_batch()
    padded = {**b, "text": torch.nn.functional.pad(b["text"], (0, 5)),
              "codes": torch.nn.functional.pad(b["codes"], (0, 0, 0, 8), value=3)}
    with torch.no_grad():
        a, c = model(**b), model(**padded)
    for name in a.losses:
        torch.testing.assert_close(a.losses[name], c.losses[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("speaker_durations", [True, False], ids=["speaker-aware", "speaker-blind"])
def test_two_voices_of_different_rates_get_their_own_durations(speaker_durations):
    """The same texts spoken at one code frame per token by speaker 0 and two by speaker 1: after a short
    fit the duration predictor gives speaker 1 longer durations, which it can only do if it hears the speaker."""
    model = tiny(n_q=1, n_speakers=2, speaker_durations=speaker_durations, speaker_text=False)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    text_lens = torch.tensor([6, 5, 4, 6, 5, 4, 6, 5])
    speakers = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    code_lens = text_lens * (1 + speakers)
    for _ in range(150 if speaker_durations else 5):  # blind: its two predictions are equal at any step
        text = torch.randint(2, 20, (8, 6), generator=g) * (torch.arange(6) < text_lens[:, None])
        codes = torch.randint(0, 16, (8, 12, 1), generator=g) * (torch.arange(12) < code_lens[:, None])[..., None]
        out = model(text, text_lens, codes, code_lens, speakers)
        opt.zero_grad()
        out.losses["loss"].backward()
        opt.step()
    model.eval()
    text = torch.randint(2, 20, (1, 6), generator=g).expand(2, -1)
    lens, voices = torch.tensor([6, 6]), torch.tensor([0, 1])
    with torch.no_grad():
        states = model.encode_text(text, lens, voices)
        pred = model.aligner.predict_durations(states, lens, voices).sum(1)  # (2,) frames
    if speaker_durations:
        assert pred[1] > 1.5 * pred[0], pred  # about 12 frames vs 6
    else:
        torch.testing.assert_close(pred[0], pred[1])  # one averaged rate for both voices


def test_depth_decoder_scores_every_frame_in_eval_and_counts_its_pick_in_training():
    """The held-out loss that picks best.pt is deterministic (every valid frame, not a random fraction),
    and the DDP share of the depth losses counts the frames they average over."""
    model = tiny(n_q=3, depth_layers=1, decoder_fraction=0.25)  # no dropout: train and eval differ in the pick
    b = toy_batch(3)
    valid = int(b["code_lens"].sum())  # 24 of 3 x 10 frames
    with torch.no_grad():
        first, second = model.eval()(**b), model(**b)
        picked = model.train()(**b)
        model.depth.fraction = 1.0  # training on every frame: the all-frames reference
        every = model(**b)
    for k in (1, 2):
        assert torch.equal(first.losses[f"c{k}"], second.losses[f"c{k}"])
        torch.testing.assert_close(first.losses[f"c{k}"], every.losses[f"c{k}"], atol=1e-6, rtol=1e-6)
        assert int(first.counts[f"c{k}"]) == valid
        assert int(picked.counts[f"c{k}"]) == 8  # ceil(0.25 x 30) picked frames, all valid
    assert int(picked.counts["c0"]) == valid


def test_alignment_search_is_monotonic_and_complete():
    logp = torch.randn(2, 4, 12)
    path = monotonic_alignment_search(logp, torch.tensor([4, 3]), torch.tensor([12, 7]))
    assert torch.equal(path.sum(1)[0], torch.ones(12)) and torch.equal(path.sum(1)[1, :7], torch.ones(7))
    assert (path.sum(2)[0] >= 1).all() and (path.sum(2)[1, :3] >= 1).all() and path[1, 3:].sum() == 0
    tokens = path[0].argmax(0)
    assert (tokens.diff() >= 0).all() and (tokens.diff() <= 1).all()
    assert torch.equal(durations_to_path(path.sum(2)[:1].long(), 12), path[:1])


def test_sampling_is_seedable_and_top_k_top_p_restrict():
    probs = logits_to_probs(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), top_k=2)
    assert probs[0, 2:].sum() == 0
    probs = logits_to_probs(torch.tensor([[5.0, 0.0, 0.0, 0.0]]), top_p=0.5)
    assert probs[0, 0] == 1
    model = tiny(duration_path=False).eval()
    b = toy_batch()
    runs = [generate(model, b["text"], b["text_lens"], b["speakers"], max_frames=8, temperature=1.0,
                     generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][0].shape[0] == 3


# ---------------------------------------------------------------- end to end (flite corpus)


@pytest.fixture(scope="module")
def trained(tiny_talker):
    return tiny_talker


def test_train_two_steps_then_resume(trained):
    import train_talker

    run = trained["dir"]
    assert (run / "step_00000002.pt").is_file() and (run / "samples" / "step_00000002" / "00.wav").is_file()
    stats = json.loads((run / "stats.json").read_text())
    assert stats["max_frames"] % 8 == 0 and "truncated_train_items" in stats
    train_talker.main(trained["args"] + ["train.steps=3", "--resume"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] != "speech"]  # the speech check has its own test file
    assert (run / "step_00000003.pt").is_file() and steps.count(2) == 2 and 3 in steps  # train + heldout at 2
    record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][0]
    for key in ("loss", "c0_accuracy", "c1_accuracy", "stop_accuracy", "perplexity", "lr", "frames_per_s"):
        assert key in record


@pytest.mark.parametrize("epochs, batches, accum, steps", [(2, 10, 1, 20), (2, 10, 4, 5), (1, 5.5, 2, 3),
                                                           (0.01, 10, 4, 1), (3, 0.1, 1, 1)],
                         ids=["no_accum", "accum_divides", "accum_rounds_up", "at_least_one", "float_dust"])
def test_epochs_count_optimizer_steps_not_micro_batches(epochs, batches, accum, steps):
    from muomni.stages.talker import epoch_steps

    assert epoch_steps(epochs, batches, accum) == steps


def test_train_epochs_with_grad_accum_runs_the_epochs_asked_for(trained):
    """Each optimizer step takes grad_accum micro-batches: one epoch is batches / grad_accum steps."""
    import train_talker

    train_talker.main(trained["args"] + ["train.run_name=epochs", "train.epochs=1",
                                         "train.grad_accum=2", "train.save_every=1000"])
    stats = json.loads((trained["tmp"] / "epochs" / "stats.json").read_text())
    batches = stats["train_items"] / 4  # train.batch_size=4: batches per epoch, as the step count reads it
    assert stats["ended"]["step"] == math.ceil(batches / 2)  # before: batches steps, i.e. grad_accum epochs


def test_bf16_autocast_on_cpu_trains_the_same_steps_within_bf16_rounding(trained):
    """train.cpu_precision=bf16: the same seed and batches as fp32, code and stop losses equal to bf16's
    rounding (not bit-equal: the cast is real), the weights kept in fp32; an unknown precision names the key.
    The duration loss is left out: one changed alignment-search choice moves it by far more than rounding."""
    import train_talker
    from muomni.config import ConfigError

    def train_records(name: str, precision: str) -> tuple[torch.Tensor, dict]:
        train_talker.main(trained["args"] + [f"train.run_name={name}", f"train.cpu_precision={precision}"])
        lines = (trained["tmp"] / name / "metrics.jsonl").read_text().splitlines()
        rows = [r for r in map(json.loads, lines) if r["split"] == "train"]
        losses = torch.tensor([[r["loss"] - r["dur"], r["c0"], r["c1"], r["stop"]] for r in rows])  # (steps, 4)
        return losses, torch.load(trained["tmp"] / name / "step_00000002.pt", weights_only=True)["model"]

    fp32, w32 = train_records("prec_fp32", "fp32")
    bf16, w16 = train_records("prec_bf16", "bf16")
    assert fp32.shape == bf16.shape == (2, 4) and bf16[0, 0] != fp32[0, 0]
    torch.testing.assert_close(bf16[:, 1:], fp32[:, 1:], rtol=1e-2, atol=0.0)
    # step 1: the same alignment; the total less the duration loss within bf16's rounding (2^-8 per value)
    torch.testing.assert_close(bf16[0, 0], fp32[0, 0], rtol=2e-3, atol=0.0)
    assert w16.keys() == w32.keys()
    assert all(v.dtype == torch.float32 for v in w16.values() if v.is_floating_point())
    with pytest.raises(ConfigError, match="train.cpu_precision"):
        train_talker.main(trained["args"] + ["train.run_name=prec_bad", "train.cpu_precision=fp16"])


def test_checkpoint_alone_synthesizes(trained, tmp_path):
    import shutil

    from muomni.load import load_talker
    from muomni.synthesis import synthesize

    ckpt = tmp_path / "alone.pt"
    shutil.copy(trained["dir"] / "step_00000002.pt", ckpt)
    bundle = load_talker(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Griffin-Lim notice
        wavs = synthesize(bundle, ["Hello there.", "A second sentence!"], speakers=[0, 1], max_frames=12, n_iter=4)
    assert len(wavs) == 2 and all(len(w) >= 256 * 5 and abs(w).max() <= 1.0 for w in wavs)


@pytest.mark.parametrize("kw", [VARIANTS["duration_path"], VARIANTS["depth_decoder"]], ids=["heads", "depth_decoder"])
def test_generation_returns_the_distributions_its_greedy_codes_come_from(kw):
    model = tiny(**kw).eval()
    b = toy_batch(model.cfg.n_q)
    codes, lengths = generate(model, b["text"], b["text_lens"], b["speakers"], max_frames=6, temperature=0.0)
    again, lengths2, probs = generate(model, b["text"], b["text_lens"], b["speakers"], max_frames=6,
                                      temperature=0.0, return_probs=True)
    assert torch.equal(codes, again) and torch.equal(lengths, lengths2)
    assert probs.shape == (*codes.shape, model.cfg.codebook_size)
    torch.testing.assert_close(probs.sum(-1), torch.ones(codes.shape))
    assert torch.equal(probs.argmax(-1), codes)  # greedy: every codebook's pick is its distribution's mode


def test_synthesis_decodes_expected_or_picked_codes(trained):
    from muomni.load import load_talker
    from muomni.synthesis import probs_to_mel, synthesize_with_mels, text_to_codes

    bundle = load_talker(trained["dir"] / "step_00000002.pt")
    texts = ["Hello there.", "A second sentence!"]
    codes, probs = text_to_codes(bundle, texts, max_frames=8, return_probs=True)
    assert [c.shape[0] for c in codes] == [p.shape[0] for p in probs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Griffin-Lim notice
        expected, _ = synthesize_with_mels(bundle, texts, max_frames=8, n_iter=2)
        picked, _ = synthesize_with_mels(bundle, texts, max_frames=8, n_iter=2, mel_from="codes")
    for e, p, c, pr in zip(expected, picked, codes, probs):
        assert e.shape == p.shape == (5 * c.shape[0], 128)
        torch.testing.assert_close(e, probs_to_mel(bundle.codec, [pr])[0])
        assert not torch.allclose(e, p)  # an untrained Talker is unsure: the expectation differs from the pick
    with pytest.raises(ValueError, match="mel_from"):
        synthesize_with_mels(bundle, texts, mel_from="mean")
    with pytest.raises(ValueError, match="different codec"):
        probs_to_mel(bundle.codec, [torch.full((4, 2, 3), 1 / 3)])


def test_bad_input_gets_clear_messages(trained):
    import train_talker
    from muomni.data.tokenize import CodecMismatchError
    from muomni.load import load_talker
    from muomni.synthesis import codes_to_mel, text_to_codes

    bundle = load_talker(trained["dir"] / "step_00000002.pt")
    with pytest.raises(ValueError, match="empty"):
        text_to_codes(bundle, ["   "])
    with pytest.warns(UserWarning, match="ж"):
        text_to_codes(bundle, ["hello жук"], max_frames=4)
    with pytest.raises(ValueError, match="too long"):
        text_to_codes(bundle, ["word " * 400])
    with pytest.raises(ValueError, match="out of range"):
        text_to_codes(bundle, ["hello"], speakers=[7])
    with pytest.raises(ValueError, match="different codec"):
        codes_to_mel(bundle.codec, [torch.full((4, 2), 99)])
    other = trained["tmp"] / "other_codec.pt"
    payload = torch.load(trained["codec"], weights_only=True)
    payload["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in payload["model"].items()}
    torch.save(payload, other)
    with pytest.raises(CodecMismatchError, match="codec"):
        train_talker.main(trained["args"] + [f"data.codec={other}", "train.run_name=other"])


def test_dynamic_batches_pack_sorted_lengths_and_resume():
    from muomni.data.talker import BucketOrder, fixed_length

    costs = [(10 + i % 7, 5 + (i * 13) % 40) for i in range(50)]
    order = BucketOrder(costs, max_tokens=300, seed=1)
    seen = sorted(i for b in order.batches for i in b)
    assert seen == list(range(50))
    for b in order.batches:
        assert len(b) == 1 or len(b) * max(costs[i][0] + costs[i][1] + 1 for i in b) <= 300
    first = [order.next() for _ in range(3)]
    state = order.state_dict()
    after = [order.next() for _ in range(len(order))]
    again = BucketOrder(costs, max_tokens=300, seed=1)
    again.load_state_dict(state)
    assert [again.next() for _ in range(len(order))] == after and first[0] != []
    assert fixed_length([10, 20, 30, 41], 95, 8) == 40  # 95th percentile 39.35, rounded up to 8s


def test_dynamic_batches_as_collated_never_exceed_max_tokens():
    """Text and frames pad separately, each rounded up to length_multiple: budgeting on the longest
    text + frames put 156 of 356 batches of these 4,000 synthetic items over max_tokens (up to 1.49x)."""
    from types import SimpleNamespace

    from muomni.data.talker import TalkerData, TalkerItem, fixed_length

    rng = np.random.default_rng(0)
    frames = rng.integers(8, 120, 4000)
    texts = np.maximum(4, (frames * rng.uniform(0.8, 1.6, 4000)).astype(int))
    items = [TalkerItem(str(i), 0, "", np.ones(t, dtype=np.int64), np.zeros((f, 2), dtype=np.int16), "")
             for i, (t, f) in enumerate(zip(texts, frames))]
    items.append(TalkerItem("long", 0, "", np.ones(900, dtype=np.int64), np.zeros((1900, 2), dtype=np.int16), ""))
    tcfg = SimpleNamespace(batching="dynamic", length_multiple=8, max_tokens=1792)
    max_text, max_frames = fixed_length(list(texts), 95, 8), 1903  # a cap that is not a multiple of 8
    data = TalkerData(items, [], max_text, max_frames, tcfg, ["a"])
    order = data.bucket_order(seed=0)
    assert sorted(i for b in order.batches for i in b) == list(range(len(items)))
    over = []
    for idx in order.batches:
        b = data.batch(idx, "cpu")
        size = len(idx) * (b["text"].shape[1] + b["codes"].shape[1] + 1)  # decoder positions, start included
        if size > tcfg.max_tokens and len(idx) > 1:
            over.append(size / tcfg.max_tokens)
    assert over == []
    assert [len(b) for b in order.batches if items[b[0]].id == "long"] == [1]  # alone over the budget: by itself
