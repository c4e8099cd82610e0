"""Checkpoint files: atomic writes, safe loads (weights_only=True), step-checkpoint discovery.

A checkpoint is a plain dict of tensors, numbers, strings and lists with a ``stage`` entry.
A folder written by ``python -m muomni export`` loads the same way (safetensors + JSON).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .export import META, WEIGHTS, load_exported
from .files import atomic_path

CHECKPOINT_VERSION = 1
STEP_PATTERN = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temp file in the same folder, flushed, then renamed over path.

    If anything fails, the temp file is removed and whatever was at path is untouched.
    """
    path = Path(path)
    try:
        with atomic_path(path, mkdir=False) as tmp, open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
    except Exception as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise CheckpointError(f"could not write checkpoint {path}: {reason}; earlier checkpoints are intact") from err


def load_checkpoint(path: str | Path, stage: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True); refuse a damaged, pickled or other-stage file.

    ``path`` is a checkpoint file, an exported model folder, or a run folder (its newest step checkpoint).
    """
    path = Path(path)
    if path.is_dir() and not (path / META).is_file() and step_checkpoints(path):
        path = step_checkpoints(path)[-1][1]
    if path.is_dir():
        payload = _load_exported(path)
    elif not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    else:
        payload = _load_file(path)
    if not isinstance(payload, dict) or "stage" not in payload:
        raise CheckpointError(f"{path}: not a muomni checkpoint (no 'stage' entry)")
    if stage is not None and payload["stage"] != stage:
        raise CheckpointError(f"{path}: this is a {payload['stage']} checkpoint, but a {stage} checkpoint is needed")
    return payload


def _load_exported(path: Path) -> dict[str, Any]:
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path}: a folder, but neither a run folder with step checkpoints nor an exported "
                              f"model ({META} and {WEIGHTS} expected)")
    try:
        return load_exported(path)
    except ImportError:
        raise CheckpointError(f"{path}: an exported model; reading it needs safetensors: "
                              "pip install 'muomni[export]'") from None
    except Exception as err:
        raise CheckpointError(f"{path}: damaged exported model ({err})") from None


def _load_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
        if found:
            raise CheckpointError(f"{path}: refused: it holds a pickled Python object ({found.group(1)}) that could "
                                  "run code when loaded; muomni loads checkpoints with weights_only=True") from None
        raise CheckpointError(f"{path}: damaged or incomplete checkpoint (not a readable torch file)") from None
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: damaged or incomplete checkpoint ({reason})") from None


def step_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every step checkpoint in a run folder, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_PATTERN.match(p.name))]
    return sorted(found)


def config_mismatch(saved: dict[str, Any], current: dict[str, Any], section: str = "model",
                    defaults: dict[str, Any] | None = None) -> list[str]:
    """'section.key: saved -> current' for every key of the current config that differs. A saved key the
    config no longer has is not compared: loading maps it away (the other Talker family's settings). A key
    the saved config lacks was added since, and its default keeps the old behaviour: it compares as
    ``defaults[key]`` (the section's defaults), which is what loading that checkpoint gives it."""
    a, b, defaults = saved.get(section, {}), current.get(section, {}), defaults or {}
    return [f"{section}.{k}: {a.get(k, defaults.get(k))!r} in the checkpoint, {b.get(k)!r} in the config"
            for k in sorted(b) if a.get(k, defaults.get(k)) != b.get(k)]
