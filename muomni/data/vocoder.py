"""Vocoder training data: decoded audio and its input mel per item, random aligned segments, prefetch.

The input mel is the item's log-mel or, when fine-tuning on a codec, the codec's reconstruction of it
(docs/DESIGN.md §6), so that the vocoder learns the codec's artefacts.
"""

from __future__ import annotations

import copy
import math
import random
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from muomni.audio import HOP_LENGTH, LOG_FLOOR, load_audio, log_mel
from muomni.data.corpus import Item


class AudioCache:
    """Decoded audio and its (possibly codec-reconstructed) log-mel per item, loaded once each and kept
    in a bounded least-recently-used cache."""

    def __init__(self, items: list[Item], capacity: int, codec: nn.Module | None = None):
        self.items, self.capacity, self.codec = items, capacity, codec
        self._cache: OrderedDict[int, tuple[np.ndarray, Tensor]] = OrderedDict()
        self._lock = threading.Lock()  # prefetch threads (train.num_workers) fill the cache beside the loop

    def __len__(self) -> int:
        return len(self.items)

    def get(self, i: int) -> tuple[np.ndarray, Tensor]:
        """(wav (N,) float32, input mel (N // 256 + 1, 128) on the CPU)."""
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        wav = load_audio(self.items[i].path)  # decoded outside the lock: threads decode side by side
        mel = log_mel(wav)[0]  # (T, 128)
        if self.codec is not None:
            mel = codec_mel(self.codec, mel)
        with self._lock:
            self._cache[i] = (wav, mel)
            if len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return wav, mel


@torch.no_grad()
def codec_mel(codec: nn.Module, mel: Tensor) -> Tensor:
    """The codec's reconstruction of a whole utterance's mel (T, 128): padded with silence to whole
    code frames, encoded, decoded, cropped back to T frames."""
    per = codec.cfg.frames_per_token
    t = mel.shape[0]
    pad = (-t) % per + (per if t < per else 0)
    padded = torch.cat([mel, mel.new_full((pad, mel.shape[1]), math.log(LOG_FLOOR))]) if pad else mel
    device = next(codec.parameters()).device
    return codec.decode(codec.encode(padded.unsqueeze(0).to(device)))[0, :t].float().cpu()


def random_segments(data: AudioCache, indices: list[int], segment: int) -> tuple[Tensor, Tensor]:
    """wav (B, segment) and its aligned input mel (B, segment / 256, 128) from random frame offsets.

    Frame f of a centred STFT is centred on sample f * 256, so samples [f*256, f*256 + segment) go
    with frames [f, f + segment/256). Short files are zero-padded, their mel padded with silence.
    The offsets come from Python's ``random``, which the run seeds and checkpoints.
    """
    frames = segment // HOP_LENGTH
    wavs, mels = [], []
    for i in indices:
        wav, mel = data.get(i)
        start = random.randint(0, max(0, (len(wav) - segment) // HOP_LENGTH))  # in frames
        w = torch.zeros(segment)
        piece = torch.from_numpy(wav[start * HOP_LENGTH:start * HOP_LENGTH + segment])
        w[:len(piece)] = piece
        m = mel.new_full((frames, mel.shape[1]), math.log(LOG_FLOOR))
        piece_mel = mel[start:start + frames]
        m[:len(piece_mel)] = piece_mel
        wavs.append(w)
        mels.append(m)
    return torch.stack(wavs), torch.stack(mels)


class Order(Protocol):
    """A resumable batch order (muomni.training.BatchOrder): ``next()`` -> the next batch's item indices."""

    def next(self) -> list[int]: ...


class Prefetch:
    """Decodes the next step's items in ``workers`` threads while the current step trains.

    Only the decoding moves (audio, log-mel, codec reconstruction into the cache): the batch order
    and the segment offsets are still drawn in the loop, so a run with workers sees exactly the
    batches of one without, and resumes at the same position. Threads, not processes: a codec on a
    GPU cannot run in forked workers, and the decoding (libsndfile, STFT, convolutions) leaves the GIL.
    """

    def __init__(self, data: AudioCache, workers: int):
        self.data = data
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="decode") if workers > 0 else None

    def next_steps(self, order: Order, batches: int) -> None:
        """Start decoding the items of the batches after the next ``batches`` ones (order is not advanced)."""
        if self.pool is None:
            return
        ahead = copy.deepcopy(order)
        for _ in range(batches):
            ahead.next()
        for _ in range(batches):
            for i in ahead.next():
                self.pool.submit(self.data.get, i)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
