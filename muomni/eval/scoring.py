"""Score several systems' audio of the same held-out utterances with one or more recognisers.

``score_systems`` is what every evaluation subcommand calls once it has its audio: it writes each
system's wavs and mel pictures (when given a folder), transcribes every wav with every recogniser
(the first one headlines), and returns the report sections every evaluation JSON shares:

- ``asr``: the recognisers' labels, the headline one, and each one's cost (seconds per audio second);
- ``wer_by_asr``: ``{asr: {system: corpus word error}}``;
- ``wer_by_speaker``: ``{asr: {speaker: {...}}}`` (``muomni.eval.wer.word_error_by_speaker``);
- ``hallucinations``: the utterances whose transcript looks like a recogniser loop, per system and ASR;
- ``mos`` (with a naturalness model, ``muomni.eval.mos``): its label, its cost and ``by_system``: per system the
  mean DNSMOS OVRL, SIG, BAK and P.808 (and how many utterances had a score);
- ``per_utterance``: per utterance its id, speaker, reference and, per system, duration, wav, mel picture,
  each recogniser's hypothesis and word error, and its ``mos`` ratings, so a reader can find the worst sentences.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from muomni.audio import SAMPLE_RATE, log_mel, save_wav
from muomni.data.corpus import Item
from muomni.eval.asr import load_asr
from muomni.eval.mos import FIELD_LABELS, FIELDS, load_mos, mean_ratings
from muomni.eval.wer import hallucination, utterance_word_error, word_error_by_speaker, word_error_rate


def mel_picture(path: Path, wav: np.ndarray) -> None:
    """A small log-mel image of what the wav sounds like: 128 px tall, one px per 16 ms frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mel = log_mel(wav)[0].numpy()  # (T, 128)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, mel.T[::-1], cmap="magma", vmin=-11.5, vmax=2.0)  # low bins at the bottom


