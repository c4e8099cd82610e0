"""Shared training machinery: runs, checkpoints, resume, logging, AMP, compile, DDP (docs/DESIGN.md §7).

Every stage script builds its objects, then hands them to a :class:`Run` by name::

    run = Run(cfg, "codec", args)
    objects = {"model": model, "optim": opt, "sched": sched, "scaler": scaler, "order": order}
    step = run.restore(run.resume_payload(), objects)      # 0 on a fresh run
    ...
    run.save(step, objects, metric=heldout_loss)

A checkpoint is a plain dict (tensors, numbers, strings, lists) written to a temp file and
renamed, and loaded with ``torch.load(..., weights_only=True)``: it never runs code.

Every optimizer step goes through :meth:`Run.optimizer_step` (unscale, clip, one finite check,
step, scaler update), and every training step ends with :meth:`Run.step_done`, the one place where
a stop (a signal, ``train.max_minutes``) is agreed. The stages stop the same way; their exit status:

- 0: the run reached ``train.steps``, or ``train.max_minutes`` ran out (a checkpoint is saved at the
  step where time ran out; ``--resume`` continues);
- 1: an error, named in the message (the newest checkpoint is intact);
- 130 (``EXIT_STOPPED``): SIGINT or SIGTERM; a checkpoint is saved at the next step boundary and
  ``--resume`` continues.

Why a run ended ("steps", "max_minutes", "signal") is recorded in its stats.json under ``ended``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import (  # noqa: F401  (re-exported: stages import checkpoint helpers from here)
    CHECKPOINT_VERSION,
    CheckpointError,
    config_mismatch,
    load_checkpoint,
    save_checkpoint,
    step_checkpoints,
)
from .config import ConfigError, config_to_dict, load_config
from .distributed import any_ranks, barrier, broadcast_object, gather_object, init_distributed

MIN_FREE_BYTES = 64 * 2**20
EXIT_STOPPED = 130  # a signal stopped the run after saving a checkpoint (the shell's code for SIGINT)
EXIT_STATUS_HELP = """exit status:
  0    done: train.steps reached, or train.max_minutes ran out (checkpoint saved; --resume continues)
  1    error (the message names the file or key; the newest checkpoint is intact)
  130  stopped by SIGINT or SIGTERM: checkpoint saved at the next step boundary (--resume continues)"""


class TrainingError(RuntimeError):
    """A run that cannot go on (too many non-finite steps, unwritable output)."""


# ---------------------------------------------------------------- devices, precision, seeding


def add_run_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.epilog = EXIT_STATUS_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", required=True, help="JSON config (may name a 'base' config)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    parser.add_argument("--init-from", metavar="CKPT", help="load weights only and start at step 0")
    parser.add_argument("--set", metavar="K=V", nargs="+", action="extend", default=[],
                        help="override config values, e.g. --set train.lr=1e-3 model.n_layers=2")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: train.device)")
    return parser


def load_run_config(args: argparse.Namespace, schema: type) -> Any:
    return load_config(args.config, schema, args.set)


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


CPU_PRECISIONS = ("fp32", "bf16", "auto")


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


def autocast(device: torch.device, enabled: bool = True, cpu_precision: str = "fp32"):
    """enabled (train.amp) governs CUDA, cpu_precision the CPU; nullcontext() where neither casts."""
    dtype = amp_dtype(device, cpu_precision) if enabled or device.type == "cpu" else None
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


def lr_lambda(train) -> Any:
    """Linear warmup over train.warmup_steps, then cosine decay to train.min_lr (a fraction) at train.steps."""
    warmup, total, floor = max(train.warmup_steps, 0), max(train.steps, 1), train.min_lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


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


# ---------------------------------------------------------------- RNG and data position


def rng_state() -> dict[str, Any]:
    """Every RNG a step touches, as plain types (loadable with weights_only=True)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    out = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    version, inner, gauss = state["python"]
    random.setstate((version, tuple(inner), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


# ---------------------------------------------------------------- the run

_clock = time.monotonic  # the clock train.max_minutes is measured on


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
        self.bad_steps = self.overflow_steps = 0
        self._in_a_row: dict[str, int] = {}  # non-finite steps in a row, per optimizer
        self._signal: str | None = None  # set by the signal handler, acted on at the next step boundary
        self._stop = False  # agreed by step_done(), once per step
        self.out_of_time = False  # the stop came from train.max_minutes, not from a signal
        self._deadline = None  # set by progress(), when the training loop starts
        self._bar = None
        self._last_log = (time.perf_counter(), 0)
        self._wandb = None
        self._check_output()
        if self.is_main:
            write_json(self.dir / "config.json", config_to_dict(cfg))
            stats = self.read_stats()
            if "ended" in stats:  # this run goes on: it has not ended until finish() says so again
                del stats["ended"]
                self.write_stats(stats)
        seed_everything(train.seed + self.rank)
        self._install_signal_handlers()
        if self.is_main and train.wandb:
            self._start_wandb()

    # ---- output folder

    def _check_output(self) -> None:
        """Fail before any training if the run folder can't be written or would clobber a run."""
        if not self.is_main:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write_test"
            probe.write_bytes(b"0" * 1024)
            probe.unlink()
        except OSError as err:
            raise TrainingError(f"run folder {self.dir} is not writable: {err.strerror or err}") from None
        free = shutil.disk_usage(self.dir).free
        if free < MIN_FREE_BYTES:
            raise TrainingError(f"run folder {self.dir}: only {free // 2**20} MiB free on its disk; "
                                f"at least {MIN_FREE_BYTES // 2**20} MiB are needed for checkpoints")
        for leftover in self.dir.glob(".*.pt.*.tmp"):  # a save cut short by a kill: never a valid checkpoint
            leftover.unlink(missing_ok=True)
            self.info(f"removed {leftover.name}, the temp file of a save that a kill interrupted")
        existing = step_checkpoints(self.dir)
        if existing and not self.args.resume:
            raise TrainingError(
                f"run folder {self.dir} already holds checkpoints up to step {existing[-1][0]}: "
                "pass --resume to continue it, or set train.run_name (--set train.run_name=NEW) for a new run")

    # ---- checkpoints

    def save(self, step: int, objects: dict[str, Any], metric: float | None = None,
             extra: dict[str, Any] | None = None) -> Path | None:
        """Write step_XXXXXXXX.pt (and best.pt when metric is the lowest so far); prune to keep_last.

        Under DDP every rank calls it (it gathers each rank's RNG state, so that a resumed run draws
        what it would have drawn); rank 0 alone writes.
        """
        rngs = gather_object(rng_state())
        if not self.is_main:
            return None
        payload = {
            "format_version": CHECKPOINT_VERSION, "stage": self.stage, "step": step,
            "config": config_to_dict(self.cfg), "rng": rngs[0],
            "bad_steps": self.bad_steps, "overflow_steps": self.overflow_steps, **(extra or {}),
        }
        if self.world > 1:
            payload["rng_ranks"] = rngs
        for name, obj in objects.items():
            payload[name] = unwrap(obj).state_dict() if isinstance(obj, nn.Module) else obj.state_dict()
        path = self.dir / f"step_{step:08d}.pt"
        save_checkpoint(path, payload)
        if metric is not None and math.isfinite(metric):
            stats = self.read_stats()
            if metric < stats.get("best_metric", math.inf):
                save_checkpoint(self.dir / "best.pt", payload)
                self.write_stats({**stats, "best_metric": metric, "best_step": step})
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
            self.info(f"--resume: no checkpoint in {self.dir} yet, starting at step 0")
            return None
        payload = found[1] if self.is_main else load_checkpoint(value, self.stage)
        self.info(f"resuming from {value} (step {payload['step']})")
        return payload

    def _newest_valid(self) -> tuple[Path, dict[str, Any]] | None:
        """(path, payload) of the newest loadable step checkpoint of an unchanged model config, or None."""
        for _, path in reversed(step_checkpoints(self.dir)):
            try:
                payload = load_checkpoint(path)
            except CheckpointError as err:
                self.warn(f"skipping damaged checkpoint: {err}")
                continue
            if payload["stage"] != self.stage:  # not damage: the run folder is another stage's (a config mix-up)
                raise CheckpointError(f"{path}: this is a {payload['stage']} checkpoint, but this is a {self.stage} "
                                      "run: its run folder holds another stage's run; set train.run_name or "
                                      "train.out_dir to this stage's own folder")
            mismatch = config_mismatch(payload["config"], config_to_dict(self.cfg))
            if mismatch:
                raise CheckpointError(f"{path}: cannot resume, the model config changed: " + "; ".join(mismatch))
            return path, payload
        return None

    def restore(self, payload: dict[str, Any] | None, objects: dict[str, Any]) -> int:
        """Load every object's state, the RNGs and the metrics log from a resume payload; returns its step."""
        if payload is None:
            return 0
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
            self.warn(f"the checkpoint was written by {len(ranks)} process(es), this run has {self.world}: "
                      "data order is kept, random draws of ranks > 0 restart")
        self.bad_steps = int(payload.get("bad_steps", 0))
        self.overflow_steps = int(payload.get("overflow_steps", 0))
        self._truncate_metrics(payload["step"])
        return int(payload["step"])

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

    def load_init(self, modules: dict[str, nn.Module]) -> None:
        """--init-from: copy weights of the named modules from a checkpoint of this stage; step stays 0."""
        path = getattr(self.args, "init_from", None)
        if not path:
            return
        payload = load_checkpoint(path, self.stage)
        mismatch = config_mismatch(payload["config"], config_to_dict(self.cfg))
        if mismatch:
            raise CheckpointError(f"{path}: cannot initialise from it: " + "; ".join(mismatch))
        for name, module in modules.items():
            unwrap(module).load_state_dict(payload[name])
        self.info(f"initialised {', '.join(modules)} from {path} (step {payload['step']}); starting at step 0")

    # ---- stats, samples, metrics

    def read_stats(self) -> dict[str, Any]:
        path = self.dir / "stats.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_stats(self, stats: dict[str, Any]) -> None:
        if self.is_main:
            write_json(self.dir / "stats.json", stats)

    def record_data(self, **fingerprints: str) -> None:
        """Note what this run trains on (stats.json "data": e.g. corpus=corpus_fingerprint(...), codec=
        codec_hash(...)), so that a rerun (the demo) can tell a finished run of other data from its own."""
        if self.is_main:
            self.write_stats({**self.read_stats(), "data": dict(fingerprints)})

    def sample_dir(self, step: int) -> Path:
        path = self.dir / "samples" / f"step_{step:08d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def progress(self, start: int, total: int):
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=start, desc=self.stage, dynamic_ncols=True,
                         disable=not self.is_main, unit="step")
        self._last_log = (time.perf_counter(), start)
        if self.cfg.train.max_minutes > 0:  # the budget counts training, not data caching and setup
            self._deadline = _clock() + 60 * self.cfg.train.max_minutes
        return self._bar

    def log(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        """Append to metrics.jsonl (and wandb); train metrics also go on the progress bar with steps/s."""
        if not self.is_main:
            return
        metrics = {k: (float(v) if isinstance(v, (int, float, torch.Tensor, np.floating)) else v)
                   for k, v in metrics.items()}
        if split == "train":
            now, last_step = time.perf_counter(), self._last_log[1]
            if step > last_step:
                metrics.setdefault("steps_per_s", (step - last_step) / max(now - self._last_log[0], 1e-9))
            self._last_log = (now, step)
            if self._bar is not None:
                shown = {k: metrics[k] for k in ("loss", "lr", "steps_per_s") if k in metrics}
                self._bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
        record = {"step": step, "split": split, "time": time.time(), **metrics}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log({f"{split}/{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop records logged after the checkpoint we resume from, so the curve has no doubled steps."""
        path = self.dir / "metrics.jsonl"
        if not (self.is_main and path.is_file()):
            return
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and _record_step(line) <= step]
        write_text(path, "".join(line + "\n" for line in kept))

    def info(self, message: str) -> None:
        if self.is_main:
            (self._bar.write if self._bar is not None else print)(f"[{self.stage}] {message}", file=sys.stderr)

    def warn(self, message: str) -> None:
        self.info(f"warning: {message}")

    # ---- optimizer steps, non-finite steps and polite stops

    @property
    def bad_in_a_row(self) -> int:
        return max(self._in_a_row.values(), default=0)

    def optimizer_step(self, step: int, optimizer: torch.optim.Optimizer, parameters, scaler=None,
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
            self.log(step, {"overflow_steps": self.overflow_steps, "scale": scaler.get_scale()}, split="bad")
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
        self.warn(f"step {step}: non-finite {what}loss or gradient norm (loss {shown}, grad norm "
                  f"{float(grad_norm):.4g}); step skipped ({in_a_row} in a row)")
        self.log(step, {"bad_steps": self.bad_steps, "bad_in_a_row": in_a_row}, split="bad")
        if in_a_row >= self.cfg.train.max_bad_steps:
            newest = step_checkpoints(self.dir)
            where = f"the last checkpoint {newest[-1][1]} is intact" if newest else "no checkpoint was written yet"
            raise TrainingError(f"{in_a_row} non-finite steps in a row (train.max_bad_steps = "
                                f"{self.cfg.train.max_bad_steps}): stopping; {where}. Lower train.lr or "
                                "check the data for NaN/inf.")

    @property
    def stop_requested(self) -> bool:
        """Whether the loop should save and stop: a plain read of the state :meth:`step_done` agreed."""
        return self._stop

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self._stop = bool(value)

    def step_done(self, n: int = 1) -> bool:
        """End of a training step: advance the progress bar and agree whether to stop.

        The one place where a stop is decided, once per step: a signal received since the last step
        (SIGINT/SIGTERM), or train.max_minutes passed since the loop started (then ``out_of_time`` is set
        too). Under DDP both flags are agreed over ranks in one collective, so every rank stops after the
        same step. Returns ``stop_requested``.
        """
        if self._bar is not None:
            self._bar.update(n)
        late = self._deadline is not None and _clock() > self._deadline
        signalled = self._signal is not None
        if self.world > 1:
            signalled, late = any_ranks([signalled, late])
        if signalled and not self._stop:
            self._stop = True
            self.info(f"{self._signal or 'a signal on another rank'}: saving a checkpoint and stopping "
                      f"(exit status {EXIT_STOPPED}; --resume continues the run)")
        elif late and not self._stop:
            self.out_of_time = self._stop = True
            self.info(f"train.max_minutes = {self.cfg.train.max_minutes:g} reached: saving a checkpoint and "
                      "stopping (--resume continues the run)")
        return self._stop

    @property
    def end_reason(self) -> str:
        """Why the loop ended: "signal", "max_minutes" or "steps"."""
        if self._stop and not self.out_of_time:
            return "signal"
        return "max_minutes" if self.out_of_time else "steps"

    def finish(self, step: int) -> int:
        """Record why the run ended (stats.json "ended"), close the run; returns the exit status."""
        reason = self.end_reason
        if self.is_main:
            self.write_stats({**self.read_stats(), "ended": {"reason": reason, "step": int(step),
                                                             "bad_steps": self.bad_steps,
                                                             "overflow_steps": self.overflow_steps}})
        if reason == "signal":
            self.info(f"stopped at step {step}; continue with --resume")
        self.close()
        return EXIT_STOPPED if reason == "signal" else 0

    def _install_signal_handlers(self) -> None:
        def request_stop(signum, frame):
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
            self._signal = signal.Signals(signum).name
            self.info(f"{self._signal} received: saving a checkpoint at the next step boundary")

        try:
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
        except ValueError:  # not the main thread (e.g. called from a worker): no handlers
            pass

    def _start_wandb(self) -> None:
        try:
            import wandb
        except ImportError:
            self.warn("train.wandb is true but wandb is not installed (pip install 'muomni[wandb]'); "
                      "logging to metrics.jsonl only")
            return
        mode = self.cfg.train.wandb_mode
        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            self.warn("wandb online mode needs WANDB_API_KEY; logging offline instead")
            mode = "offline"
        self._wandb = wandb.init(project=self.cfg.train.wandb_project, name=self.dir.name, dir=str(self.dir),
                                 mode=mode, config=config_to_dict(self.cfg), resume="allow")

    def close(self) -> None:
        self._deadline = None  # a finished run is not out of time
        if self._bar is not None:
            self._bar.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self.world > 1 and dist.is_initialized():
            # Every rank leaves together: a rank that tears down its gloo pairs while another still
            # writes its last checkpoint aborts the process ("terminate called without an active exception").
            # Not while an error unwinds (close() in a finally): the other ranks would wait for this one.
            if sys.exc_info()[0] is None:
                work = dist.barrier(async_op=True)
                work.wait()
                # gloo's worker thread drops its reference to the finished barrier (and to the collectives
                # before it, whose tensors Python created) after this rank wakes up. Were that the last
                # reference, it would need the GIL, which this thread holds while the process group's
                # destructor (when the DDP wrapper is freed) joins that worker: both wait forever.
                # Holding the barrier here until the interpreter exits makes the worker's release free.
                _FINISHED_WORK.append(work)
            dist.destroy_process_group()


_FINISHED_WORK: list[Any] = []  # see Run.close


def _record_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0


def write_text(path: str | Path, text: str) -> None:
    """Atomic text write (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")
