"""Every loader of a trained model: a checkpoint file, a run folder (its newest step) or a folder written by
``python -m muomni export`` -> the model in eval mode, ready for inference (``muomni.checkpoint`` reads the
file and checks its stage; this module builds the model its config describes and loads the weights).

- ``load_codec``: a train_codec.py checkpoint -> ``CodecModel``;
- ``load_talker``: a train_talker.py checkpoint -> ``TalkerBundle`` (the Talker, its codec, its vocabulary,
  its speakers: everything ``muomni.synthesis`` needs);
- ``load_vocoder``: a train_vocoder.py checkpoint, or a pretrained name (``universal``, ``universal:<adapter>``)
  -> a HiFi-GAN generator.

Model files (``muomni.models``) never import this module: they take a config and do no file I/O.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from muomni.checkpoint import load_checkpoint
from muomni.config import ConfigError, model_from_dict
from muomni.models.codec import CodecModel, codec_from_dict
from muomni.models.hifigan import HiFiGANConfig
from muomni.models.talker import AnyTalkerConfig, build_talker
from muomni.models.universal import build_generator
from muomni.pretrained import is_pretrained_name, load_universal, parse_name
from muomni.synthesis import TalkerBundle
from muomni.text import TextProcessor


def load_codec(path: str | Path, device: str | torch.device = "cpu") -> CodecModel:
    """A codec checkpoint written by train_codec.py -> CodecModel in eval mode on ``device``."""
    payload = load_checkpoint(path, stage="codec")
    return codec_from_dict(payload, source=str(path)).to(device)


def load_talker(path: str | Path, device: str | torch.device = "cpu") -> TalkerBundle:
    """A train_talker.py checkpoint -> TalkerBundle in eval mode; needs no other file."""
    payload = load_checkpoint(path, stage="talker")
    for key in ("model", "codec", "text"):
        if key not in payload:
            raise ConfigError(f"{path}: Talker checkpoint has no '{key}' entry (written by an older train_talker.py?)")
    cfg = model_from_dict(AnyTalkerConfig, payload["config"]["model"], source=str(path))
    model = build_talker(cfg)
    model.load_state_dict(payload["model"])
    codec = codec_from_dict(payload["codec"], source=f"{path} (codec)")
    return TalkerBundle(model.eval().to(device), codec.eval().to(device), TextProcessor.from_dict(payload["text"]),
                        list(payload.get("speakers", [""])), int(payload.get("step", 0)))


def load_vocoder(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The HiFi-GAN generator of a train_vocoder.py checkpoint (file, run folder or exported folder), or the
    pretrained one a name gives: ``universal`` (HiFi-GAN V1's universal generator behind the default mel
    adapter) or ``universal:<adapter>`` (``muomni.pretrained``); in eval mode with weight norm folded in.
    Either maps muomni's log-mel (B, T, 128) to 16 kHz audio (B, T * 256).

    Raises CheckpointError for a damaged file or a checkpoint of another stage, and PretrainedMissing (a
    ConfigError naming the install command) when a pretrained name's package is not installed.
    """
    if is_pretrained_name(path):
        generator = load_universal(parse_name(str(path)))
        return generator.remove_weight_norm().eval().to(device)
    payload = load_checkpoint(path, stage="vocoder")
    if "generator" not in payload:
        raise ConfigError(f"{path}: vocoder checkpoint has no 'generator' weights")
    cfg = model_from_dict(HiFiGANConfig, payload["config"]["model"], source=str(path))
    generator = build_generator(cfg)
    generator.load_state_dict(payload["generator"])
    return generator.remove_weight_norm().eval().to(device)
