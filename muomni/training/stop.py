"""How a run stops: signals, the time budget ``train.max_minutes``, the exit statuses (docs/DESIGN.md §7).

A stop is agreed once per step, in :meth:`StopControl.step_done`, so every rank stops after the same step
and the loop saves a checkpoint there; a signal or the deadline only sets a flag in between.
"""

from __future__ import annotations

import signal
import time

from muomni.distributed import any_ranks

from .log import RunLog

EXIT_STOPPED = 130  # a signal stopped the run after saving a checkpoint (the shell's code for SIGINT)
EXIT_STATUS_HELP = """exit status:
  0    done: train.steps reached, or train.max_minutes ran out (checkpoint saved; --resume continues)
  1    error (the message names the file or key; the newest checkpoint is intact)
  130  stopped by SIGINT or SIGTERM: checkpoint saved at the next step boundary (--resume continues)"""

_clock = time.monotonic  # the clock train.max_minutes is measured on


class TrainingError(RuntimeError):
    """A run that cannot go on (too many non-finite steps, unwritable output)."""


class StopControl:
    """The stop flags of one run: a signal received, the deadline passed, the stop the ranks agreed."""

    def __init__(self, max_minutes: float, world: int, runlog: RunLog):
        self.max_minutes, self.world, self.runlog = max_minutes, world, runlog
        self.signal: str | None = None  # set by the signal handler, acted on at the next step boundary
        self.stop = False  # agreed by step_done(), once per step
        self.out_of_time = False  # the stop came from train.max_minutes, not from a signal
        self.deadline: float | None = None  # set by start_clock(), when the training loop starts

    def start_clock(self) -> None:
        if self.max_minutes > 0:  # the budget counts training, not data caching and setup
            self.deadline = _clock() + 60 * self.max_minutes

    def stop_clock(self) -> None:
        self.deadline = None  # a finished run is not out of time

    def step_done(self) -> bool:
        """Agree whether to stop after this step (one collective under DDP); returns the agreed stop."""
        late = self.deadline is not None and _clock() > self.deadline
        signalled = self.signal is not None
        if self.world > 1:
            signalled, late = any_ranks([signalled, late])
        if signalled and not self.stop:
            self.stop = True
            self.runlog.info(f"{self.signal or 'a signal on another rank'}: saving a checkpoint and stopping "
                             f"(exit status {EXIT_STOPPED}; --resume continues the run)")
        elif late and not self.stop:
            self.out_of_time = self.stop = True
            self.runlog.info(f"train.max_minutes = {self.max_minutes:g} reached: saving a checkpoint and "
                             "stopping (--resume continues the run)")
        return self.stop

    @property
    def end_reason(self) -> str:
        """Why the loop ended: "signal", "max_minutes" or "steps"."""
        if self.stop and not self.out_of_time:
            return "signal"
        return "max_minutes" if self.out_of_time else "steps"

    def install_signal_handlers(self) -> None:
        def request_stop(signum, frame):
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
            self.signal = signal.Signals(signum).name
            self.runlog.info(f"{self.signal} received: saving a checkpoint at the next step boundary")

        try:
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
        except ValueError:  # not the main thread (e.g. called from a worker): no handlers
            pass
