"""Codec training data: cached mels holding whole code frames, their per-bin statistics, random crops.

The codec standardises every mel bin by the training set's mean and std (docs/DESIGN.md §4); they are
computed once here and kept in the run's stats.json and in the codec's buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from muomni.audio import LOG_FLOOR, N_MELS
from muomni.data.cache import MelCache
from muomni.data.corpus import Item


def usable(cache: MelCache, items: list[Item], frames_per_token: int, warn: Callable[[str], None]) -> list[int]:
    """Indices of cached mels holding at least one whole code frame; the others are skipped with a warning."""
    keep = []
    for i, n in enumerate(cache.lengths):
        if n >= frames_per_token:
            keep.append(i)
        else:
            warn(f"skipping {items[i].id}: {n} mel frames, fewer than one code frame ({frames_per_token})")
    return keep


def mel_statistics(cache: MelCache, indices: list[int]) -> dict[str, list[float]]:
    """Per-bin mean and std (N_MELS,) of the cached mels ``indices``: {"mel_mean": ..., "mel_std": ...}."""
    total = np.zeros(N_MELS, np.float64)
    total_sq = np.zeros(N_MELS, np.float64)
    count = 0
    for i in indices:
        mel = cache.get(i).astype(np.float64)
        total, total_sq, count = total + mel.sum(0), total_sq + (mel**2).sum(0), count + len(mel)
    mean = total / count
    return {"mel_mean": mean.tolist(), "mel_std": np.sqrt(np.maximum(total_sq / count - mean**2, 0)).tolist()}


def crop_batch(cache: MelCache, indices: list[int], frames: int, key: list[int]) -> torch.Tensor:
    """Random crops of ``frames`` mel frames (B, frames, N_MELS); short items padded with silence (log floor).

    An item's crop depends on ``key`` (seed, step) and the item alone, not on its place in the batch,
    so a run resumes exactly and a data-parallel rank crops its share as one process would.
    """
    batch = np.full((len(indices), frames, N_MELS), math.log(LOG_FLOOR), dtype=np.float32)
    for b, i in enumerate(indices):
        mel = cache.get(i)
        start = int(np.random.default_rng([*key, i]).integers(0, max(len(mel) - frames, 0) + 1))
        crop = mel[start:start + frames]
        batch[b, : len(crop)] = crop
    return torch.from_numpy(batch)
