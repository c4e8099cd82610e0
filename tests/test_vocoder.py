"""Vocoder stage: Griffin-Lim converges, HiFi-GAN shapes, train_vocoder.py end to end with resume."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from muomni import synthesis
from muomni.audio import HOP_LENGTH, log_mel
from muomni.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from muomni.config import DataConfig
from muomni.data import load_corpus
from muomni.data.vocoder import AudioCache, random_segments
from muomni.load import load_vocoder
from muomni.models.discriminators import Discriminators
from muomni.models.griffinlim import griffin_lim, linear_magnitude, mel_to_wav, spectral_convergence
from muomni.models.hifigan import Generator, HiFiGANConfig
from muomni.stages import vocoder as vocoder_stage

ROOT = Path(__file__).resolve().parents[1]
TINY = {"upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 2]],
        "mpd_channels": [4, 8, 16, 16], "msd_channels": 8, "msd_max_channels": 16}


def _train_module():
    spec = importlib.util.spec_from_file_location("train_vocoder", ROOT / "train_vocoder.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_vocoder"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _chirp(seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(16000 * seconds)) / 16000
    return 0.5 * torch.sin(2 * torch.pi * (200 * t + 600 * t**2)) * torch.hann_window(len(t), periodic=False)


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one intra-op thread is as fast alone and far faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- Griffin-Lim


def test_griffin_lim_converges_with_iterations():
    wav = _chirp(0.5)
    target = linear_magnitude(wav)  # (T, 513)
    sc = [spectral_convergence(griffin_lim(target, n_iter=n)[: len(wav)], target).item() for n in (1, 8, 32)]
    assert sc[0] > sc[1] > sc[2], sc
    assert sc[2] < 0.2
    # through the mel (NNLS inverse): the mel of the result is close to the input mel
    mel = log_mel(wav)[0]  # (T, 128)
    out = mel_to_wav(mel, n_iter=32)
    assert out.shape == (mel.shape[0] * HOP_LENGTH,)
    loud = mel > mel.max() - 6  # bins within 6 nats of the peak, where the chirp is
    assert (log_mel(out[: len(wav)])[0] - mel)[loud].abs().mean() < 0.5


def test_griffin_lim_batched_matches_single():
    wav = torch.stack([_chirp(0.5), 0.5 * _chirp(0.5)])
    mel = log_mel(wav)  # (2, T, 128)
    batched = mel_to_wav(mel, n_iter=4)
    single = mel_to_wav(mel[1], n_iter=4)
    assert batched.shape == (2, mel.shape[1] * HOP_LENGTH)
    torch.testing.assert_close(batched[1], single, atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------- HiFi-GAN


@pytest.mark.parametrize("frames", [1, 7, 32], ids=lambda f: f"{f}frames")
def test_generator_output_length(frames):
    gen = Generator(HiFiGANConfig(**TINY)).eval()
    with torch.no_grad():
        assert gen(torch.randn(2, frames, 128)).shape == (2, frames * HOP_LENGTH)
        assert gen(torch.randn(frames, 128)).shape == (frames * HOP_LENGTH,)


def test_remove_weight_norm_keeps_outputs():
    gen = Generator(HiFiGANConfig(**TINY)).eval()
    mel = torch.randn(1, 9, 128)
    n_params = sum(p.numel() for p in gen.parameters())
    with torch.no_grad():
        before = gen(mel)
        after = gen.remove_weight_norm()(mel)
    assert not any("parametrizations" in k for k in gen.state_dict())
    assert 0.95 * n_params < sum(p.numel() for p in gen.parameters()) < n_params  # weights stay Parameters
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-4)


def test_discriminator_shapes():
    cfg = HiFiGANConfig(**TINY)
    scores, features = Discriminators(cfg)(torch.randn(3, 4096))
    assert len(scores) == len(features) == len(cfg.mpd_periods) + cfg.msd_scales == 5
    assert all(s.dim() == 2 and s.shape[0] == 3 for s in scores)
    assert [len(f) for f in features] == [6, 6, 6, 8, 8]  # MPD: 5 convs + post; MSD: 7 convs + post
    period_2 = features[0][0]  # (B, C, N / 2 / 3, 2): folded by the period, strided by 3
    assert period_2.shape == (3, cfg.mpd_channels[0], 683, 2)


# ---------------------------------------------------------------- training


def _config(tmp_path: Path, data: Path, **train) -> Path:
    cfg = {
        "base": str(ROOT / "configs" / "vocoder_tiny.json"),
        "data": {"path": str(data), "heldout": 2},
        "model": TINY,
        "train": {"out_dir": str(tmp_path / "runs"), "run_name": "voc", "steps": 2, "batch_size": 2,
                  "grad_accum": 2, "segment_size": 4096, "gan_start_step": 1, "log_every": 1, "eval_every": 2,
                  "sample_every": 2, "save_every": 1, "eval_items": 1, "sample_items": 1, **train},
    }
    path = tmp_path / "vocoder_test.json"
    path.write_text(json.dumps(cfg))
    return path


def test_train_two_steps_then_resume(tmp_path, flite_corpus, monkeypatch, keep_signal_handlers):
    train = _train_module()
    # An active grad scaler on the CPU, so the test can see that both scalers' states are restored.
    monkeypatch.setattr(vocoder_stage, "make_grad_scaler", lambda device, enabled: torch.amp.GradScaler("cpu"))
    config = _config(tmp_path, flite_corpus)
    assert train.main(["--config", str(config)]) == 0
    run = tmp_path / "runs" / "voc"
    first = load_checkpoint(run / "step_00000002.pt", stage="vocoder")
    assert first["scaler_g"]["_growth_tracker"] == 2 and first["scaler_d"]["_growth_tracker"] == 1
    assert list(run.glob("samples/step_00000002/*.wav")) and list(run.glob("samples/step_00000002/*.png"))
    heldout = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
               if '"heldout"' in line]
    assert heldout and np.isfinite(heldout[-1]["mel_l1"]) and np.isfinite(heldout[-1]["griffinlim_mel_l1"])

    assert train.main(["--config", str(config), "--resume", "--set", "train.steps=3"]) == 0
    last = load_checkpoint(run / "step_00000003.pt", stage="vocoder")
    # Adam's per-parameter step counts and the scalers' growth trackers continue from the checkpoint;
    # the discriminators started at step 1 (gan_start_step), so they have one step fewer.
    g_steps = {int(s["step"]) for s in last["opt_g"]["state"].values()}
    d_steps = {int(s["step"]) for s in last["opt_d"]["state"].values()}
    assert g_steps == {3} and d_steps == {2}
    assert last["scaler_g"]["_growth_tracker"] == 3 and last["scaler_d"]["_growth_tracker"] == 2
    assert last["order"]["pos"] != first["order"]["pos"] or last["order"]["epoch"] > first["order"]["epoch"]
    assert last["sched_g"]["last_epoch"] == 3 and last["sched_d"]["last_epoch"] == 2

    # the trained generator loads for inference and vocodes
    gen = load_vocoder(run / "best.pt")
    assert synthesis.vocode(torch.randn(5, 128), gen).shape == (5 * HOP_LENGTH,)


def test_files_shorter_than_a_segment_train(tmp_path, keep_signal_handlers):
    import soundfile as sf

    data = tmp_path / "short"
    data.mkdir()
    for i, seconds in enumerate((0.25, 0.3, 0.35, 0.4)):  # all shorter than one 8192-sample segment
        t = np.arange(int(16000 * seconds)) / 16000
        sf.write(data / f"s{i}.wav", (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000)
        (data / f"s{i}.txt").write_text("a short one")
    train = _train_module()
    utts = AudioCache(load_corpus(DataConfig(path=str(data))).train, capacity=2)
    wav, mel = random_segments(utts, [0, 1], 8192)
    assert wav.shape == (2, 8192) and mel.shape == (2, 32, 128)
    assert wav[0, 4000:].abs().max() == 0 and mel[0, -1].max() == pytest.approx(np.log(1e-5))
    assert len(utts._cache) == 2  # bounded
    config = _config(tmp_path, data, segment_size=8192, gan_start_step=0, steps=1, eval_every=1, sample_every=1)
    assert train.main(["--config", str(config)]) == 0
    record = json.loads((tmp_path / "runs" / "voc" / "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(record["loss"])


def test_the_mel_term_is_the_l1_of_log_magnitude_mels():
    """HiFi-GAN's mel weight 45 was tuned on log-magnitude mels; muomni's front end gives log-power mels, whose
    L1 is twice as large: the generator's mel term must be the L1 of log(sqrt(mel power))."""
    from muomni.audio import LOG_FLOOR, mel_basis

    tc = vocoder_stage.VocoderTrainConfig(batch_size=1, grad_accum=1)
    torch.manual_seed(0)
    state = vocoder_stage.new_state(vocoder_stage.VocoderRunConfig(model=HiFiGANConfig(**TINY), train=tc),
                                    torch.device("cpu"))
    wav = _chirp(0.6)[None, :8192]  # (1, 8192)
    mel = log_mel(wav)[:, :32]  # (1, 32, 128)
    losses, _, _ = vocoder_stage.micro_batch(state, wav, mel, adversarial=False)
    with torch.no_grad():
        fake = state.generator(mel)

    def log_magnitude_mel(x: torch.Tensor) -> torch.Tensor:  # log of the square root of the power mel
        spec = torch.stft(x, 1024, 256, 1024, torch.hann_window(1024), center=True, pad_mode="reflect",
                          return_complex=True)
        return torch.log(torch.clamp(mel_basis() @ spec.abs().square(), min=LOG_FLOOR).sqrt())

    expected = (log_magnitude_mel(fake) - log_magnitude_mel(wav)).abs().mean()
    assert float(losses["mel"].detach()) == pytest.approx(float(expected), rel=1e-4)
    log_power_l1 = (log_mel(fake) - log_mel(wav)).abs().mean()
    assert float(losses["mel"].detach()) == pytest.approx(0.5 * float(log_power_l1), rel=1e-4)


