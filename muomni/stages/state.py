"""What the state of a one-model stage (the codec, the Talker) holds before its own fields: the model, its
optimizer, schedule, grad scaler and step guard, and what a run adds (the run, the batch order, the speech
check, the restored step, the checkpoint's extra entries). The vocoder's state, two models with an optimizer
each, is its own (``muomni.stages.vocoder.VocoderState``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from muomni.speech_check import SpeechCheck
from muomni.training.run import Run
from muomni.training.step import StepGuard


@dataclass
class ModelState:
    """``new_state`` fills the fields without defaults (a benchmark's state); ``build`` the others."""

    cfg: Any  # the stage's run config (data, model, train)
    device: torch.device
    model: nn.Module  # the plain module: evaluation, samples, checkpoints
    trained: nn.Module  # what the step calls: the model under DDP and torch.compile when asked
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    guard: StepGuard  # takes the optimizer step, skips and counts non-finite ones
    run: Run | None = None
    order: Any = None  # the resumable batch order (BatchOrder, or the Talker's BucketOrder)
    speech: SpeechCheck | None = None
    step: int = 0  # the step restored from (0 on a fresh run)
    extra: dict[str, Any] = field(default_factory=dict)  # what every checkpoint carries beside the objects

    @property
    def objects(self) -> dict[str, Any]:
        """What a checkpoint holds, under the names resume reads back."""
        return {"model": self.model, "optim": self.opt, "sched": self.sched, "scaler": self.scaler,
                "order": self.order}

    def close(self) -> None:
        """Nothing to release (the vocoder's state closes its decoding threads)."""
