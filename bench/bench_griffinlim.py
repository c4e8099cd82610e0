"""Griffin-Lim: muomni's torch implementation against librosa.feature.inverse.mel_to_audio.

Both invert the same log-mel (3.2 s of flite speech, 16 kHz, n_fft 1024, hop 256, 128 Slaney
mels, 0-8 kHz) with 32 Griffin-Lim iterations (momentum 0.99) on the CPU, in one process, each
on ONE thread (torch intra-op threads and numpy's BLAS pool): on a small shared machine, thread
oversubscription otherwise swamps both timings.
Speed: wall time per call (median; ours after one warm-up call that builds its cached operators).
Quality: spectral convergence ||S - |STFT(y)||| / ||S|| against the ORIGINAL speech's magnitude S,
and log-mel L1 against the original log-mel (lower is better for both).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muomni.audio import FMAX, FMIN, HOP_LENGTH, N_FFT, SAMPLE_RATE, WIN_LENGTH, load_audio, log_mel  # noqa: E402
from muomni.models.griffinlim import linear_magnitude, mel_to_wav, spectral_convergence  # noqa: E402
from muomni.synthesis_config import GRIFFIN_LIM_ITERS  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog near the river."
SECONDS = 3.2
N_ITER = GRIFFIN_LIM_ITERS  # the iterations synthesis runs


def flite_speech(seconds: float = SECONDS) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["flite", "-voice", "slt", "-t", TEXT, "-o", str(path)], check=True)
        wav = load_audio(path)
    return wav[: int(seconds * 16000)]


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def run() -> list[dict]:
    import librosa
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            return _measure(librosa)
    finally:
        torch.set_num_threads(threads)


def _measure(librosa) -> list[dict]:
    wav = torch.from_numpy(flite_speech())
    mel = log_mel(wav)[0]  # (T, 128)
    target = linear_magnitude(wav)  # (T, 513) original magnitude

    def ours():
        return mel_to_wav(mel, n_iter=N_ITER)[: len(wav)]

    def reference():
        return torch.from_numpy(librosa.feature.inverse.mel_to_audio(
            mel.exp().T.numpy(), sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
            center=True, power=2.0, n_iter=N_ITER, fmin=FMIN, fmax=FMAX, length=len(wav)))

    ours()  # warm-up: mel-basis inverse operators are computed once per (device, dtype)
    t_ours, y_ours = _timed(ours, 5)
    t_ref, y_ref = _timed(reference, 2)
    sc_ours, sc_ref = (spectral_convergence(y, target).item() for y in (y_ours, y_ref))
    l1_ours, l1_ref = ((log_mel(y)[0] - mel).abs().mean().item() for y in (y_ours, y_ref))
    baseline = f"librosa {librosa.__version__} mel_to_audio"
    common = {"benchmark": "griffinlim", "baseline": baseline}
    return [
        {**common, "metric": f"seconds per {SECONDS} s utterance (CPU, 1 thread, n_iter {N_ITER})", "value": t_ours,
         "unit": "s", "baseline_value": t_ref, "target": None},
        {**common, "metric": "speed-up over librosa", "value": t_ref / t_ours, "unit": "x", "baseline_value": 1.0,
         "target": ">= 5"},
        {**common, "metric": "spectral convergence vs original speech", "value": sc_ours, "unit": "ratio",
         "baseline_value": sc_ref, "target": "<= baseline"},
        {**common, "metric": "log-mel L1 vs original speech", "value": l1_ours, "unit": "nats",
         "baseline_value": l1_ref, "target": "<= baseline"},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
