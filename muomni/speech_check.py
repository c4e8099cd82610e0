"""The speech check: does the model speak yet? Word error (and naturalness) of a fixed set of held-out utterances,
measured inside each stage's training loop (docs/DESIGN.md §9).

Held-out losses do not rank what matters (the codec's held-out MSE kept falling while its word error stopped).
So every ``train.speech_every`` steps (0: with each held-out evaluation, every ``train.eval_every``) and at the
last step, a stage renders the first ``train.speech_items`` utterances of its held-out split, the same ones every
time, and :class:`SpeechCheck` scores them:

- word error by the recogniser ``train.speech_asr`` (``muomni.eval.asr``), loaded once, at the first check; one that
  cannot load gives one warning and the run trains on without the check;
- naturalness by a :class:`Judge` (``score(wavs) -> [{field: rating}]``) where one is installed: ``load_judge``
  takes DNSMOS from :data:`JUDGE_MODULE` and skips quietly when that module is absent;
- the references, once per run at the first check: the ground truth's and Griffin-Lim-on-original-mels' figures
  on the same utterances, in stats.json "speech_reference"; their transcripts are cached per utterance beside the
  corpus's mel caches, so the next stage on the same corpus and recogniser does not transcribe them again.

A check logs ``speech_wer``, the judge's means (``dnsmos_ovrl``, ...), ``train_minutes`` (the loop's wall time
when the check began, carried across --resume: ``Run.train_minutes``) and its own cost ``speech_seconds`` to
metrics.jsonl (split "speech"), and leaves its wavs and transcripts in ``samples/speech/``. It runs on rank 0
alone and saves and restores every RNG around itself, so a run trains the same steps with the check on or off.

What a stage renders: ``codec_wavs`` (the round trip through Griffin-Lim), ``tts_wavs`` (``synthesize_with_mels``,
greedy, through the run's vocoder or Griffin-Lim), ``vocoder_wavs`` (the generator on the original mels).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from muomni.audio import load_audio, log_mel, save_wav
from muomni.eval.asr import load_asr
from muomni.eval.wer import utterance_word_error, word_error_rate
from muomni.files import write_json
from muomni.models.griffinlim import mel_to_wav
from muomni.synthesis import TalkerBundle, synthesize_with_mels
from muomni.synthesis_config import GRIFFIN_LIM_ITERS  # as python -m muomni evaluate scores Griffin-Lim
from muomni.training.rng import rng_state, set_rng_state
from muomni.training.run import Run

# The naturalness judge's module: ``load_mos(name)`` -> None or a scorer with ``label`` and ``score(wavs)``
# (DNSMOS: ``[{"ovrl", "sig", "bak", "p808"}]`` per 16 kHz wav); load_mos("") picks DNSMOS where installed.
JUDGE_MODULE = "muomni.eval.mos"
REFERENCES = {"ground_truth": "ground truth", "griffinlim": "Griffin-Lim, original mels"}  # stats.json keys


class Utterance(Protocol):
    """What the check reads of a held-out item (``muomni.data.corpus.Item``, ``TalkerItem``)."""

    id: str
    text: str
    path: str


@dataclass
class Judge:
    """A naturalness judge: ``score(wavs)`` rates each 16 kHz mono wav (``[{field: rating}]``, NaN for none); a
    check logs the mean of each field as ``<label>_<field>`` (``dnsmos_ovrl``)."""

    label: str
    score: Callable[[list[np.ndarray]], list[dict[str, float]]]


def load_judge(name: str = "auto") -> Judge | None:
    """The judge of ``train.speech_judge``: DNSMOS where :data:`JUDGE_MODULE` and its packages are installed,
    else None, quietly (the check then scores word error alone); None for "none"."""
    if name == "none":
        return None
    try:
        module = importlib.import_module(JUDGE_MODULE)
    except ImportError:
        return None
    scorer = module.load_mos("")  # "": the module's default, None where its packages are missing
    return None if scorer is None else Judge(scorer.label, scorer.score)


def mean_ratings(ratings: list[dict[str, float]]) -> dict[str, float]:
    """Per field, the mean over the utterances rated (NaN where none was)."""
    fields = dict.fromkeys(k for r in ratings for k in r)
    out = {}
    for k in fields:
        values = [float(r[k]) for r in ratings if k in r and math.isfinite(float(r[k]))]
        out[k] = float(np.mean(values)) if values else math.nan
    return out


class SpeechCheck:
    """The speech check of one run: its steps, its utterances, the recogniser and judge (loaded at the first
    check), the references, the log line and the wavs of the last check."""

    def __init__(self, run: Run, tc: Any, items: Sequence[Utterance], cache_dir: str | Path | None = None):
        self.run, self.tc = run, tc
        self.items = list(items)[: tc.speech_items]  # the first K held-out: the same ones at every check
        self.every = tc.speech_every or tc.eval_every
        self.on = tc.speech_asr != "none" and bool(self.items)  # from the config alone: the same on every rank
        self.cache = Path(cache_dir) / "speech_reference.json" if cache_dir else None
        self.asr, self.judge, self._loaded = None, None, False

    def scheduled(self, step: int, last: bool) -> bool:
        """Whether ``step`` is a check step (every ``every`` steps, and the last): the same on every rank."""
        return self.on and (step % self.every == 0 or last)

    def saves(self, step: int, last: bool) -> bool:
        """Whether the stage saves at ``step`` so that best.pt can follow the word error (``train.best_by`` wer)."""
        return self.tc.best_by == "wer" and self.scheduled(step, last)

    def metric(self, loss: float | None, wer: float | None) -> float | None:
        """What best.pt tracks at this step: the held-out loss, or with ``train.best_by`` wer the check's word
        error (None on steps without a check)."""
        return wer if self.tc.best_by == "wer" else loss

    def __call__(self, step: int, last: bool, render: Callable[[list], list]) -> float | None:
        """At a check step on rank 0: render the utterances (``render(items) -> wavs``), score and log them;
        returns ``speech_wer``, None where no check ran."""
        if not (self.run.is_main and self.scheduled(step, last)):
            return None
        start, minutes = time.perf_counter(), self.run.train_minutes  # its cost counts the models' loading too
        if not self._load():
            return None
        state = rng_state()
        try:  # the check draws nothing from the training's RNG streams
            wavs = [np.asarray(w, dtype=np.float32).reshape(-1) for w in render(self.items)]
            scores, rows = self._score(wavs)
            reference = self._references()
        finally:
            set_rng_state(state)
        self._keep(step, minutes, wavs, rows, scores)
        seconds = time.perf_counter() - start
        self.run.log(step, {**scores, "train_minutes": minutes, "speech_seconds": seconds,
                            "speech_items": len(wavs), "asr": self.asr.label}, split="speech")
        self.run.info(f"step {step}: speech check, word error {scores['speech_wer']:.3f} on {len(wavs)} held-out "
                      f"({self.asr.label}; ground truth {reference['ground_truth']['speech_wer']:.3f}, Griffin-Lim "
                      f"{reference['griffinlim']['speech_wer']:.3f}) in {seconds:.1f} s")
        return scores["speech_wer"]

    def _load(self) -> bool:
        """Load the recogniser and the judge once; False (after one warning) where the recogniser cannot load."""
        if not self._loaded:
            self._loaded = True
            name = "" if self.tc.speech_asr == "auto" else self.tc.speech_asr
            try:
                self.asr = load_asr(name)
            except Exception as err:  # a missing package or model: the run trains on without the check
                lost = "; best.pt is not written (train.best_by = wer)" if self.tc.best_by == "wer" else ""
                self.run.warn(f"speech check off: the recogniser '{self.tc.speech_asr}' did not load ({err}){lost}")
            try:
                self.judge = load_judge(self.tc.speech_judge)
            except Exception as err:
                self.run.warn(f"speech check: naturalness not rated, the judge did not load ({err})")
        return self.asr is not None

    def _rate(self, wavs: list[np.ndarray]) -> list[dict[str, Any]]:
        """Per wav its transcript and, with a judge, its ratings (``{"hypothesis": str, "rating": {field: x}}``)."""
        hyps = self.asr.transcribe(wavs)
        ratings = self.judge.score(wavs) if self.judge is not None else [{} for _ in wavs]
        return [{"hypothesis": h, "rating": r} for h, r in zip(hyps, ratings)]

    def _summary(self, rated: list[dict[str, Any]]) -> dict[str, float]:
        """speech_wer of the rated utterances against their texts, and the judge's means (``dnsmos_ovrl``, ...)."""
        scores = {"speech_wer": word_error_rate([it.text for it in self.items], [r["hypothesis"] for r in rated])}
        if self.judge is not None:
            means = mean_ratings([r["rating"] for r in rated])
            scores.update({f"{self.judge.label}_{k}": v for k, v in means.items()})
        return scores

    def _score(self, wavs: list[np.ndarray]) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """(speech_wer and the judge's means, per utterance its transcript, word error and ratings)."""
        rated = self._rate(wavs)
        rows = [{"id": it.id, "text": it.text, "hypothesis": r["hypothesis"],
                 "word_error": round(utterance_word_error(it.text, r["hypothesis"]), 4),
                 **({self.judge.label: r["rating"]} if self.judge is not None else {})}
                for it, r in zip(self.items, rated)]
        return self._summary(rated), rows

    def _references(self) -> dict[str, Any]:
        """The ground truth's and Griffin-Lim-on-original-mels' scores on the same utterances: from stats.json,
        else from the per-utterance cache of the corpus (any stage, any K), the missing utterances computed (at
        the first check) and stored in both."""
        setting = f"{self.asr.label}|{self.judge.label if self.judge else ''}|griffinlim {GRIFFIN_LIM_ITERS}"
        names = [f"{it.id}|{Path(it.path).stat().st_size}" for it in self.items]  # a rebuilt corpus: other sizes
        key = hashlib.sha256(json.dumps([setting, names]).encode()).hexdigest()[:16]
        stats = self.run.folder.read_stats()
        if stats.get("speech_reference", {}).get("key") == key:
            return stats["speech_reference"]
        cached = (_read_json(self.cache).get(setting, {}) if self.cache else {})
        missing = [(name, it) for name, it in zip(names, self.items) if name not in cached]
        if missing:
            truth = [load_audio(it.path) for _, it in missing]
            griffinlim = [mel_to_wav(log_mel(w)[0], GRIFFIN_LIM_ITERS).reshape(-1).numpy() for w in truth]
            for (name, _), t, g in zip(missing, self._rate(truth), self._rate(griffinlim)):
                cached[name] = {"ground_truth": t, "griffinlim": g}
            if self.cache:  # merged into the file as it is now: another run on the corpus may have added its own
                on_disk = _read_json(self.cache)
                on_disk[setting] = {**on_disk.get(setting, {}), **cached}
                write_json(self.cache, on_disk)
        reference = {"key": key, "asr": self.asr.label, "items": len(self.items),
                     **{system: self._summary([cached[name][system] for name in names]) for system in REFERENCES}}
        self.run.folder.update_stats(speech_reference=reference)
        return reference

    def _keep(self, step: int, minutes: float, wavs: list[np.ndarray], rows: list[dict], scores: dict) -> None:
        """The wavs and transcripts of this check in samples/speech/, in place of the last check's."""
        folder = self.run.dir / "samples" / "speech"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.wav"):
            old.unlink()
        for k, (row, wav) in enumerate(zip(rows, wavs)):
            save_wav(folder / f"{k:02d}_{row['id']}.wav", wav)
        write_json(folder / "info.json", {"step": step, "train_minutes": round(minutes, 3), "asr": self.asr.label,
                                          **scores, "items": rows})


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------- what each stage renders


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; the model's own mode restored after."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def codec_wavs(model: nn.Module, cache, indices: list[int], n_iter: int = GRIFFIN_LIM_ITERS) -> list[np.ndarray]:
    """The codec's round trip of mel-cache items ``indices``, through Griffin-Lim."""
    device = next(model.parameters()).device
    with evaluating(model):
        recs = [model(torch.from_numpy(cache.get(i))[None].to(device)).mel[0].float() for i in indices]
    return [mel_to_wav(rec, n_iter).reshape(-1).cpu().numpy() for rec in recs]  # (5 T_frames, 128) -> (N,), on device


def tts_wavs(bundle: TalkerBundle, items: list, vocoder: nn.Module | None = None) -> list[np.ndarray]:
    """The Talker's greedy synthesis of the items' texts in their speakers' voices (``TalkerItem``: speaker ids),
    through ``vocoder`` or Griffin-Lim, as ``python -m muomni evaluate tts`` synthesizes."""
    with evaluating(bundle.model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Griffin-Lim note, lengths past training: said elsewhere, not per check
        return synthesize_with_mels(bundle, [u.text for u in items], [u.speaker for u in items], vocoder)[1]


def vocoder_wavs(generator: nn.Module, items: list, device: torch.device) -> list[np.ndarray]:
    """The generator's wav of each item's original log-mel."""
    out = []
    with evaluating(generator):
        for it in items:
            wav = load_audio(it.path)
            out.append(generator(log_mel(wav)[0][None].to(device))[0, :len(wav)].float().cpu().numpy())
    return out
