"""The package CLI: loss-curve pictures and exporting a checkpoint without pickle."""

import json

import pytest
import torch

from muomni.__main__ import main
from muomni.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_plot_writes_one_png_per_split(tmp_path):
    lines = [{"step": s, "split": "train", "time": 0, "loss": 1 / s, "lr": 1e-3} for s in range(1, 20)]
    lines += [{"step": s, "split": "eval", "time": 0, "mse": 0.3 - s / 100} for s in (10, 19)]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{\"step\": 20, \"spl"  # last line cut by a kill
    (tmp_path / "metrics.jsonl").write_text(text)
    assert main(["plot", str(tmp_path)]) == 0
    for split in ("train", "eval"):
        png = tmp_path / "plots" / f"{split}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_export_roundtrip_drops_training_state(tmp_path):
    pytest.importorskip("safetensors", reason="the export extra is installed by make test")
    payload = {"stage": "talker", "step": 3, "config": {"model": {"d": 4}}, "vocab": ["<pad>", "a"],
               "model": {"w": torch.randn(2, 3), "layers.0.b": torch.arange(4)},
               "codec": {"model": {"cb": torch.ones(5)}, "config": {"n_q": 2}},
               "optim": {"state": {0: {"exp_avg": torch.ones(1)}}}, "rng": {"torch": torch.zeros(3)}}
    save_checkpoint(tmp_path / "c.pt", payload)
    assert main(["export", str(tmp_path / "c.pt"), "--out", str(tmp_path / "exp")]) == 0
    back = load_checkpoint(tmp_path / "exp", "talker")
    assert "optim" not in back and "rng" not in back
    assert back["vocab"] == payload["vocab"] and back["codec"]["config"] == {"n_q": 2}
    torch.testing.assert_close(back["model"]["w"], payload["model"]["w"])
    torch.testing.assert_close(back["codec"]["model"]["cb"], payload["codec"]["model"]["cb"])
    with pytest.raises(CheckpointError, match="neither a run folder with step checkpoints nor an exported model"):
        load_checkpoint(tmp_path)


def test_a_run_folder_loads_its_newest_step_checkpoint(tmp_path):
    """What the demo and a user pass around: checkpoints/<run> stands for its newest step checkpoint."""
    for step in (2, 10, 4):
        save_checkpoint(tmp_path / f"step_{step:08d}.pt", {"stage": "codec", "step": step})
    assert load_checkpoint(tmp_path, "codec")["step"] == 10
