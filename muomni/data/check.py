"""Preflight checks of a corpus, shared by training (``load_corpus``) and ``python -m muomni.data check``.

Every file is read in full, because the faults that ruin a training run (NaN samples, silence,
clipping, a file cut short by an interrupted copy) are invisible in the header. Samples are
checked at the file's own rate; nothing is resampled, so a thousand files take a few seconds.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

from muomni.data.corpus import Item

SILENCE_PEAK = 1e-3  # -60 dBFS: nothing audible
CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.01  # more than 1% of samples at full scale is heavy clipping
_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be", re.MULTILINE)
_STREAMING_SIZES = (0, 0xFFFFFFFF)  # placeholders written by streaming encoders, not truncation


@dataclass
class Report:
    """What a check found: the usable items, (name, reason) of the others, and the sample rates seen."""

    good: list[Item] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    sample_rates: Counter = field(default_factory=Counter)

    def kinds(self) -> Counter:
        """How many bad items of each kind ("unreadable", "silence", ...)."""
        return Counter(reason_kind(reason) for _, reason in self.bad)

    def summary_counts(self) -> str:
        """ "3 unreadable, 1 silence" """
        return ", ".join(f"{n} {kind}" for kind, n in self.kinds().most_common())


def reason_kind(reason: str) -> str:
    """The kind of a reason "kind: detail"."""
    return reason.split(":", 1)[0]


def check_audio(path: str) -> tuple[str, int, float]:
    """(problem or "", sample rate, seconds) of one audio file, reading every sample."""
    try:
        with sf.SoundFile(path) as f:
            sample_rate, declared = f.samplerate, f.frames
            truncated = _DATA_SIZE.search(f.extra_info)
            wav = f.read(dtype="float32", always_2d=True)  # (T, C)
    except Exception as err:  # libsndfile raises several error types for damaged files
        return f"unreadable: {_first_line(err)}", 0, 0.0
    seconds = len(wav) / sample_rate
    if truncated and int(truncated.group(1)) not in _STREAMING_SIZES:
        return f"truncated: header promises {truncated.group(1)} data bytes, the file ends before", sample_rate, seconds
    if len(wav) < declared:
        return f"truncated: {len(wav)} of {declared} frames readable", sample_rate, seconds
    if len(wav) == 0:
        return "empty audio: zero samples", sample_rate, 0.0
    finite = np.isfinite(wav)
    if not finite.all():
        return f"non-finite samples: {int((~finite).sum())} NaN/inf values", sample_rate, seconds
    peak = float(np.abs(wav).max())
    if peak < SILENCE_PEAK:
        level = "every sample is zero" if peak == 0 else f"peak {20 * np.log10(peak):.0f} dBFS"
        return f"silence: {level}", sample_rate, seconds
    clipped = float((np.abs(wav) >= CLIP_LEVEL).mean())
    if clipped > CLIP_FRACTION:
        return f"clipping: {100 * clipped:.1f}% of samples at full scale", sample_rate, seconds
    return "", sample_rate, seconds


def check_report(items: list[Item], min_seconds: float = 0.0, max_seconds: float = float("inf")) -> Report:
    """Check every item; the first problem found names the item's reason."""
    report, seen = Report(), {}
    for item in items:
        problem = item.problem
        if not problem and item.id in seen:
            problem = f"duplicate id: {item.id} already used by {seen[item.id]}"
        seen.setdefault(item.id, item.path)
        if not problem:
            problem, sample_rate, seconds = check_audio(item.path)
            if sample_rate:
                report.sample_rates[sample_rate] += 1
                item.duration = seconds
        if not problem and not item.text.strip():
            problem = "empty text: the transcript is empty or whitespace"
        if not problem and item.duration < min_seconds:
            problem = f"too short: {item.duration:.2f} s < min_seconds {min_seconds:g}"
        if not problem and item.duration > max_seconds:
            problem = f"too long: {item.duration:.2f} s > max_seconds {max_seconds:g}"
        if problem:
            report.bad.append((f"{item.id} ({item.path})", problem))
        else:
            report.good.append(item)
    return report


def check_items(items: list[Item], min_seconds: float, max_seconds: float) -> tuple[list[Item], list[tuple[str, str]]]:
    """(usable items, (name, reason) for each other item). Durations are updated from the samples."""
    report = check_report(items, min_seconds, max_seconds)
    return report.good, report.bad


def duration_percentiles(items: list[Item], qs: tuple[int, ...] = (5, 50, 95)) -> dict[str, float]:
    """{"p5": seconds, ...} over the items' durations (empty dict when there are none)."""
    if not items:
        return {}
    values = np.percentile([it.duration for it in items], qs)
    return {f"p{q}": round(float(v), 3) for q, v in zip(qs, values)}


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
