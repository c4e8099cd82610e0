"""RVQ codec: invariants of the model, the quantizer's codebook upkeep, training end to end, pre-tokenization."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from muomni.checkpoint import CheckpointError, save_checkpoint
from muomni.config import ConfigError
from muomni.data import tokenize as tok
from muomni.load import load_codec
from muomni.models.codec import (
    LOSSES,
    CodecConfig,
    CodecModel,
    codec_from_dict,
    codec_hash,
    codec_to_dict,
    spectral_losses,
)
from muomni.models.quantize import STRAIGHT_THROUGH, EuclideanCodebook, ResidualVQ, codebook_usage, nearest
from muomni.stages import codec as codec_stage

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("train_codec", ROOT / "train_codec.py")
train_codec = sys.modules.setdefault("train_codec", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(train_codec)

TINY = dict(hidden_dim=16, latent_dim=8, n_blocks=1, n_codebooks=3, codebook_size=16, codebook_dim=8)


def trained_a_little(cfg: CodecConfig, steps: int = 3) -> CodecModel:
    torch.manual_seed(0)
    model = CodecModel(cfg)
    for _ in range(steps):  # k-means init + EMA updates
        model(torch.randn(4, 40, 128))
    return model.eval()


@pytest.mark.parametrize("extra", [{}, {"codebook_dim": 4}, {"kernel_size": 5, "dilations": [1, 3]},
                                   {"decoder_blocks": 3, "decoder_dilations": [1, 2, 4]},
                                   {"decoder_attention_layers": 2, "attention_heads": 2},
                                   {"codebook_dim": 2, "codebook_lookup": "cosine"}],
                         ids=["same-dim", "projected-codebook", "wide-kernel", "wider-decoder", "decoder-attention",
                              "factorized-cosine"])
def test_eval_forward_equals_decode_of_encode(extra):
    model = trained_a_little(CodecConfig(**{**TINY, **extra}))
    mel = torch.randn(2, 53, 128)
    with torch.no_grad():
        out = model(mel)
        codes = model.encode(mel)
        torch.testing.assert_close(out.codes, codes, rtol=0, atol=0)
        torch.testing.assert_close(out.mel, model.decode(codes))


@pytest.mark.parametrize("n_q", [1, 2, 8], ids=["1-codebook", "2-codebooks", "8-codebooks"])
@pytest.mark.parametrize("form", ["single", "residual"])
def test_the_quantized_sum_passes_the_identity_gradient_to_its_input(form, n_q):
    """One straight-through estimator for the whole residual sum: d(sum)/dx = I for any n_q. The
    pre-2026-12-07 form ("per_layer") gave n_q x I, so the encoder's gradient grew with the codebooks."""
    torch.manual_seed(0)
    rvq = ResidualVQ(n_q, form, dim=8, codebook_dim=8, size=16, decay=0.9, kmeans_iters=2, dead_threshold=0.0)
    x = torch.randn(2, 30, 8, requires_grad=True)
    rvq(x.detach())  # k-means init
    rvq(x).quantized.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    x.grad = None
    ResidualVQ(n_q, "per_layer", dim=8, codebook_dim=8, size=16, decay=0.9, kmeans_iters=2,
               dead_threshold=0.0)(x).quantized.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, float(n_q)))


def test_every_straight_through_form_has_the_same_values_and_trains_the_output_projection():
    outs = []
    for form in STRAIGHT_THROUGH:
        torch.manual_seed(0)
        rvq = ResidualVQ(3, form, dim=8, codebook_dim=4, size=16, decay=0.9, kmeans_iters=2, dead_threshold=0.0)
        x = torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
        res = rvq(x)
        (res.quantized.square().sum() + res.commit_loss).backward()
        assert all(layer.project_out.weight.grad.abs().sum() > 0 for layer in rvq.layers), form
        assert all(layer.project_in.weight.grad.abs().sum() > 0 for layer in rvq.layers), form
        outs.append((res.quantized.detach(), res.codes))
    for quantized, codes in outs[1:]:
        torch.testing.assert_close(codes, outs[0][1], rtol=0, atol=0)
        torch.testing.assert_close(quantized, outs[0][0])


