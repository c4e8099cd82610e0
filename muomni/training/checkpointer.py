"""A run's checkpoints: save and prune, the newest valid one, resume, --init-from (docs/DESIGN.md §7).

The file format (atomic writes, safe loads, step-checkpoint names) is :mod:`muomni.checkpoint`'s;
this is the policy of a run: what a checkpoint holds, which one a resume takes, who writes under DDP.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from torch import nn

from muomni.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    config_mismatch,
    load_checkpoint,
    save_checkpoint,
    step_checkpoints,
)
from muomni.config import config_to_dict
from muomni.distributed import broadcast_object, gather_object

from .device import unwrap
from .folder import RunFolder
from .log import RunLog
from .rng import rng_state, seed_everything, set_rng_state
from .stop import TrainingError


class Checkpointer:
    """Writes and finds the step checkpoints of one run folder; rank 0 alone writes."""

    def __init__(self, cfg: Any, stage: str, args: argparse.Namespace, rank: int, world: int,
                 folder: RunFolder, runlog: RunLog):
        self.cfg, self.stage, self.args, self.rank, self.world = cfg, stage, args, rank, world
        self.folder, self.runlog, self.dir = folder, runlog, folder.dir
        self.is_main = rank == 0

    def check_folder(self) -> None:
        """Remove the temp files of saves a kill cut short; refuse to clobber a run without --resume."""
        for leftover in self.dir.glob(".*.pt.*.tmp"):  # a save cut short by a kill: never a valid checkpoint
            leftover.unlink(missing_ok=True)
            self.runlog.info(f"removed {leftover.name}, the temp file of a save that a kill interrupted")
        existing = step_checkpoints(self.dir)
        if existing and not self.args.resume:
            raise TrainingError(
                f"run folder {self.dir} already holds checkpoints up to step {existing[-1][0]}: "
                "pass --resume to continue it, or set train.run_name (--set train.run_name=NEW) for a new run")

    def save(self, step: int, objects: dict[str, Any], metric: float | None = None,
             extra: dict[str, Any] | None = None, counts: dict[str, int] | None = None) -> Path | None:
        """Write step_XXXXXXXX.pt (and best.pt when metric is the lowest so far); prune to keep_last.

        ``metric`` is what ``train.best_by`` names (the held-out loss, or the speech check's word error);
        stats.json records it as "best_by" beside "best_metric" and "best_step".

        Under DDP every rank calls it (it gathers each rank's RNG state, so that a resumed run draws
        what it would have drawn); rank 0 alone writes. ``counts``: the skipped-step counts to carry.
        """
        rngs = gather_object(rng_state())
        if not self.is_main:
            return None
        payload = {
            "format_version": CHECKPOINT_VERSION, "stage": self.stage, "step": step,
            "config": config_to_dict(self.cfg), "rng": rngs[0], **(counts or {}), **(extra or {}),
        }
        if self.world > 1:
            payload["rng_ranks"] = rngs
        for name, obj in objects.items():
            payload[name] = unwrap(obj).state_dict() if isinstance(obj, nn.Module) else obj.state_dict()
        path = self.dir / f"step_{step:08d}.pt"
        save_checkpoint(path, payload)
        if metric is not None and math.isfinite(metric):
            stats, best_by = self.folder.read_stats(), self.cfg.train.best_by
            # a best of the other kind (train.best_by changed on --resume) is no bar for this one
            best = stats.get("best_metric", math.inf) if stats.get("best_by", "loss") == best_by else math.inf
            if metric < best:
                save_checkpoint(self.dir / "best.pt", payload)
                self.folder.update_stats(best_metric=metric, best_step=step, best_by=best_by)
        for _, old in step_checkpoints(self.dir)[:-self.cfg.train.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def resume_payload(self) -> dict[str, Any] | None:
        """The newest valid step checkpoint when --resume was given (damaged ones are reported and skipped).

        Under DDP rank 0 chooses the file and every rank reads that same file (the run folder is on a
        file system all ranks share); an error on rank 0 is raised on every rank.
        """
        if not self.args.resume:
            return None
        found, choice = None, None
        if self.is_main:
            try:
                found = self._newest_valid()
                choice = ("ok", str(found[0]) if found else None)
            except CheckpointError as err:
                choice = ("error", str(err))
        kind, value = broadcast_object(choice)
        if kind == "error":
            raise CheckpointError(value)
        if value is None:
            self.runlog.info(f"--resume: no checkpoint in {self.dir} yet, starting at step 0")
            return None
        payload = found[1] if self.is_main else load_checkpoint(value, self.stage)
        self.runlog.info(f"resuming from {value} (step {payload['step']})")
        return payload

    def _newest_valid(self) -> tuple[Path, dict[str, Any]] | None:
        """(path, payload) of the newest loadable step checkpoint of an unchanged model config, or None."""
        for _, path in reversed(step_checkpoints(self.dir)):
            try:
                payload = load_checkpoint(path)
            except CheckpointError as err:
                self.runlog.warn(f"skipping damaged checkpoint: {err}")
                continue
            if payload["stage"] != self.stage:  # not damage: the run folder is another stage's (a config mix-up)
                raise CheckpointError(f"{path}: this is a {payload['stage']} checkpoint, but this is a {self.stage} "
                                      "run: its run folder holds another stage's run; set train.run_name or "
                                      "train.out_dir to this stage's own folder")
            mismatch = self._mismatch(payload)
            if mismatch:
                raise CheckpointError(f"{path}: cannot resume, the model config changed: " + "; ".join(mismatch))
            return path, payload
        return None

    def restore(self, payload: dict[str, Any], objects: dict[str, Any]) -> int:
        """Load every object's state and the RNGs from a resume payload; returns its step."""
        for name, obj in objects.items():
            if name not in payload:
                raise CheckpointError(f"checkpoint of step {payload['step']} has no '{name}' entry")
            target = unwrap(obj) if isinstance(obj, nn.Module) else obj
            target.load_state_dict(payload[name])
        ranks = payload.get("rng_ranks") or [payload["rng"]]
        if len(ranks) == self.world:
            set_rng_state(ranks[self.rank])
        else:  # another number of processes: rank 0 continues the saved stream, the others start afresh
            if self.rank == 0:
                set_rng_state(payload["rng"])
            else:
                seed_everything(self.cfg.train.seed + self.rank + 7919 * int(payload["step"]))
            self.runlog.warn(f"the checkpoint was written by {len(ranks)} process(es), this run has {self.world}: "
                             "data order is kept, random draws of ranks > 0 restart")
        return int(payload["step"])

    def _mismatch(self, payload: dict[str, Any]) -> list[str]:
        """How the checkpoint's model config differs from this run's (keys it predates at their defaults)."""
        return config_mismatch(payload["config"], config_to_dict(self.cfg),
                               defaults=config_to_dict(type(self.cfg.model)()))

    def load_init(self, modules: dict[str, nn.Module]) -> None:
        """--init-from: copy weights of the named modules from a checkpoint of this stage; step stays 0."""
        path = getattr(self.args, "init_from", None)
        if not path:
            return
        payload = load_checkpoint(path, self.stage)
        mismatch = self._mismatch(payload)
        if mismatch:
            raise CheckpointError(f"{path}: cannot initialise from it: " + "; ".join(mismatch))
        for name, module in modules.items():
            unwrap(module).load_state_dict(payload[name])
        self.runlog.info(f"initialised {', '.join(modules)} from {path} (step {payload['step']}); "
                         "starting at step 0")
