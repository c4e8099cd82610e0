"""Fine-tuning the vocoder on what it will be fed: the Talker's mels decoded as synthesis decodes them, and
the pretrained universal generator trained on muomni's mels through its adapter, end to end."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from test_vocoder import _config, _train_module, one_thread  # noqa: F401

from muomni import synthesis
from muomni.audio import load_audio, log_mel
from muomni.config import ConfigError, DataConfig
from muomni.data import load_corpus
from muomni.data.tokenize import encode_utterance
from muomni.data.vocoder import CodecMels, TalkerMels, teacher_forced_probs
from muomni.load import load_talker, load_vocoder
from muomni.models.talker import TalkerConfig, build_talker
from muomni.stages import vocoder as vocoder_stage


def test_synthesis_and_the_finetune_decode_the_same_way_by_default():
    default = inspect.signature(synthesis.synthesize_with_mels).parameters["mel_from"].default
    assert vocoder_stage.VocoderTrainConfig().mel_from == default == "expected"


def test_teacher_forcing_on_the_generated_codes_gives_the_distributions_synthesis_decoded():
    """A Talker with a depth decoder (codebook 1 given codebook 0): fed the codes it generated, its training
    forward reproduces generation's distributions at every frame, so the fine-tune's mels are synthesis's."""
    torch.manual_seed(0)
    cfg = TalkerConfig(vocab_size=20, n_speakers=2, n_q=3, codebook_size=16, d_model=32, n_layers=2, n_heads=2,
                       ffn_dim=64, duration_path=False, depth_layers=1, max_text=16, max_frames=12)
    model = build_talker(cfg).eval()
    text = torch.tensor([3, 7, 5, 9, 4])
    codes, lengths, probs = model.generate(text[None], torch.tensor([5]), torch.tensor([1]), max_frames=12,
                                           temperature=0.0, return_probs=True)
    n = int(lengths[0])
    assert n >= 2 and probs.shape == (1, n, 3, 16)
    tf = teacher_forced_probs(model, text, codes[0, :n], speaker=1)  # (n, n_q, K)
    torch.testing.assert_close(tf, probs[0, :n], rtol=0, atol=2e-5)
    other = teacher_forced_probs(model, text, torch.roll(codes[0, :n], 1, dims=0), speaker=1)
    assert (other[1:] - probs[0, 1:n]).abs().max() > 1e-3  # it does read the codes


def test_talker_mels_are_the_teacher_forced_talker_decoded_as_synthesis_decodes(tiny_talker):
    bundle = load_talker(tiny_talker["dir"] / "step_00000002.pt")
    item = load_corpus(DataConfig(path=str(tiny_talker["corpus"]))).train[0]
    mel = log_mel(load_audio(item.path))[0]  # (T, 128)
    codes = torch.from_numpy(encode_utterance(bundle.codec, mel.numpy())).long()
    with torch.no_grad():
        out = bundle.model(torch.tensor(bundle.text.encode(item.text))[None], torch.tensor([len(bundle.text.encode(
            item.text))]), codes[None], torch.tensor([len(codes)]), torch.tensor([bundle.speakers.index(item.speaker)]))
    probs = torch.softmax(out.logits[0].float(), dim=-1)  # (T / 5, n_q, K): this Talker has no depth decoder

    expected = TalkerMels(bundle, "expected")(item, mel)
    assert expected.shape == mel.shape
    torch.testing.assert_close(expected[: 5 * len(codes)], synthesis.probs_to_mel(bundle.codec, [probs])[0][
        : mel.shape[0]], rtol=0, atol=1e-5)
    picked = TalkerMels(bundle, "codes")(item, mel)
    torch.testing.assert_close(picked, synthesis.codes_to_mel(bundle.codec, [probs.argmax(-1)])[0][: mel.shape[0]],
                               rtol=0, atol=1e-5)
    round_trip = CodecMels(bundle.codec)(item, mel)
    assert (expected - round_trip).abs().mean() > 0.05  # not the codec round trip the fine-tune used to learn


def test_finetune_talker_trains_end_to_end(tmp_path, tiny_talker, keep_signal_handlers):
    train = _train_module()
    talker = tiny_talker["dir"] / "step_00000002.pt"
    config = _config(tmp_path, tiny_talker["corpus"], steps=1, gan_start_step=0, eval_every=1, sample_every=1)
    assert train.main(["--config", str(config), "--finetune-talker", str(talker)]) == 0
    run = tmp_path / "runs" / "voc"
    stats = json.loads((run / "stats.json").read_text())
    assert stats["data"]["talker"] == f"{talker}@2" and "codec" in stats["data"]
    assert json.loads((run / "config.json").read_text())["train"]["mel_from"] == "expected"
    with pytest.raises(ConfigError, match="both set"):
        train.main(["--config", str(config), "--finetune-talker", str(talker), "--finetune-codec",
                    str(tiny_talker["codec"]), "--set", "train.run_name=both"])
    assert not Path(tmp_path / "runs" / "both" / "step_00000001.pt").exists()