def test_codes_shape_dtype_range_and_trailing_frames_dropped():
    model = trained_a_little(CodecConfig(**TINY))
    codes = model.encode(torch.randn(2, 53, 128))
    assert codes.shape == (2, 10, 3) and codes.dtype == torch.int64  # 53 // 5 = 10 code frames
    assert 0 <= int(codes.min()) and int(codes.max()) < 16
    assert model.decode(codes).shape == (2, 50, 128)


@pytest.mark.parametrize("extra", [{}, {"codebook_dim": 4}, {"codebook_dim": 2, "codebook_lookup": "cosine"}],
                         ids=["same-dim", "projected-codebook", "factorized-cosine"])
def test_expected_decoding_of_one_hot_codes_is_decode_and_of_a_mixture_lies_between(extra):
    model = trained_a_little(CodecConfig(**{**TINY, **extra}))
    codes = model.encode(torch.randn(2, 30, 128))  # (2, 6, 3)
    one_hot = torch.nn.functional.one_hot(codes, 16).float()
    with torch.no_grad():
        torch.testing.assert_close(model.decode_expected(one_hot), model.decode(codes), atol=1e-5, rtol=1e-5)
        # Half of one code and half of another: the latent is the midpoint of the two code vectors.
        other = (codes + 1) % 16
        mixed = 0.5 * one_hot + 0.5 * torch.nn.functional.one_hot(other, 16).float()
        midpoint = 0.5 * (model.rvq.decode(codes) + model.rvq.decode(other))
        torch.testing.assert_close(model.rvq.decode_expected(mixed), midpoint, atol=1e-5, rtol=1e-5)


