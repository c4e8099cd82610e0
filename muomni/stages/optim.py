"""The one optimizer builder of every stage: AdamW from the train section, and its learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from muomni.config import TrainConfig
from muomni.training.schedule import lr_lambda


def build_optimizer(module: nn.Module, train: TrainConfig, fused: bool = False,
                    decay: tuple[float, int] | None = None):
    """AdamW over ``module``'s parameters from train.lr, betas and weight_decay, and its schedule: warm-up then
    cosine (``lr_lambda``), or with ``decay = (factor, steps)`` the rate multiplied by ``factor`` every ``steps``
    steps, smoothly (HiFi-GAN's exponential decay). ``fused``: one kernel for every parameter instead of a
    Python loop over them (CPU and CUDA)."""
    opt = torch.optim.AdamW(module.parameters(), lr=train.lr, betas=tuple(train.betas),
                            weight_decay=train.weight_decay, fused=True if fused else None)
    if decay is None:
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(train))
    factor, steps = decay
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, factor ** (1.0 / steps))
