"""What each step sees, as a pure function of the step count: its learning-rate factor and its batch.

Both are deterministic, so a resumed run continues the schedule and the data order exactly (docs/DESIGN.md §7).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from muomni.config import TrainConfig


def lr_lambda(train: TrainConfig) -> Any:
    """Linear warmup over train.warmup_steps, then cosine decay to train.min_lr (a fraction) at train.steps."""
    warmup, total, floor = max(train.warmup_steps, 0), max(train.steps, 1), train.min_lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class BatchOrder:
    """Shuffled batches of item indices, deterministic per (seed, epoch), resumable to the exact batch.

    ``batch_size`` is the global batch; under DDP each rank takes every world-th index of it,
    so N processes see exactly the items one process would.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n_items < 1:
            raise ValueError("BatchOrder needs at least one item")
        self.n, self.batch_size, self.seed = n_items, min(batch_size, n_items), seed
        self.rank, self.world = rank, world
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def next(self) -> list[int]:
        if self.pos + self.batch_size > self.n:  # drop the last partial batch: fixed shapes
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation()
        batch = self._perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch[self.rank::self.world].tolist()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("n", self.n) != self.n:
            warnings.warn(f"the corpus changed since the checkpoint ({state['n']} -> {self.n} items); "
                          "the data order restarts from the checkpoint's epoch", stacklevel=2)
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation()
