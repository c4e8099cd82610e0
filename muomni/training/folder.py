"""The run folder ``<train.out_dir>/<train.run_name>/``: its write check, config.json, stats.json, samples.

The files it holds are listed in docs/DESIGN.md §7. Only rank 0 writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from muomni.files import write_json

from .stop import TrainingError

MIN_FREE_BYTES = 64 * 2**20


class RunFolder:
    """One run's folder and its stats.json (normalisation, max lengths, best step, how the run ended)."""

    def __init__(self, path: Path, is_main: bool):
        self.dir, self.is_main = path, is_main

    def check_writable(self) -> None:
        """Fail before any training if the folder can't be written or its disk is nearly full."""
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

    def begin(self, config: dict[str, Any]) -> None:
        """Write the effective config (config.json has no other writer); a run that goes on has not ended
        until it says so again."""
        write_json(self.dir / "config.json", config)
        self.update_stats(ended=None)

    def read_stats(self) -> dict[str, Any]:
        path = self.dir / "stats.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def update_stats(self, **entries: Any) -> None:
        """The one writer of stats.json: set each entry (None removes it), keep the others; rank 0 only.

        What it holds: ``data`` (what the run trains on: corpus and codec fingerprints, so that a rerun such as
        the demo can tell a finished run of other data from its own), ``mel_mean``/``mel_std`` (the codec's
        normalisation), the Talker's item counts, ``griffinlim_mel_l1`` (the vocoder's baseline),
        ``speech_reference``, ``best_metric``/``best_step``/``best_by``, and ``ended`` (why the run stopped)."""
        if not self.is_main:
            return
        before = self.read_stats()
        stats = {**before, **entries}
        for key in [k for k, v in entries.items() if v is None]:
            del stats[key]
        if stats != before:  # a missing file reads as {}: the first entry writes it, an unchanged set does not
            write_json(self.dir / "stats.json", stats)

    def sample_dir(self, step: int) -> Path:
        path = self.dir / "samples" / f"step_{step:08d}"
        path.mkdir(parents=True, exist_ok=True)
        return path
