"""Streaming synthesis, the part without torch: receptive fields, and the two stages that turn code frames
into audio chunks while the Talker is still writing them (docs/DESIGN.md §11).

Both models after the Talker are non-causal convolution stacks: an output frame reads a fixed number of
input frames on each side (its receptive field, computed here from the config). A stage that runs its model
on a chunk with that many frames of context on both sides and keeps the chunk's own part gives what the whole
sequence at once gives (the convolutions' zero padding never reaches the kept part; what is left is float
rounding). With less right context than the field, "lookahead", the last frames of each chunk differ: less
waiting for the Talker, an edge error (docs/RESULTS.md, 2026-12-07, measures both).

- ``CodecStage``: one piece's code frames in (codes, or the Talker's distributions for ``decode_expected``),
  log-mel frames out every ``chunk_frames`` code frames, ``lookahead`` code frames behind the Talker.
- ``VocoderStage``: log-mel frames in (the pieces of a text with their pauses, as offline synthesis joins
  them), waveform out, ``context`` mel frames behind. Griffin-Lim's phase is not a function of a window (every
  run starts from a random phase and iterates over the whole window), so its chunks cannot match offline
  audio; they are cross-faded (``crossfade`` frames of the previous window's continuation faded into the new).

The models come in as functions on numpy arrays, so the torch path (``muomni.synthesis.stream_synthesis``) and
the onnxruntime path (``muomni.onnx_runtime``) share the stages: this module imports numpy alone.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

HIFIGAN_EDGE_KERNEL = 7  # conv_pre and conv_post of the HiFi-GAN generator (models/hifigan.py)


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    """A setting of a config dataclass or of its JSON dict (the ONNX folder's front-end file)."""
    return cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)