def test_init_from_universal_fine_tunes_two_steps_end_to_end(tmp_path, flite_corpus, keep_signal_handlers):
    """configs/vocoder_universal.json from the pretrained weights on muomni's mels through the adapter: the
    generator starts at the universal weights (moved only a little by two small steps), the discriminators
    fresh, and the run folder loads as a vocoder that maps muomni's mel to 16 kHz audio."""
    from muomni.checkpoint import load_checkpoint
    from muomni.pretrained import universal_state_dict

    train = _train_module()
    cfg = {"base": str(Path(train.__file__).parent / "configs" / "vocoder_universal.json"),
           "data": {"path": str(flite_corpus), "heldout": 1},
           "train": {"out_dir": str(tmp_path / "runs"), "run_name": "uni", "steps": 2, "segment_size": 2048,
                     "log_every": 1, "eval_every": 2, "sample_every": 2, "save_every": 1, "eval_items": 1,
                     "sample_items": 1, "max_minutes": 5}}
    config = tmp_path / "universal.json"
    config.write_text(json.dumps(cfg))
    assert train.main(["--config", str(config), "--init-from", "universal"]) == 0
    run = tmp_path / "runs" / "uni"
    first = load_checkpoint(run / "step_00000001.pt", stage="vocoder")
    shipped = universal_state_dict()
    assert set(first["generator"]) == set(shipped)
    moved = sum(float((first["generator"][k] - v).square().sum()) for k, v in shipped.items()) ** 0.5
    size = sum(float(v.square().sum()) for v in shipped.values()) ** 0.5
    assert 0 < moved < 0.01 * size  # trained, from the universal weights (a fresh init would be everywhere else)
    assert "discriminators" in first and json.loads((run / "config.json").read_text())["model"]["adapter"] == \
        "resample"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("split") == "heldout" and r["mel_l1"] < r["griffinlim_mel_l1"] + 1.5 for r in records)
    vocoder = load_vocoder(run)
    mel = log_mel(load_audio(load_corpus(DataConfig(path=str(flite_corpus))).heldout[0].path))[0][:40]
    assert synthesis.vocode(mel, vocoder).shape == (40 * 256,)

    with pytest.raises(ConfigError, match="vocoder_universal.json"):  # another architecture: named, not loaded
        train.main(["--config", str(config), "--init-from", "universal", "--set", "train.run_name=tiny",
                    "model.upsample_initial_channel=128"])


def test_the_adapter_alone_trains_from_universal_and_the_generator_stays_as_shipped(tmp_path, flite_corpus,
                                                                                    keep_signal_handlers):
    """configs/vocoder_universal_adapter.json: the refiner trains by regression onto the real audio's mel; every
    generator weight in the checkpoint is the shipped one; the run loads as a vocoder."""
    from muomni.checkpoint import load_checkpoint
    from muomni.pretrained import universal_state_dict

    train = _train_module()
    cfg = {"base": str(Path(train.__file__).parent / "configs" / "vocoder_universal_adapter.json"),
           "data": {"path": str(flite_corpus), "heldout": 1},
           "model": {"adapter_refine": 16},
           "train": {"out_dir": str(tmp_path / "runs"), "run_name": "ad", "steps": 3, "batch_size": 2,
                     "segment_size": 4096, "log_every": 1, "eval_every": 3, "sample_every": 3, "save_every": 3,
                     "eval_items": 1, "sample_items": 1, "max_minutes": 5}}
    config = tmp_path / "adapter.json"
    config.write_text(json.dumps(cfg))
    assert train.main(["--config", str(config), "--init-from", "universal"]) == 0
    run = tmp_path / "runs" / "ad"
    saved = load_checkpoint(run / "step_00000003.pt", stage="vocoder")["generator"]
    for k, v in universal_state_dict().items():
        assert torch.equal(saved[k], v), k
    assert float(saved["adapter.refine.out.weight"].abs().sum()) > 0  # started at zero: it trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train" and "adapter" in r] == [1, 2, 3]
    mel = log_mel(load_audio(load_corpus(DataConfig(path=str(flite_corpus))).heldout[0].path))[0][:40]
    assert synthesis.vocode(mel, load_vocoder(run)).shape == (40 * 256,)

    with pytest.raises(ConfigError, match="adapter_refine"):  # nothing to train: named, not run
        train.main(["--config", str(config), "--init-from", "universal", "--set", "train.run_name=none",
                    "model.adapter_refine=0"])
