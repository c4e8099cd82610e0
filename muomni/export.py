"""Sharing a model without pickle: ``python -m muomni export CKPT --out DIR``.

The folder holds ``weights.safetensors`` (every tensor of the checkpoint's model entries,
nested keys joined with '/') and ``checkpoint.json`` (everything else: stage, config,
vocabulary). Training state (optimizers, schedulers, scalers, RNG, data order) is left out.
``muomni.checkpoint.load_checkpoint`` reads such a folder as it reads a checkpoint file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

WEIGHTS, META = "weights.safetensors", "checkpoint.json"
TRAINING_STATE = ("optim", "sched", "scaler", "rng", "order", "data")


def _is_training_state(key: str) -> bool:
    return key.startswith(TRAINING_STATE)


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace each tensor by a {'__tensor__': key} marker, collecting tensors by key."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {k: _split(v, f"{prefix}/{k}" if prefix else str(k), tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def export_checkpoint(payload: dict[str, Any], out_dir: str | Path) -> Path:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise SystemExit("export needs safetensors: pip install 'muomni[export]'") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in payload.items() if not _is_training_state(k)}
    tensors: dict[str, torch.Tensor] = {}
    meta = _split(kept, "", tensors)
    save_file(tensors, str(out_dir / WEIGHTS))
    (out_dir / META).write_text(json.dumps(meta, indent=1))
    return out_dir


def load_exported(folder: str | Path) -> dict[str, Any]:
    """The payload of an exported folder, as load_checkpoint returns it (no pickle involved)."""
    from safetensors.torch import load_file  # optional (muomni[export]); load_checkpoint names it when missing

    folder = Path(folder)
    meta = json.loads((folder / META).read_text())
    return _join(meta, load_file(str(folder / WEIGHTS)))
