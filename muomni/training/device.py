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


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX), where bf16 matmuls beat fp32.

    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is not this test: it is also true on plain AVX-512,
    where oneDNN emulates bf16 and runs slower than fp32.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def amp_dtype(device: torch.device, cpu_precision: str = "fp32") -> torch.dtype | None:
    """bf16 where supported, else fp16, on CUDA; on CPU bf16 if cpu_precision asks for it; else none.

    cpu_precision: fp32 (no autocast) | bf16 | auto (bf16 only where the CPU has it natively).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (cpu_precision == "bf16" or (cpu_precision == "auto" and cpu_has_native_bf16())):
        return torch.bfloat16
    return None


def _autocast_dtype(device: torch.device, enabled: bool, cpu_precision: str) -> torch.dtype | None:
    return amp_dtype(device, cpu_precision) if enabled or device.type == "cpu" else None


def autocast(device: torch.device, enabled: bool = True, cpu_precision: str = "fp32"):
    """enabled (train.amp) governs CUDA, cpu_precision the CPU; nullcontext() where neither casts."""
    dtype = _autocast_dtype(device, enabled, cpu_precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def precision_name(device: torch.device, enabled: bool = True, cpu_precision: str = "fp32") -> str:
    """What :func:`autocast` computes in, for the log: "bf16 autocast", "fp16 autocast" or "float32"."""
    dtype = _autocast_dtype(device, enabled, cpu_precision)
    return {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(dtype, "float32")


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