def conv_stack_radius(kernel_size: int, dilations: list[int], n_blocks: int) -> int:
    """Frames on each side that one output frame of a stack of same-length dilated convolutions reads (the
    codec's ResBlocks, dilations cycled over the blocks): the sum of dilation x (kernel // 2)."""
    return sum(dilations[i % len(dilations)] * (kernel_size // 2) for i in range(n_blocks))


def codec_decoder_radius(cfg: Any) -> int | None:
    """Code frames on each side that one frame of the codec decoder's output reads (``CodecConfig`` or its
    dict); None when the decoder has self-attention layers, which read the whole sequence."""
    if _get(cfg, "decoder_attention_layers", 0):
        return None
    blocks = _get(cfg, "decoder_blocks")
    blocks = _get(cfg, "n_blocks") if blocks is None else blocks
    return conv_stack_radius(_get(cfg, "kernel_size"), _get(cfg, "decoder_dilations") or _get(cfg, "dilations"),
                             blocks)


def hifigan_radius(cfg: Any) -> int:
    """Mel frames on each side that the samples of one mel frame read through the HiFi-GAN generator
    (``HiFiGANConfig`` or its dict), followed back from the output: conv_post, then per stage its
    multi-receptive-field blocks (per dilation d a kernel-k conv of dilation d and one of dilation 1) and its
    transposed convolution (kernel k, stride u, padding (k - u) / 2), then conv_pre."""
    r = HIFIGAN_EDGE_KERNEL // 2  # in output samples
    mrf = max(sum(d * (k // 2) + k // 2 for d in dils)
              for k, dils in zip(_get(cfg, "resblock_kernel_sizes"), _get(cfg, "resblock_dilation_sizes")))
    for u, k in reversed(list(zip(_get(cfg, "upsample_rates"), _get(cfg, "upsample_kernel_sizes")))):
        r += mrf
        p = (k - u) // 2  # output n reads inputs j with j u - p <= n <= j u - p + k - 1
        r = max((r + k - 1 - p) // u, (r + p + u - 1) // u)
    return r + HIFIGAN_EDGE_KERNEL // 2


class CodecStage:
    """One piece's code frames -> its log-mel, chunk by chunk.

    decode: per-frame inputs stacked (T, ...) -> log-mel (frames_per_token x T, n_mels), the codec decoder on
    that window alone. radius: ``codec_decoder_radius`` (None: global context, every earlier frame is read and
    no lookahead is exact). lookahead: code frames waited for past a chunk (at most the radius, which is exact).
    """

    def __init__(self, decode: Callable[[np.ndarray], np.ndarray], radius: int | None, lookahead: int,
                 chunk_frames: int, frames_per_token: int):
        if chunk_frames < 1 or lookahead < 0:
            raise ValueError(f"chunk_frames must be >= 1 and lookahead >= 0, got {chunk_frames}, {lookahead}")
        self.decode, self.radius, self.chunk, self.fpt = decode, radius, chunk_frames, frames_per_token
        self.lookahead = lookahead if radius is None else min(lookahead, radius)
        self.inputs: list[np.ndarray] = []
        self.done = 0  # code frames whose mel has been given out

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """One code frame's input -> the mel frames it makes final, if a chunk is complete."""
        self.inputs.append(np.asarray(frame))
        final = len(self.inputs) - self.lookahead
        return self._decode(final) if final - self.done >= self.chunk else None

    def finish(self) -> np.ndarray | None:
        """The piece has ended: the mel of every frame not yet given out (the sequence's own right edge)."""
        return self._decode(len(self.inputs)) if len(self.inputs) > self.done else None

    def _decode(self, end: int) -> np.ndarray:
        start, n = self.done, len(self.inputs)
        lo = 0 if self.radius is None else max(0, start - self.radius)
        hi = n if self.radius is None else min(n, end + self.radius)
        mel = self.decode(np.stack(self.inputs[lo:hi]))  # ((hi - lo) fpt, n_mels)
        self.done = end
        return mel[(start - lo) * self.fpt:(end - lo) * self.fpt]


class VocoderStage:
    """Log-mel frames -> waveform chunks.

    vocode: (log-mel window (T, n_mels), the index of its first frame) -> waveform (T x hop,), the vocoder on
    that window alone (``WarmGriffinLim`` uses the index). context: mel frames read on each side of a chunk
    (``hifigan_radius`` is exact); a chunk goes out as soon as ``min_frames`` frames have their right context.
    crossfade: mel frames of the previous window past its chunk faded into the next chunk's start (raised
    cosine; <= context), for Griffin-Lim.
    """

    def __init__(self, vocode: Callable[[np.ndarray, int], np.ndarray], context: int, hop: int, crossfade: int = 0,
                 min_frames: int = 1):
        if not 0 <= crossfade <= context:
            raise ValueError(f"crossfade ({crossfade} frames) must lie in 0..context ({context})")
        self.vocode, self.context, self.hop, self.crossfade, self.min_frames = (
            vocode, context, hop, crossfade, max(min_frames, 1))
        self.mel: np.ndarray | None = None  # (capacity, n_mels), the first n filled
        self.n = 0
        self.emitted = 0  # mel frames whose audio has gone out
        self.tail: np.ndarray | None = None  # the last window's samples past its chunk (crossfade)

    def push(self, mel: np.ndarray) -> np.ndarray | None:
        """Mel frames (T, n_mels) -> the waveform chunk they complete, if any."""
        mel = np.asarray(mel, dtype=np.float32)
        if self.mel is None:
            self.mel = np.empty((max(256, 2 * len(mel)), mel.shape[1]), dtype=np.float32)
        if self.n + len(mel) > len(self.mel):
            grown = np.empty((2 * (self.n + len(mel)), mel.shape[1]), dtype=np.float32)
            grown[:self.n] = self.mel[:self.n]
            self.mel = grown
        self.mel[self.n:self.n + len(mel)] = mel
        self.n += len(mel)
        ready = self.n - self.context
        return self._vocode(ready) if ready - self.emitted >= self.min_frames else None

    def finish(self) -> np.ndarray | None:
        """The text has ended: the waveform of every frame not yet given out."""
        return self._vocode(self.n) if self.n > self.emitted else None

    def _vocode(self, end: int) -> np.ndarray:
        start, hop = self.emitted, self.hop
        lo, hi = max(0, start - self.context), min(self.n, end + self.context)
        wav = np.asarray(self.vocode(self.mel[lo:hi], lo), dtype=np.float32).reshape(-1)  # ((hi - lo) hop,)
        out = wav[(start - lo) * hop:(end - lo) * hop].copy()
        if self.crossfade:
            if self.tail is not None:
                k = min(len(self.tail), len(out))
                fade_in = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
                out[:k] = self.tail[:k] * (1 - fade_in) + out[:k] * fade_in
            self.tail = wav[(end - lo) * hop:(end - lo + self.crossfade) * hop].copy()
        self.emitted = end
        return out


class WarmGriffinLim:
    """Griffin-Lim on ``VocoderStage`` windows, each started from the phases the window before it ended with on
    the frames they share (new frames from seeded random phases): consecutive chunks then agree on the phase
    across a seam, as in real-time iterative spectrogram inversion (RTISI, Zhu, Beauregard & Wyse 2007). On
    demo-corpus mels, 12 frames of context and a 4-frame cross-fade: spectral convergence 0.089 against
    offline Griffin-Lim's 0.084 (0.151 starting every window from random phases). The mel inversion is per
    frame, so each frame is inverted once and kept for the windows after it.

    magnitude: log-mel (T, n_mels) -> linear magnitude (T, F). iterate: (magnitude (T, F), initial angles (T, F)
    complex64) -> (waveform (T x hop,), last angles (T, F)).
    """

    def __init__(self, magnitude: Callable[[np.ndarray], np.ndarray],
                 iterate: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], n_freq: int,
                 seed: int = 0):
        self.magnitude, self.iterate, self.n_freq = magnitude, iterate, n_freq
        self.rng = np.random.default_rng(seed)
        self.start = 0  # the last window's first frame, its magnitudes and last angles:
        self.mag = np.zeros((0, n_freq), dtype=np.float32)
        self.angles = np.zeros((0, n_freq), dtype=np.complex64)

    def __call__(self, mel: np.ndarray, start: int) -> np.ndarray:
        T = len(mel)
        angles = np.exp(2j * np.pi * self.rng.random((T, self.n_freq))).astype(np.complex64)
        mag = np.empty((T, self.n_freq), dtype=np.float32)
        offset = start - self.start
        shared = max(min(len(self.mag) - offset, T), 0) if offset >= 0 else 0
        mag[:shared] = self.mag[offset:offset + shared]
        angles[:shared] = self.angles[offset:offset + shared]
        if shared < T:
            mag[shared:] = self.magnitude(mel[shared:])
        wav, self.angles = self.iterate(mag, angles)
        self.mag, self.start = mag, start
        return wav


def pause_frames(seconds: float, n_mels: int, sample_rate: int, hop: int, log_floor: float) -> np.ndarray:
    """The log-mel silence offline synthesis puts between the pieces of a split text."""
    return np.full((round(seconds * sample_rate / hop), n_mels), math.log(log_floor), dtype=np.float32)


def write_chunks(chunks: Iterable[np.ndarray], write: Callable[[np.ndarray], None] | None,
                 begin: float) -> tuple[float | None, int]:
    """The command lines' output loop: each audio chunk to write, or without one to stdout as raw float32
    samples, flushed so a player hears it at once. -> seconds from begin (time.perf_counter) to the first
    chunk (None without any) and the samples written."""
    first, samples = None, 0
    for chunk in chunks:
        first = time.perf_counter() - begin if first is None else first
        samples += len(chunk)
        if write is not None:
            write(chunk)
        else:
            sys.stdout.buffer.write(chunk.astype("<f4").tobytes())
            sys.stdout.buffer.flush()
    return first, samples


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """10 log10(|reference|^2 / |reference - other|^2) over the common length; inf when they are equal."""
    n = min(len(reference), len(other))
    ref, err = np.asarray(reference[:n], np.float64), np.asarray(reference[:n], np.float64) - other[:n]
    noise = float(np.sum(err * err))
    return math.inf if noise == 0 else 10 * math.log10(max(float(np.sum(ref * ref)), 1e-30) / noise)
