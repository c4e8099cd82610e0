"""The one training loop of every stage (docs/DESIGN.md §7), nanoGPT-style: a step, then what is due.

A stage module (``muomni.stages.codec``, ``talker``, ``vocoder``) gives ``build(cfg, args) -> state`` (a stage
script passes it here: ``loop.train(codec, codec.build(cfg, args))``) and the per-step functions this loop
calls; its state carries the run, the config, the restored step, the objects a checkpoint holds (``objects``,
``extra``) and the speech check. Per step, in order:

    next_batch        the step's data (its micro-batches, where the stage accumulates gradients)
    train_step        one optimizer step on it (forward, backward, the guarded optimizer step, schedule)
    step_done         the progress bar, and the one place a stop (signal, train.max_minutes) is agreed
    log_record        every train.log_every steps and at train.steps: the train record (every rank: averaged)
    evaluate          every train.eval_every steps and at the last (rank 0): held-out metrics; best.pt's metric
    samples           every train.sample_every steps and at the last (rank 0): wavs and mel pictures
    speech check      every train.speech_every steps and at the last (rank 0): word error of rendered speech
    save              every train.save_every steps, at the last, and where the speech check asks

"The last" is train.steps, or the step where a stop was agreed, so a stopped run evaluates and saves too.
"""

from __future__ import annotations

from types import ModuleType


def train(stage: ModuleType, state) -> int:
    """Train ``state`` (``stage.build``'s) to train.steps or until a stop, then end its run; returns the exit
    status (see muomni.training). On an error the state and the run are closed and the error goes on."""
    run, tc, step = state.run, state.cfg.train, state.step
    try:
        run.progress(step, tc.steps)
        while step < tc.steps and not run.stop_requested:
            out = stage.train_step(state, stage.next_batch(state, step), step)
            step += 1
            run.step_done()
            if step % tc.log_every == 0 or step == tc.steps:  # every rank: the record is averaged over them
                run.log(step, stage.log_record(state, out))
            last = step == tc.steps or run.stop_requested  # the step count, the time budget or a signal
            metric = None
            if run.is_main and (step % tc.eval_every == 0 or last):  # so a stopped run has a best.pt
                metric = stage.evaluate(state, step)
            if run.is_main and (step % tc.sample_every == 0 or last):
                stage.samples(state, step)
            wer = state.speech(step, last, lambda items: stage.speech_wavs(state, items))
            if step % tc.save_every == 0 or last or state.speech.saves(step, last):
                run.save(step, state.objects, metric=state.speech.metric(metric, wer), extra=state.extra)
    except BaseException:
        state.close()
        run.close()
        raise
    state.close()
    return run.finish(step)
