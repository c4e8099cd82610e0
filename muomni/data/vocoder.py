"""Vocoder training data: decoded audio and its input mel per item, random aligned segments, prefetch.

The input mel is the item's log-mel or, when fine-tuning (docs/DESIGN.md §6), what the vocoder will be fed
for that utterance, so that it learns those artefacts and no others: ``CodecMels``, the codec's round trip
(``--finetune-codec``); ``TalkerMels``, the mel synthesis makes from a Talker's output (``--finetune-talker``),
the Talker teacher-forced on the utterance's codes and its distributions decoded the way ``train.mel_from``
says, the same choice as synthesis's ``mel_from`` ("expected" by default: ``decode_expected``).
"""

from __future__ import annotations

import copy
import math
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from muomni.audio import HOP_LENGTH, LOG_FLOOR, load_audio, log_mel
from muomni.data.corpus import Item
from muomni.data.tokenize import encode_utterance
from muomni.synthesis import TalkerBundle, codes_to_mel, probs_to_mel
from muomni.synthesis_config import MEL_FROM, SynthesisConfig

MelSource = Callable[[Item, Tensor], Tensor]  # (item, its log-mel (T, 128)) -> the vocoder's input mel (T, 128)


class AudioCache:
    """Decoded audio and its input log-mel per item (the log-mel itself, or what ``source`` makes of it),
    loaded once each and kept in a bounded least-recently-used cache."""

    def __init__(self, items: list[Item], capacity: int, source: MelSource | None = None):
        self.items, self.capacity, self.source = items, capacity, source
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
        if self.source is not None:
            mel = self.source(self.items[i], mel)
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


class CodecMels:
    """The codec's round trip of an utterance's mel: ``decode(encode(mel))`` (``codec_mel``)."""

    def __init__(self, codec: nn.Module):
        self.codec = codec

    def __call__(self, item: Item, mel: Tensor) -> Tensor:
        return codec_mel(self.codec, mel)


@torch.no_grad()
def teacher_forced_probs(model: nn.Module, text_ids: Tensor, codes: Tensor, speaker: int) -> Tensor:
    """The Talker's distribution over every codebook's codes at every frame, fed the true codes one step behind
    (its training forward): text_ids (N,), codes (T, n_q) -> probs (T, n_q, K), as ``generate`` reports them
    (temperature 1). With a depth decoder, codebooks 1.. are its distributions given the true codebooks before
    them and the decoder state that predicts the frame (read from the decoder's output by a forward hook)."""
    device = next(model.parameters()).device
    n = torch.tensor([len(text_ids)], device=device)
    batch = {"text": text_ids[None].to(device), "text_lens": n, "codes": codes[None].to(device),
             "code_lens": torch.tensor([len(codes)], device=device), "speakers": torch.tensor([speaker], device=device)}
    depth, captured = getattr(model, "depth", None), {}
    hook = None if depth is None else model.decoder.register_forward_hook(lambda _m, _i, out: captured.update(h=out))
    try:
        logits = model(**batch).logits[0]  # (T, n_code_heads, K)
    finally:
        if hook is not None:
            hook.remove()
    if depth is not None:  # (T, D) the state at the audio position predicting each frame, as in the depth loss
        rest = depth.logits(captured["h"][0, : len(codes)], batch["codes"][0, :, :-1])  # (T, n_q - 1, K)
        logits = torch.cat([logits[:, :1], rest], dim=1)
    return torch.softmax(logits.float(), dim=-1)


class TalkerMels:
    """The mel synthesis would feed the vocoder for an utterance, with the Talker teacher-forced: the
    utterance's codes (the Talker's codec, encoded as tokenization does), the Talker's distributions given
    them and the text, decoded as synthesis decodes with ``mel_from`` ("expected": the expected code vectors,
    ``probs_to_mel``; "codes": the most likely codes, ``codes_to_mel``); cropped or padded to the mel's T."""

    def __init__(self, bundle: TalkerBundle, mel_from: str = SynthesisConfig().mel_from):
        if mel_from not in MEL_FROM:
            raise ValueError(f"mel_from = {mel_from!r}: expected one of {', '.join(MEL_FROM)}")
        self.bundle, self.mel_from = bundle, mel_from
        self._lock = threading.Lock()  # prefetch threads share the model (and the forward hook's capture)

    @torch.no_grad()
    def __call__(self, item: Item, mel: Tensor) -> Tensor:
        b = self.bundle
        codes = torch.from_numpy(encode_utterance(b.codec, mel.numpy())).long()  # (ceil(T / 5), n_q)
        text_ids = torch.tensor(b.text.encode(item.text))
        speaker = b.speakers.index(item.speaker) if item.speaker in b.speakers else 0
        with self._lock:
            probs = teacher_forced_probs(b.model, text_ids, codes, speaker)  # (T / 5, n_q, K)
            if self.mel_from == "expected":
                out = probs_to_mel(b.codec, [probs])[0]
            else:
                out = codes_to_mel(b.codec, [probs.argmax(-1)])[0]
        out = out.float().cpu()[: mel.shape[0]]  # (T, 128)
        return torch.cat([out, out.new_full((mel.shape[0] - len(out), out.shape[1]), math.log(LOG_FLOOR))])


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
    """A resumable batch order (muomni.training.schedule.BatchOrder): ``next()`` -> the next batch's item indices."""

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
