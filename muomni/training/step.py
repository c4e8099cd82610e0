"""The one optimizer step of every stage, and the accounting of the steps it skips (docs/DESIGN.md §7)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from muomni.checkpoint import step_checkpoints
from muomni.distributed import any_ranks

from .log import RunLog
from .stop import TrainingError


def finite_flags(loss: torch.Tensor | float | None, grad_norm: torch.Tensor | float) -> tuple[bool, bool]:
    """(loss is finite, gradient norm is finite) in one host synchronisation."""
    norm = torch.as_tensor(grad_norm).detach().float().reshape(())
    parts = [torch.isfinite(norm)]
    if loss is not None:
        parts.insert(0, torch.isfinite(torch.as_tensor(loss).detach().float()).all().to(norm.device))
    flags = torch.stack(parts).tolist()  # the one sync of a step's check
    return (bool(flags[0]) if loss is not None else True), bool(flags[-1])


@dataclass
class StepResult:
    """What :meth:`Run.optimizer_step` did: ``accepted`` is False for a skipped step (bad or overflow)."""

    accepted: bool
    grad_norm: torch.Tensor  # the norm before clipping (a 0-d tensor: read it only when logging)
    overflow: bool = False  # an fp16 overflow the grad scaler handled (not counted as a bad step)


class StepGuard:
    """Takes optimizer steps and counts the skipped ones: bad (non-finite) steps and fp16 overflows."""

    def __init__(self, max_bad_steps: int, world: int, run_dir: Path, runlog: RunLog):
        self.max_bad_steps, self.world, self.dir, self.runlog = max_bad_steps, world, run_dir, runlog
        self.bad_steps = self.overflow_steps = 0
        self._in_a_row: dict[str, int] = {}  # non-finite steps in a row, per optimizer

    @classmethod
    def quiet(cls, max_bad_steps: int) -> StepGuard:
        """A guard outside any run (a benchmark's steps): it counts, logs nothing and names no run folder."""
        return cls(max_bad_steps, 1, Path("."), RunLog(Path("."), "step", is_main=False))

    @property
    def bad_in_a_row(self) -> int:
        return max(self._in_a_row.values(), default=0)

    def counts(self) -> dict[str, int]:
        """The counts a checkpoint carries, so that a resumed run goes on counting."""
        return {"bad_steps": self.bad_steps, "overflow_steps": self.overflow_steps}

    def load_counts(self, payload: dict[str, Any]) -> None:
        self.bad_steps = int(payload.get("bad_steps", 0))
        self.overflow_steps = int(payload.get("overflow_steps", 0))

    def optimizer_step(self, step: int, optimizer: torch.optim.Optimizer, parameters: Iterable[nn.Parameter],
                       scaler: torch.amp.GradScaler | None = None,
                       clip: float = 0.0, loss: torch.Tensor | float | None = None, name: str = "") -> StepResult:
        """The one optimizer step of every stage: unscale -> clip -> finite check -> step -> scaler update.

        The policy, the same everywhere:

        - a finite loss and gradient norm: the step is taken;
        - with an active fp16 grad scaler whose scale is above 1, a finite loss with a non-finite
          gradient is an overflow: the scaler skips the step and lowers its scale. It is counted
          (``overflow_steps``, logged as split "bad") but is not a bad step: the scaler recovers;
        - anything else non-finite is a bad step: skipped, counted (``bad_steps``) and logged;
          ``train.max_bad_steps`` of them in a row (per optimizer) stop the run with a TrainingError.

        ``scaler.update()`` runs on every step, taken or skipped, so the next ``unscale_`` finds a fresh
        state. Gradients are zeroed afterwards. Under DDP the ranks agree (one collective), so a step is
        skipped everywhere if it is bad anywhere. One host synchronisation per call (the finite check).
        """
        params = [p for p in parameters if p.grad is not None]
        active = scaler is not None and scaler.is_enabled()
        if active:
            scaler.unscale_(optimizer)
        grad_norm = nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        loss_ok, norm_ok = finite_flags(loss, grad_norm)
        if self.world > 1:
            loss_bad, norm_bad = any_ranks([not loss_ok, not norm_ok])
            loss_ok, norm_ok = not loss_bad, not norm_bad
        overflow = active and loss_ok and not norm_ok and scaler.get_scale() > 1.0
        if loss_ok and norm_ok:
            self._in_a_row[name] = 0
            (scaler.step(optimizer) if scaler is not None else optimizer.step())
        elif overflow:
            self.overflow_steps += 1
            self.runlog.log(step, {"overflow_steps": self.overflow_steps, "scale": scaler.get_scale()}, split="bad")
        else:
            self._bad_step(step, loss, grad_norm, name)
        if scaler is not None:
            scaler.update()  # always: after a skipped step too (an overflow lowers the scale here)
        optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_ok and norm_ok, grad_norm.detach(), overflow)

    def _bad_step(self, step: int, loss, grad_norm, name: str) -> None:
        self.bad_steps += 1
        in_a_row = self._in_a_row[name] = self._in_a_row.get(name, 0) + 1
        what = f"{name} " if name else ""
        shown = "n/a" if loss is None else f"{float(torch.as_tensor(loss).detach()):.4g}"
        self.runlog.warn(f"step {step}: non-finite {what}loss or gradient norm (loss {shown}, grad norm "
                         f"{float(grad_norm):.4g}); step skipped ({in_a_row} in a row)")
        self.runlog.log(step, {"bad_steps": self.bad_steps, "bad_in_a_row": in_a_row}, split="bad")
        if in_a_row >= self.max_bad_steps:
            newest = step_checkpoints(self.dir)
            where = f"the last checkpoint {newest[-1][1]} is intact" if newest else "no checkpoint was written yet"
            raise TrainingError(f"{in_a_row} non-finite steps in a row (train.max_bad_steps = "
                                f"{self.max_bad_steps}): stopping; {where}. Lower train.lr or "
                                "check the data for NaN/inf.")
