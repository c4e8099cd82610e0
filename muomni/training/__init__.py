"""Shared training machinery: runs, checkpoints, resume, logging, AMP, compile, DDP (docs/DESIGN.md §7).

Every stage (``muomni.stages``) builds its objects, then hands them to a :class:`Run` by name::

    run = Run(cfg, "codec", args)
    objects = {"model": model, "optim": opt, "sched": sched, "scaler": scaler, "order": order}
    step = run.restore(run.checkpoints.resume_payload(), objects)      # 0 on a fresh run
    ...
    run.save(step, objects, metric=heldout_loss)

A checkpoint is a plain dict (tensors, numbers, strings, lists) written to a temp file and
renamed, and loaded with ``torch.load(..., weights_only=True)``: it never runs code.

Every optimizer step goes through ``run.guard.optimizer_step`` (:meth:`StepGuard.optimizer_step`: unscale,
clip, one finite check, step, scaler update), and every training step ends with :meth:`Run.step_done`, the one
place where a stop (a signal, ``train.max_minutes``) is agreed. The stages stop the same way; their exit status:

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
    cli.py           the command-line arguments every stage shares
"""
