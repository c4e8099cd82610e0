"""The three stages read the same way: one shape per module, a benchmark's state steps like a run's, the data
settles the Talker's config before its run exists, and stats.json has one writer."""

import json

import pytest
import torch

from muomni.__main__ import main as package_main
from muomni.config import config_from_dict, read_json_with_base
from muomni.models.talker.common import random_batch
from muomni.stages import codec, talker, vocoder
from muomni.training.folder import RunFolder

SHAPE = ("new_state", "build", "next_batch", "train_step", "log_record", "evaluate", "samples", "speech_wavs")


@pytest.mark.parametrize("stage", [codec, talker, vocoder], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_stage_module_has_the_same_shape(stage):
    missing = [name for name in SHAPE if not callable(getattr(stage, name, None))]
    assert not missing, f"{stage.__name__} lacks {missing}"
    state_cls = stage.new_state.__annotations__["return"]
    state_cls = getattr(stage, state_cls) if isinstance(state_cls, str) else state_cls
    assert isinstance(getattr(state_cls, "objects", None), property) and callable(state_cls.close)


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _moved(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_new_state_steps_each_stage_on_a_synthetic_batch():
    """What the benchmarks time is the run's own step: one train_step on random data moves the weights and
    returns finite losses, for each stage."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    cfg = read_json_with_base("configs/codec_tiny.json")
    cfg["model"].update(hidden_dim=32, latent_dim=16, codebook_dim=16, n_blocks=1, kmeans_iters=0)
    state = codec.new_state(config_from_dict({**cfg, "train": {**cfg["train"], "batch_size": 2}}, codec.CodecRun),
                            device)
    before = _params(state.model)
    out = codec.train_step(state, torch.randn(2, 4 * state.model.cfg.frames_per_token, 128), 0)
    assert torch.isfinite(out["loss"]) and _moved(before, state.model)

    model = {"d_model": 32, "n_layers": 1, "n_heads": 2, "ffn_dim": 64, "encoder_layers": 1, "vocab_size": 20,
             "n_q": 2, "codebook_size": 16, "max_text": 12, "max_frames": 10}
    state = talker.new_state(config_from_dict({"model": model, "train": {"warmup_steps": 0}}, talker.TalkerRun),
                             device)
    batch = {**random_batch(torch.Generator().manual_seed(0), 2, 12, 10, vocab_size=20, n_q=2, codebook_size=16),
             "speakers": torch.zeros(2, dtype=torch.long), "ended": torch.ones(2, dtype=torch.bool)}
    before = _params(state.model)
    out = talker.train_step(state, [batch], 0)
    assert torch.isfinite(out["loss"]) and _moved(before, state.model)

    small = {"upsample_initial_channel": 16, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]],
             "mpd_channels": [4, 8, 8, 8], "msd_channels": 4, "msd_max_channels": 8}
    run_cfg = config_from_dict({"model": small, "train": {"batch_size": 1, "grad_accum": 1}}, vocoder.VocoderRunConfig)
    state = vocoder.new_state(run_cfg, device)
    before = _params(state.generator)
    out = vocoder.train_step(state, [(0.1 * torch.randn(1, 8192), torch.randn(1, 32, 128) - 4)], 0)
    assert torch.isfinite(out["loss"]) and out["gan"] == 1.0 and _moved(before, state.generator)


def test_the_talker_run_writes_the_config_its_data_settled(tiny_talker):
    """config.json is written once, with the vocabulary, speakers, codebooks and lengths the data fixed: the
    same model section as the checkpoints carry."""
    from muomni.checkpoint import load_checkpoint

    written = json.loads((tiny_talker["dir"] / "config.json").read_text())["model"]
    assert all(written[k] > 0 for k in ("vocab_size", "n_speakers", "n_q", "codebook_size", "max_text",
                                        "max_frames"))
    assert load_checkpoint(tiny_talker["dir"], "talker")["config"]["model"] == written


def test_update_stats_merges_removes_and_writes_only_on_rank_zero(tmp_path):
    folder = RunFolder(tmp_path, is_main=True)
    folder.update_stats(a=1, b={"x": 2})
    folder.update_stats(b=None, c=[3])
    assert json.loads((tmp_path / "stats.json").read_text()) == {"a": 1, "c": [3]}
    RunFolder(tmp_path, is_main=False).update_stats(a=5)
    assert folder.read_stats()["a"] == 1


def test_evaluate_is_a_command_of_the_package(capsys):
    with pytest.raises(SystemExit) as exit_:
        package_main(["evaluate", "--help"])
    assert exit_.value.code == 0 and "codec" in capsys.readouterr().out


def test_an_older_run_config_with_the_vocoders_num_workers_still_loads(tmp_path):
    """Run folders written before num_workers became the vocoder's alone hold train.num_workers = 0 for every
    stage: their config.json loads again; any other value is refused, naming the key."""
    from muomni.config import ConfigError, load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"num_workers": 0, "steps": 5}}))
    assert load_config(path, codec.CodecRun).train.steps == 5
    assert load_config(path, talker.TalkerRun).train.steps == 5
    path.write_text(json.dumps({"train": {"num_workers": 2}}))
    assert load_config(path, vocoder.VocoderRunConfig).train.num_workers == 2
    with pytest.raises(ConfigError, match="train.num_workers = 2"):
        load_config(path, codec.CodecRun)
