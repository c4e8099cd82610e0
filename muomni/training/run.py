"""``Run``: the one object a stage script trains with, composed of the parts of this package.

The run folder (:class:`RunFolder`), its log (:class:`RunLog`), its checkpoints (:class:`Checkpointer`), the
stop control (:class:`StopControl`) and the optimizer step (:class:`StepGuard`) each hold their own state;
``Run`` wires them together once and keeps what spans them: the process-group side (DDP wrapping, rank order,
teardown), the loop's clock, saving and restoring, and the run's end. Everything else is called on its part:
``run.folder`` (stats.json, sample folders), ``run.checkpoints`` (resume payload, --init-from), ``run.guard`` (the
optimizer step and its counts), ``run.stopper`` (why the loop stopped).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from muomni.config import ConfigError, config_to_dict
from muomni.distributed import barrier, init_distributed, leave_process_group

from .checkpointer import Checkpointer
from .device import select_device
from .folder import RunFolder
from .log import RunLog
from .rng import seed_everything
from .step import StepGuard
from .stop import EXIT_STOPPED, StopControl


class Run:
    """A run folder ``<train.out_dir>/<train.run_name>/`` and everything written into it."""

    def __init__(self, cfg: Any, stage: str, args: argparse.Namespace):
        self.cfg, self.stage, self.args = cfg, stage, args
        train = cfg.train
        self.rank, self.world = init_distributed()
        self.is_main = self.rank == 0
        if self.world > 1 and train.batch_size % self.world:
            raise ConfigError(f"train.batch_size ({train.batch_size}) is the global batch and must divide by the "
                              f"number of processes ({self.world}), so that every rank averages an equal share")
        self.dir = Path(train.out_dir) / (train.run_name or Path(args.config).stem)
        self.device = select_device(getattr(args, "device", None) or train.device)
        self.folder = RunFolder(self.dir, self.is_main)
        self.runlog = RunLog(self.dir, stage, self.is_main)
        self.checkpoints = Checkpointer(cfg, stage, args, self.rank, self.world, self.folder, self.runlog)
        self.stopper = StopControl(train.max_minutes, self.world, self.runlog)
        self.guard = StepGuard(train.max_bad_steps, self.world, self.dir, self.runlog)
        self._loop_start: float | None = None  # when progress() started the loop (time.monotonic)
        self._seconds_before = 0.0  # loop seconds of the run before the checkpoint it resumed from
        if self.is_main:  # fail before any training if the folder can't be written or would clobber a run
            self.folder.check_writable()
            self.checkpoints.check_folder()
            self.folder.begin(config_to_dict(cfg))
        seed_everything(train.seed + self.rank)
        self.stopper.install_signal_handlers()
        if self.is_main and train.wandb:
            self.runlog.start_wandb(train.wandb_project, train.wandb_mode, config_to_dict(cfg))

    # ---- checkpoints

    def save(self, step: int, objects: dict[str, Any], metric: float | None = None,
             extra: dict[str, Any] | None = None) -> Path | None:
        """Write step_XXXXXXXX.pt (and best.pt for the lowest metric so far); every rank calls it. The
        checkpoint carries the loop's seconds so far, so ``train_minutes`` goes on across --resume."""
        extra = {**(extra or {}), "train_seconds": self.train_seconds}
        return self.checkpoints.save(step, objects, metric, extra, counts=self.guard.counts())

    def restore(self, payload: dict[str, Any] | None, objects: dict[str, Any]) -> int:
        """Load every object's state, the RNGs and the metrics log from a resume payload; returns its step."""
        if payload is None:
            return 0
        step = self.checkpoints.restore(payload, objects)
        self._seconds_before = float(payload.get("train_seconds", 0.0))  # 0 for checkpoints older than the key
        self.guard.load_counts(payload)
        self.runlog.truncate(step)
        return step

    # ---- data parallel

    def wrap(self, model: nn.Module, **kwargs) -> nn.Module:
        """``model`` under DistributedDataParallel when the run has several processes, unchanged otherwise.

        DDP averages gradients over ranks, so with equal shares of the global batch and a loss that is
        each rank's mean over its share, N processes take the step one process would take. Keep the
        plain module for evaluation, sampling and checkpoints (``unwrap`` finds it).
        """
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (building a disk cache, say), the other ranks after it, so they
        read what it wrote instead of writing the same files at once."""
        if not self.is_main:
            barrier()
        yield
        if self.is_main:
            barrier()

    # ---- the run folder and its log

    def progress(self, start: int, total: int) -> tqdm:
        """The loop's progress bar; train.max_minutes counts from here."""
        bar = self.runlog.progress(start, total)
        self.stopper.start_clock()
        self._loop_start = time.monotonic()
        return bar

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds of the training loop since the run started, carried across --resume (setup and
        caching before progress() do not count; evaluations and speech checks inside the loop do)."""
        now = time.monotonic() - self._loop_start if self._loop_start is not None else 0.0
        return self._seconds_before + now

    @property
    def train_minutes(self) -> float:
        return self.train_seconds / 60

    def log(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        """Append to metrics.jsonl (and wandb); train metrics also go on the progress bar with steps/s."""
        self.runlog.log(step, metrics, split)

    def info(self, message: str) -> None:
        self.runlog.info(message)

    def warn(self, message: str) -> None:
        self.runlog.warn(message)

    # ---- polite stops

    @property
    def stop_requested(self) -> bool:
        """Whether the loop should save and stop: a plain read of the state :meth:`step_done` agreed."""
        return self.stopper.stop

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self.stopper.stop = bool(value)

    def step_done(self, n: int = 1) -> bool:
        """End of a training step: advance the progress bar and agree whether to stop.

        The one place where a stop is decided, once per step: a signal received since the last step
        (SIGINT/SIGTERM), or train.max_minutes passed since the loop started (then ``out_of_time`` is set
        too). Under DDP both flags are agreed over ranks in one collective, so every rank stops after the
        same step. Returns ``stop_requested``.
        """
        self.runlog.advance(n)
        return self.stopper.step_done()

    def finish(self, step: int) -> int:
        """Record why the run ended (stats.json "ended"), close the run; returns the exit status."""
        reason = self.stopper.end_reason
        self.folder.update_stats(ended={"reason": reason, "step": int(step), **self.guard.counts()})
        if reason == "signal":
            self.info(f"stopped at step {step}; continue with --resume")
        self.close()
        return EXIT_STOPPED if reason == "signal" else 0

    def close(self) -> None:
        self.stopper.stop_clock()
        self.runlog.close()
        if self.world > 1:
            leave_process_group()