def test_bad_mels_give_clear_errors():
    model = CodecModel(CodecConfig(**TINY)).eval()
    mel = torch.randn(1, 20, 128)
    mel[0, 3, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.encode(mel)
    with pytest.raises(ValueError, match="fewer than one code frame"):
        model.encode(torch.randn(1, 4, 128))


def test_kmeans_init_uses_the_codebook():
    torch.manual_seed(0)
    book = EuclideanCodebook(dim=4, size=16, decay=0.9, kmeans_iters=10, dead_threshold=0.1)
    x = torch.randn(512, 4)
    book.init_(x)
    usage, _ = codebook_usage(book.encode(x)[:, None], 16)
    assert usage[0] >= 0.9


def test_cosine_lookup_picks_by_angle_and_keeps_the_mean_latent_as_the_code():
    embed = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    x = torch.tensor([[3.0, 0.5], [0.2, 0.1], [0.1, 0.4]])
    # Euclidean: the short second code is far from everything near it in angle; cosine ignores length.
    assert nearest(x, embed).tolist() == [0, 0, 0]
    assert nearest(x, embed, "cosine").tolist() == [0, 0, 1]
    torch.manual_seed(0)
    book = EuclideanCodebook(dim=2, size=2, decay=0.5, kmeans_iters=5, dead_threshold=0.0, lookup="cosine")
    book.init_(embed)
    scaled = torch.cat([embed * 2.0, embed * 4.0])  # the same two directions, other lengths
    codes = book.encode(scaled)
    assert codes.tolist()[:2] == codes.tolist()[2:] and sorted(codes.tolist()[:2]) == [0, 1]
    for _ in range(30):  # EMA towards the mean of each code's latents (3x each direction), lengths kept
        book.update_(scaled, book.encode(scaled))
    torch.testing.assert_close(book.decode(codes[:2]), 3.0 * embed, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="lookup"):
        EuclideanCodebook(dim=2, size=2, decay=0.5, kmeans_iters=5, dead_threshold=0.0, lookup="manhattan")
    with pytest.raises(ConfigError, match="codebook_lookup"):
        CodecConfig(**TINY, codebook_lookup="dot")


def test_factorized_cosine_codes_use_the_codebooks_and_train():
    cfg = CodecConfig(**{**TINY, "codebook_dim": 2, "codebook_lookup": "cosine"})
    assert all(layer.codebook.lookup == "cosine" for layer in CodecModel(cfg).rvq.layers)
    model = trained_a_little(cfg, steps=5)
    usage, _ = model.usage(model.encode(torch.randn(8, 200, 128)))
    assert min(usage) >= 0.5  # k-means on the angle spreads 16 codes over a 2-dim circle


def test_dead_codes_are_replaced_by_recent_latents():
    torch.manual_seed(0)
    book = EuclideanCodebook(dim=4, size=16, decay=0.9, kmeans_iters=10, dead_threshold=0.1)
    x = torch.randn(512, 4)
    book.init_(x)
    book.embed[1:] = 100.0  # collapse: one live code, fifteen far away from every latent
    book.cluster_size.zero_()
    book.cluster_size[0] = 512.0
    assert codebook_usage(book.encode(x)[:, None], 16)[0][0] == 1 / 16
    replaced = sum(book.update_(x, book.encode(x)) for _ in range(5))
    assert replaced >= 15
    assert codebook_usage(book.encode(x)[:, None], 16)[0][0] >= 0.8


def test_checkpoint_payload_round_trip_and_mismatches(tmp_path):
    model = trained_a_little(CodecConfig(**TINY))
    payload = codec_to_dict(model)
    again = codec_from_dict(payload)
    mel = torch.randn(1, 25, 128)
    torch.testing.assert_close(again.decode(again.encode(mel)), model.decode(model.encode(mel)))
    with pytest.raises(ConfigError, match="n_layers"):
        codec_from_dict({**payload, "config": {**payload["config"], "n_layers": 2}})
    with pytest.raises(ConfigError, match="rvq.layers.0.codebook.embed"):
        codec_from_dict({**payload, "config": {**payload["config"], "codebook_size": 32}})
    save_checkpoint(tmp_path / "vocoder.pt", {"stage": "vocoder", **payload})
    with pytest.raises(CheckpointError, match="vocoder checkpoint"):
        load_codec(tmp_path / "vocoder.pt")


def test_spectral_losses_separate_a_level_offset_from_a_blur():
    target = torch.randn(2, 30, 128)
    for value in spectral_losses(target, target).values():
        assert float(value) == 0.0
    offset = spectral_losses(target + 0.5, target)  # the same error everywhere: no edge or ridge is lost
    assert set(offset) == set(LOSSES)
    assert float(offset["recon"]) == pytest.approx(0.25) and float(offset["l1"]) == pytest.approx(0.5)
    assert float(offset["delta_time"]) == pytest.approx(0.0, abs=1e-6)
    assert float(offset["delta_freq"]) == pytest.approx(0.0, abs=1e-6)
    assert float(offset["pooled_l1"]) == pytest.approx(0.5)  # a level offset survives every pooling window
    # pooled_l1 is on the raw scale: a bin with twice the spread counts twice.
    std = torch.ones(128)
    std[:64] = 3.0
    assert float(spectral_losses(target + 0.5, target, std)["pooled_l1"]) == pytest.approx(1.0)
    # Zero-mean noise of one frame cancels in the coarse windows: the pooled term weighs it less than L1.
    noise = torch.sign(torch.randn(2, 30, 128))
    noisy = spectral_losses(target + noise, target)
    assert float(noisy["pooled_l1"]) < 0.6 * float(noisy["l1"])
    # Smoothing along time and frequency flattens the onsets and ridges: the difference terms see it.
    blur = torch.nn.functional.avg_pool2d(target[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    blurred = spectral_losses(blur, target)
    assert float(blurred["delta_time"]) > 0.5 and float(blurred["delta_freq"]) > 0.5


def test_forward_returns_every_named_loss_and_the_trainer_weights_only_known_names():
    model = CodecModel(CodecConfig(**TINY))
    out = model(torch.randn(2, 40, 128))
    assert set(out.losses) == {*LOSSES, "commit"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.losses.values())
    codec_stage.CodecTrainConfig(loss_weights={"recon": 1.0, "l1": 1.0, "delta_time": 0.5, "commit": 0.25})
    with pytest.raises(ConfigError, match="unknown loss 'l2'"):
        codec_stage.CodecTrainConfig(loss_weights={"recon": 1.0, "l2": 1.0})
    with pytest.raises(ConfigError, match="every weight is 0"):
        codec_stage.CodecTrainConfig(loss_weights={"recon": 0.0, "commit": 0})


def test_a_codec_of_the_old_architecture_loads_with_the_new_fields_at_their_defaults():
    model = trained_a_little(CodecConfig(**TINY))
    payload = codec_to_dict(model)
    new_fields = ("decoder_blocks", "decoder_dilations", "decoder_attention_layers", "attention_heads",
                  "codebook_lookup", "straight_through")
    old_config = {k: v for k, v in payload["config"].items() if k not in new_fields}  # as an older version wrote it
    old = codec_from_dict({"config": old_config, "model": payload["model"]})
    mel = torch.randn(1, 25, 128)
    torch.testing.assert_close(old.decode(old.encode(mel)), model.decode(model.encode(mel)))
    assert not any("attention" in k for k in model.state_dict())  # no attention: the old weight names exactly
    # Old weights under a config that asks for decoder attention: refused, naming the missing weight.
    with pytest.raises(ConfigError, match="decoder.attention.0"):
        codec_from_dict({"config": {**old_config, "decoder_attention_layers": 1, "attention_heads": 2},
                         "model": payload["model"]})


def test_decoder_attention_applies_to_utterances_longer_than_the_training_crops():
    model = trained_a_little(CodecConfig(**TINY, decoder_attention_layers=1, attention_heads=2))
    with torch.no_grad():
        codes = model.encode(torch.randn(1, 400, 128))  # 80 code frames, longer than any crop above
        assert model.decode(codes).shape == (1, 400, 128)
        # No table of absolute positions to run out of, whatever the length.
        twice = model.decode(torch.cat([codes, codes], 1))
        assert torch.isfinite(twice).all() and twice.shape == (1, 800, 128)


def test_bad_decoder_fields_name_the_key():
    with pytest.raises(ConfigError, match="decoder_dilations"):
        CodecConfig(**TINY, decoder_dilations=[])
    with pytest.raises(ConfigError, match="attention_heads"):
        CodecConfig(**TINY, decoder_attention_layers=1, attention_heads=3)


class FakeMels:
    def __init__(self, mels: list[np.ndarray]):
        self.mels = mels

    def get(self, i: int) -> np.ndarray:
        return self.mels[i]


class FakeItem:
    def __init__(self, i: int):
        self.id = f"utt{i}"


def test_code_cache_is_rebuilt_for_another_codec(tmp_path, capsys):
    model = trained_a_little(CodecConfig(**TINY))
    rng = np.random.default_rng(0)
    mels = FakeMels([rng.standard_normal((n, 128)).astype(np.float32) for n in (23, 40, 5)])
    items = [FakeItem(i) for i in range(3)]
    first_hash = codec_hash(model)
    cache = tok.tokenize(model, items, mels, tmp_path, first_hash, progress=False)
    assert cache.lengths.tolist() == [5, 8, 1]  # padded to whole code frames
    np.testing.assert_array_equal(cache.get(1), model.encode(torch.from_numpy(mels.get(1))[None])[0].numpy())
    tok.tokenize(model, items, mels, tmp_path, first_hash, progress=False)
    assert "up to date" in capsys.readouterr().err
    with torch.no_grad():
        model.decoder.out.bias.add_(1.0)  # another codec
    second_hash = codec_hash(model)
    assert second_hash != first_hash
    tok.tokenize(model, items, mels, tmp_path, second_hash, progress=False)
    assert "codec changed" in capsys.readouterr().err
    with pytest.raises(tok.CodecMismatchError, match=first_hash[:16]) as err:
        tok.load_codes(tmp_path, first_hash)
    assert "codes.json" in str(err.value) and second_hash[:16] in str(err.value)
    assert tok.load_codes(tmp_path, second_hash).codec_hash == second_hash


# ---------------------------------------------------------------- end to end on a real flite corpus


def _train(flite_corpus: Path, out: Path, *extra: str, sets: tuple[str, ...] = ()) -> None:
    train_codec.main([
        "--config", str(ROOT / "configs" / "codec_tiny.json"), "--device", "cpu", *extra, "--set",
        f"data.path={flite_corpus}", f"train.out_dir={out}", "train.run_name=run", "train.steps=4",
        "train.batch_size=4", "train.crop_frames=4", "train.log_every=1", "train.eval_every=2",
        "train.save_every=2", "train.sample_every=4", "train.warmup_steps=1",
        "model.hidden_dim=16", "model.latent_dim=8", "model.codebook_dim=8", "model.codebook_size=16", *sets,
    ])


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


@pytest.fixture(scope="module")
def trained_run(flite_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("codec_runs")
    _train(flite_corpus, out)
    return out / "run"


def test_train_codec_end_to_end(trained_run: Path):
    assert (trained_run / "step_00000004.pt").is_file() and (trained_run / "best.pt").is_file()
    stats = json.loads((trained_run / "stats.json").read_text())
    assert len(stats["mel_mean"]) == 128 and min(stats["mel_std"]) > 0
    samples = trained_run / "samples" / "step_00000004"
    assert list(samples.glob("*.png")) and list(samples.glob("*_codec.wav"))
    heldout = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()
               if '"heldout"' in line]
    assert {"mse", "mse_raw", "usage_0", "perplexity_1", "replaced_codes"} <= set(heldout[-1])
    codec = load_codec(trained_run / "best.pt")
    assert not codec.training and codec.cfg.codebook_size == 16
    torch.testing.assert_close(codec.mel_mean, torch.tensor(stats["mel_mean"]))


def test_resume_continues_the_same_loss_curve(trained_run: Path, flite_corpus: Path, tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("step_00000002.pt", "stats.json", "metrics.jsonl"):
        (run / name).write_bytes((trained_run / name).read_bytes())
    _train(flite_corpus, tmp_path, "--resume", sets=("train.sample_every=100",))
    expected, resumed = _losses(trained_run), _losses(run)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5)


def test_tokenize_cli_on_the_trained_codec(trained_run: Path, flite_corpus: Path, tmp_path: Path):
    cache = tok.main(["--codec", str(trained_run / "best.pt"), "--data", str(flite_corpus), "--out",
                      str(tmp_path / "codes")])
    codec = load_codec(trained_run / "best.pt")
    assert len(cache) > 0 and cache.get(0).shape[1] == codec.cfg.n_codebooks
    assert tok.load_codes(tmp_path / "codes", codec_hash(codec)).ids == cache.ids


@pytest.mark.timeout(180)  # 25 s measured on 2 cores under a load of ~8
def test_evaluate_codec_cli_reports_word_error_per_speaker(trained_run: Path, flite_corpus: Path, tmp_path: Path):
    from muomni.eval import evaluate

    report = evaluate.main(["codec", "--codec", str(trained_run / "best.pt"), "--data", str(flite_corpus),
                            "--json", str(tmp_path / "codec.json"), "--asr", "pocketsphinx,whisper",
                            "--out-dir", str(tmp_path / "listen")])
    assert json.loads((tmp_path / "codec.json").read_text())["wer_codec"] == pytest.approx(report["wer_codec"])
    assert report["asr"]["recognisers"] == ["pocketsphinx", "whisper:tiny.en"] == list(report["wer_by_asr"])
    assert report["wer_codec"] == report["wer_by_asr"]["pocketsphinx"]["codec"]  # the first recogniser headlines
    assert len(report["per_utterance"]) == report["wer_utterances"]
    for utt in report["per_utterance"]:  # every system's wav is on disk and scored by both recognisers
        for system in ("original", "codec"):
            assert Path(utt["systems"][system]["wav"]).is_file()
            assert set(utt["systems"][system]["transcripts"]) == {"pocketsphinx", "whisper:tiny.en"}
    assert (tmp_path / "listen" / "index.html").is_file()
    by = report["wer_by_speaker"]["pocketsphinx"]
    assert sum(d["utterances"] for d in by.values()) == report["wer_utterances"] > 0
    words = sum(d["words"] for d in by.values())
    for key in ("original", "codec"):  # the per-speaker figures recombine into the pooled one
        assert sum(d[key] * d["words"] for d in by.values()) / words == pytest.approx(report[f"wer_{key}"])
    assert 0 < report["mse_std"] and report["bitrate"] == pytest.approx(12.5 * 2 * 4)


def test_the_codec_trains_under_cpu_bf16_autocast_with_its_quantizer_in_float32():
    """train.cpu_precision=bf16 autocasts the encoder and decoder; the codebooks, their distances and EMA
    updates stay float32, so the codes mean the same under fp32 and bf16 training and eval is unchanged."""
    torch.manual_seed(0)
    model = CodecModel(CodecConfig(**TINY))
    model.train()
    model.rvq.defer_updates(True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mel = torch.randn(4, 40, 128)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(mel)
        assert out.mel.dtype == torch.float32 and all(torch.isfinite(v) for v in out.losses.values())
        opt.zero_grad()
        (out.losses["recon"] + 0.25 * out.losses["commit"]).backward()
        opt.step()
        model.rvq.commit_updates()
    book = model.rvq.layers[0].codebook
    assert book.embed.dtype == torch.float32 and book.cluster_size.dtype == torch.float32
    grads = [p for p in model.parameters() if p.grad is not None]
    assert grads and all(p.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in grads)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(mel).mel, model.decode(model.encode(mel)))