def _numpy(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().float().cpu().numpy()
    return np.asarray(wav, dtype=np.float32).reshape(-1)


def score_systems(items: list[Item], systems: dict[str, list[np.ndarray]], asrs: list[tuple[str, str]],
                  out_dir: str | Path | None = None, mos: str = "none") -> dict:
    """Transcribe every system's audio (16 kHz mono, aligned with ``items``, whose texts are the
    references) with every ``(back-end, model)`` in ``asrs`` and report word error; rate its naturalness
    with ``mos`` ("dnsmos", or "none"); with ``out_dir``, wavs and mel PNGs go to
    ``out_dir/<system>/<id>.{wav,png}`` and the report links them."""
    for name, wavs in systems.items():
        if len(wavs) != len(items):
            raise ValueError(f"score_systems: system '{name}' has {len(wavs)} wavs for {len(items)} utterances")
    systems = {name: [_numpy(w) for w in wavs] for name, wavs in systems.items()}
    rows = _utterance_rows(items, systems, out_dir)
    recognisers = [load_asr(backend, model) for backend, model in asrs]
    audio_seconds = sum(len(w) for wavs in systems.values() for w in wavs) / SAMPLE_RATE
    report = _word_errors(items, systems, rows, recognisers, audio_seconds)
    report["per_utterance"] = rows
    scorer = load_mos(mos)
    if scorer is not None:
        report["mos"] = _naturalness(scorer, systems, rows, audio_seconds)
    return report


def _utterance_rows(items: list[Item], systems: dict[str, list[np.ndarray]], out_dir: str | Path | None) -> list[dict]:
    """One ``per_utterance`` row per item with each system's duration; with ``out_dir`` each system's wav and mel
    picture are written and linked. Transcripts and ratings are filled in later."""
    rows = [{"id": it.id, "speaker": it.speaker, "reference": it.text, "systems": {}} for it in items]
    for name, wavs in systems.items():
        for row, wav in zip(rows, wavs):
            entry = row["systems"][name] = {"duration": round(len(wav) / SAMPLE_RATE, 3), "transcripts": {}}
            if out_dir is not None:
                base = Path(out_dir) / name / row["id"]
                save_wav(base.with_suffix(".wav"), wav)
                mel_picture(base.with_suffix(".png"), wav)
                entry["wav"], entry["mel_png"] = str(base.with_suffix(".wav")), str(base.with_suffix(".png"))
    return rows


def _word_errors(items: list[Item], systems: dict[str, list[np.ndarray]], rows: list[dict], recognisers: list,
                 audio_seconds: float) -> dict:
    """Every system transcribed by every recogniser -> the ``asr``, ``wer_by_asr``, ``wer_by_speaker`` and
    ``hallucinations`` sections; each row gets its hypotheses and word errors."""
    refs = [it.text for it in items]
    wer_by_asr, by_speaker, cost, flagged = {}, {}, {}, []
    for asr in recognisers:
        start, hyps = time.perf_counter(), {}
        for name, wavs in systems.items():
            hyps[name] = asr.transcribe(wavs)
        cost[asr.label] = round((time.perf_counter() - start) / max(audio_seconds, 1e-9), 4)
        wer_by_asr[asr.label] = {name: word_error_rate(refs, h) for name, h in hyps.items()}
        by_speaker[asr.label] = word_error_by_speaker([it.speaker for it in items], refs, hyps)
        for name, h in hyps.items():
            for row, hyp in zip(rows, h):
                reason = hallucination(row["reference"], hyp)
                wer = utterance_word_error(row["reference"], hyp)
                row["systems"][name]["transcripts"][asr.label] = {"hypothesis": hyp, "word_error": round(wer, 4),
                                                                  "hallucination": reason}
                if reason:
                    flagged.append({"id": row["id"], "system": name, "asr": asr.label, "reason": reason,
                                    "word_error": round(wer, 4), "hypothesis": hyp})
    labels = [asr.label for asr in recognisers]
    return {"asr": {"headline": labels[0], "recognisers": labels, "seconds_per_audio_second": cost,
                    "audio_seconds": round(audio_seconds, 2)},
            "wer_by_asr": wer_by_asr, "wer_by_speaker": by_speaker, "hallucinations": flagged}


def _naturalness(scorer, systems: dict[str, list[np.ndarray]], rows: list[dict], audio_seconds: float) -> dict:
    """Every system's utterances rated by the naturalness model -> the ``mos`` section; each row gets its
    ratings."""
    start, by_system = time.perf_counter(), {}
    for name, wavs in systems.items():
        ratings = scorer.score(wavs)
        for row, rating in zip(rows, ratings):
            row["systems"][name]["mos"] = rating
        by_system[name] = mean_ratings(ratings)
    return {"model": scorer.label, "by_system": by_system,
            "seconds_per_audio_second": round((time.perf_counter() - start) / max(audio_seconds, 1e-9), 4)}


def print_word_errors(scores: dict, title: str) -> None:
    """The word-error table of a report: a row per system, a column per recogniser (headline first),
    per-speaker rows, then every flagged hallucination so it is seen, not averaged away."""
    labels = scores["asr"]["recognisers"]
    systems = list(scores["wer_by_asr"][labels[0]])
    width = max(len(s) for s in systems + ["system"])
    mos = scores.get("mos", {}).get("by_system", {})
    print(f"{title}: word error by recogniser ({len(scores['per_utterance'])} utterances)"
          + (", naturalness by DNSMOS (1-5, a second opinion: trained on noise suppression)" if mos else ""))
    print(f"  {'system':<{width}}  " + "  ".join(f"{label:>18}" for label in labels)
          + "".join(f"  {FIELD_LABELS[k]:>11}" for k in FIELDS if mos))
    for name in systems:
        print(f"  {name:<{width}}  " + "  ".join(f"{scores['wer_by_asr'][label][name]:>18.4f}" for label in labels)
              + "".join(f"  {mos[name][k]:>11.3f}" for k in FIELDS if mos))
    speakers = scores["wer_by_speaker"][labels[0]]
    if len(speakers) > 1:
        for speaker, d in speakers.items():
            print(f"  [{speaker}, {d['utterances']} utt, {labels[0]}]  "
                  + "  ".join(f"{name} {d[name]:.4f}" for name in systems))
    for f in scores["hallucinations"]:
        print(f"  hallucination? {f['id']} {f['system']} ({f['asr']}): {f['reason']}; word error "
              f"{f['word_error']:.2f}: {f['hypothesis'][:80]!r}")
    cost = dict(scores["asr"]["seconds_per_audio_second"])
    if mos:
        cost[scores["mos"]["model"]] = scores["mos"]["seconds_per_audio_second"]
    print("  ASR and MOS cost (s per audio s): " + ", ".join(f"{k} {v:.3f}" for k, v in cost.items()))
