"""Where and how a model computes: the device, mixed precision, torch.compile and the wrappers around a module.

Device- and dtype-agnostic: ``nullcontext()`` where nothing is cast, autocast elsewhere (docs/DESIGN.md §8, §10).
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
from torch import nn

from muomni.config import ConfigError


def select_device(pref: str = "auto") -> torch.device:
    """cuda, then mps, then cpu unless a device is named; on CUDA with TF32 matmuls and cuDNN autotuning."""
    device = _pick_device(pref)
    if device.type == "cuda":  # every stage and inference comes through here
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls outside autocast on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest convolution algorithm, found once
    return device


def _pick_device(pref: str) -> torch.device:
    if pref and pref != "auto":
        device = torch.device(pref)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {pref!r} requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where supported, else fp16, on CUDA; no autocast elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True):
    dtype = amp_dtype(device) if enabled else None
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def make_grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A grad scaler that is active only for fp16 autocast (bf16 needs none)."""
    return torch.amp.GradScaler(device.type, enabled=enabled and amp_dtype(device) == torch.float16)


def maybe_compile(module: nn.Module, enabled: bool, **kwargs) -> nn.Module:
    return torch.compile(module, **kwargs) if enabled else module


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers (saved without '_orig_mod.' prefixes)."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module
