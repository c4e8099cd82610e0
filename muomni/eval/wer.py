"""Word error as the field computes it, and a check for the outliers that would distort it.

References and hypotheses go through the same normalisation: the project's text normaliser
(numbers, ordinals, money and times spelled out, as the Talker reads them), then punctuation and
case dropped and hyphens split, so "1,250" and "one thousand two hundred fifty" are the same words.
Edit counts come from jiwer. Corpus word error is total edits / total reference words.
"""

from __future__ import annotations

import re
import zlib

from muomni.text import normalize_text

# Whisper's own threshold for a repetition loop (text that gzip shrinks by more than 2.4x)
COMPRESSION_RATIO_LIMIT = 2.4


def normalize_for_wer(text: str) -> str:
    """"It cost $3.50 on May 5th." -> "it cost three dollars fifty cents on may fifth"."""
    text = normalize_text(text).replace("-", " ")
    words = (w.strip("'") for w in re.sub(r"[^\w' ]+", " ", text).split())
    return " ".join(w for w in words if w)


def word_edits(ref: str, hyp: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) of one normalised pair."""
    import jiwer

    r, h = normalize_for_wer(ref), normalize_for_wer(hyp)
    if not r:
        return len(h.split()), 0
    out = jiwer.process_words(r, h if h else "")
    return out.substitutions + out.deletions + out.insertions, len(r.split())


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Total word edits (substitutions + deletions + insertions) / total reference words."""
    if len(refs) != len(hyps):
        raise ValueError(f"word_error_rate: {len(refs)} references but {len(hyps)} hypotheses")
    edits = words = 0
    for ref, hyp in zip(refs, hyps):
        e, w = word_edits(ref, hyp)
        edits, words = edits + e, words + w
    return edits / max(words, 1)


def utterance_word_error(ref: str, hyp: str) -> float:
    edits, words = word_edits(ref, hyp)
    return edits / max(words, 1)


def compression_ratio(text: str) -> float:
    """Bytes of text / bytes of its zlib compression; a repetition loop compresses far better than prose."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def hallucination(ref: str, hyp: str) -> str:
    """Why a hypothesis looks like a recogniser's hallucination rather than a mishearing, or "".

    Flags a transcript more than twice as long as its reference (plus four words of slack for short
    sentences), or one that compresses like a repetition loop ("7.0.0.0.0...", "the the the ...").
    """
    r, h = normalize_for_wer(ref).split(), normalize_for_wer(hyp).split()
    reasons = []
    if len(h) > 2 * len(r) + 4:
        reasons.append(f"{len(h)} words for {len(r)} reference words")
    ratio = compression_ratio(hyp)
    if ratio > COMPRESSION_RATIO_LIMIT:
        reasons.append(f"repetitive (compression ratio {ratio:.1f} > {COMPRESSION_RATIO_LIMIT})")
    return "; ".join(reasons)


def word_error_by_speaker(speakers: list[str], refs: list[str], hyps: dict[str, list[str]]) -> dict[str, dict]:
    """Word error of each speaker's utterances, for every named list of hypotheses:
    ``{speaker: {"utterances": n, "words": reference words, name: wer, ...}}``, speakers sorted. A pooled
    figure over a multi-speaker corpus can hide one voice that a model serves much worse than the others."""
    if len(speakers) != len(refs):
        raise ValueError(f"word_error_by_speaker: {len(speakers)} speakers for {len(refs)} references")
    for name, hyp in hyps.items():
        if len(hyp) != len(refs):
            raise ValueError(f"word_error_by_speaker: '{name}' has {len(hyp)} hypotheses for {len(refs)} references")
    out = {}
    for speaker in sorted(set(speakers)):
        idx = [i for i, s in enumerate(speakers) if s == speaker]
        out[speaker] = {"utterances": len(idx), "words": sum(len(normalize_for_wer(refs[i]).split()) for i in idx)}
        for name, hyp in hyps.items():
            out[speaker][name] = word_error_rate([refs[i] for i in idx], [hyp[i] for i in idx])
    return out


def speaker_rows(by_speaker: dict[str, dict], names: list[str]) -> list[tuple[str, str]]:
    """Table rows ``wer[speaker]  a / b  (names a / b, n utt)`` when a report has more than one speaker."""
    if len(by_speaker) < 2:
        return []
    return [(f"wer[{s}]", " / ".join(f"{d[n]:.4f}" for n in names) + f"  ({' / '.join(names)}, "
             f"{d['utterances']} utt)") for s, d in by_speaker.items()]