# ---------------------------------------------------------------- synthesis


def test_vocode_warns_once_without_vocoder(monkeypatch):
    monkeypatch.setattr(synthesis, "_WARNED_GRIFFIN_LIM", False)
    mel = log_mel(_chirp(0.3))  # (1, T, 128)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = synthesis.vocode(mel, n_iter=2)
        synthesis.vocode(mel[0], n_iter=2)
    assert first.shape == (1, mel.shape[1] * HOP_LENGTH)
    assert len([w for w in caught if "Griffin-Lim" in str(w.message)]) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        synthesis.vocode(mel, Generator(HiFiGANConfig(**TINY)).eval())
    assert not caught


def test_load_vocoder_refuses_other_stage(tmp_path):
    path = tmp_path / "codec.pt"
    save_checkpoint(path, {"stage": "codec", "step": 1, "config": {}})
    with pytest.raises(CheckpointError, match="codec checkpoint"):
        load_vocoder(path)


def test_decoding_threads_train_exactly_the_same_steps(tmp_path, flite_corpus, keep_signal_handlers):
    """train.num_workers threads decode the next step's audio: same batches, same segments, same weights."""
    train = _train_module()
    weights = []
    for workers in (0, 2):
        (tmp_path / f"w{workers}").mkdir()
        config = _config(tmp_path / f"w{workers}", flite_corpus, steps=3, num_workers=workers, cache_items=2)
        assert train.main(["--config", str(config)]) == 0
        ckpt = load_checkpoint(tmp_path / f"w{workers}" / "runs" / "voc" / "step_00000003.pt", stage="vocoder")
        weights.append((ckpt["generator"], ckpt["order"]))
    (g0, order0), (g2, order2) = weights
    assert order0 == order2
    for name in g0:
        torch.testing.assert_close(g2[name], g0[name], rtol=0, atol=0, msg=name)


def test_the_vocoder_refuses_cpu_bf16_by_name():
    """train.cpu_precision is the codec's and the Talker's key; the vocoder's GAN was never measured in bf16,
    so asking for it is a clear error rather than a silently ignored key."""
    from muomni.config import ConfigError

    assert vocoder_stage.VocoderTrainConfig().cpu_precision == "fp32"
    for value in ("bf16", "auto"):
        with pytest.raises(ConfigError, match="train.cpu_precision.*vocoder trains in float32"):
            vocoder_stage.VocoderTrainConfig(cpu_precision=value)
