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

The parts, one responsibility each:

    run.py           Run: the object the scripts use, composed of the parts below; DDP wrapping and teardown
    folder.py        the run folder: write check, config.json, stats.json, sample folders
    log.py           metrics.jsonl, the progress bar, messages, Weights & Biases
    checkpointer.py  save and prune, the newest valid checkpoint, resume, restore, --init-from
    stop.py          signals, the train.max_minutes deadline, the stop agreed per step, exit statuses
    step.py          the one optimizer step and its bad-step and overflow accounting
    device.py        device choice, autocast and grad scaler, torch.compile, unwrap
    schedule.py      the learning-rate schedule and the resumable batch order
    rng.py           seeding and RNG states as plain types
    files.py         atomic text and JSON writes
    cli.py           the command-line arguments every stage shares
"""

from muomni.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    config_mismatch,
    load_checkpoint,
    save_checkpoint,
    step_checkpoints,
)
from muomni.config import CPU_PRECISIONS, ConfigError, config_to_dict, load_config
from muomni.distributed import any_ranks, barrier, broadcast_object, gather_object, init_distributed

from .cli import add_run_args, load_run_config
from .device import (
    amp_dtype,
    autocast,
    cpu_has_native_bf16,
    make_grad_scaler,
    maybe_compile,
    precision_name,
    select_device,
    unwrap,
)
from .files import write_json, write_text
from .folder import MIN_FREE_BYTES
from .rng import rng_state, seed_everything, set_rng_state
from .run import Run
from .schedule import BatchOrder, lr_lambda
from .step import StepResult, finite_flags
from .stop import EXIT_STATUS_HELP, EXIT_STOPPED, TrainingError

# Every name this module offered when it was one file; the checkpoint, config and distributed names are
# re-exported because stage scripts and tests import them from here.
__all__ = [
    "CHECKPOINT_VERSION", "EXIT_STATUS_HELP", "EXIT_STOPPED", "MIN_FREE_BYTES", "BatchOrder", "CheckpointError",
    "CPU_PRECISIONS", "ConfigError", "Run", "StepResult", "TrainingError", "add_run_args", "amp_dtype", "any_ranks",
    "autocast", "cpu_has_native_bf16",
    "barrier", "broadcast_object", "config_mismatch", "config_to_dict", "finite_flags", "gather_object",
    "init_distributed", "load_checkpoint", "load_config", "load_run_config", "lr_lambda", "make_grad_scaler",
    "maybe_compile", "precision_name", "rng_state", "save_checkpoint", "seed_everything", "select_device",
    "set_rng_state", "step_checkpoints", "unwrap", "write_json", "write_text",
]
