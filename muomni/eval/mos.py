"""Naturalness beside intelligibility: DNSMOS, a learned predictor of listeners' opinion scores (docs/DESIGN.md §9).

DNSMOS P.835 (Reddy, Gopal & Cutler 2022, "DNSMOS P.835: a non-intrusive perceptual objective speech quality
metric to evaluate noise suppressors") predicts, from the audio alone, the three ITU-T P.835 ratings on a 1-5
scale: SIG (the speech signal), BAK (the background) and OVRL (overall); its P.808 model predicts the one
overall P.808 rating. The ONNX models and their scoring (9.01 s windows hopped by 1 s, a short clip tiled to
fill one, the windows' scores averaged, the P.835 outputs mapped by the published polynomials) are those
of Microsoft's package ``speechmos`` (the 'eval' extra; short clips tiled to one window, see
``WINDOW``); muomni builds their two onnxruntime sessions once
per process (``speechmos.dnsmos.run`` rebuilds them on every call) with torch's thread count.

DNSMOS was trained on ratings of noise-suppressed speech, not of vocoders or TTS: it is a second opinion
beside word error, never a replacement for it, and its absolute level on synthetic speech is not calibrated.

``load_mos(name)`` returns a scorer with ``label`` and ``score(wavs) -> [{"ovrl", "sig", "bak", "p808"}]``
(16 kHz mono float), or None for ``"none"``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import torch

from muomni.audio import SAMPLE_RATE

BACKENDS = ("none", "dnsmos")
FIELDS = ("ovrl", "sig", "bak", "p808")  # the order every table prints
FIELD_LABELS = {"ovrl": "DNSMOS OVRL", "sig": "SIG", "bak": "BAK", "p808": "P.808"}
EXTRA_HINT = "pip install -e .[eval]"
# The models read 9.01 s windows. The package doubles a shorter clip until it passes 9.01 s and averages
# windows hopped by 1 s over those repeats (6 for a 3.5 s clip); muomni tiles it to one window instead:
# on 12 demo clips 4.6x faster, means within 0.02 and clips within 0.08 of the package's (docs/RESULTS.md).
WINDOW = int(9.01 * SAMPLE_RATE)
ONE_WINDOW = 10 * SAMPLE_RATE  # the package's hop count for 10 s is one
_LOADED: dict[str, object] = {}


def dnsmos_available() -> bool:
    """Whether speechmos (its model files) and onnxruntime are installed; imports neither."""
    return all(importlib.util.find_spec(p) is not None for p in ("speechmos", "onnxruntime", "requests"))


def default_mos() -> str:
    return "dnsmos" if dnsmos_available() else "none"


class DNSMOS:
    """DNSMOS P.835 and P.808 over speechmos's ONNX models, the sessions built once."""

    label = "dnsmos"

    def __init__(self, threads: int = 0):
        try:
            import onnxruntime as ort
            from speechmos.dnsmos import DNSMOS as Scorer
        except ImportError as err:
            raise ImportError(f"DNSMOS needs the Python packages speechmos, onnxruntime and requests ({err.name} is "
                              f"missing): {EXTRA_HINT} (the 'eval' extra), or pass --mos none") from None
        folder = Path(next(iter(importlib.util.find_spec("speechmos").submodule_search_locations))) / "dnsmos_models"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1

        class Sessions(Scorer):  # the package's scoring, with sessions built here, once
            def __init__(self):
                self.primary_model_path = str(folder / "sig_bak_ovr.onnx")
                self.onnx_sess = ort.InferenceSession(self.primary_model_path, options,
                                                      providers=["CPUExecutionProvider"])
                self.p808_onnx_sess = ort.InferenceSession(str(folder / "model_v8.onnx"), options,
                                                           providers=["CPUExecutionProvider"])

        self.scorer = Sessions()

    def score(self, wavs: list[np.ndarray]) -> list[dict[str, float]]:
        """Per 16 kHz waveform, its four predicted ratings (NaN for an empty one)."""
        out = []
        for wav in wavs:
            wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
            if not len(wav):
                out.append(dict.fromkeys(FIELDS, math.nan))
                continue
            if len(wav) < WINDOW:  # tiled to one window; the package's tiling past it would score repeats
                wav = np.resize(wav, ONE_WINDOW)
            r = self.scorer(wav, SAMPLE_RATE, False)
            out.append({k: round(float(r[f"{k}_mos"]), 4) for k in FIELDS})
        return out


def load_mos(name: str = ""):
    """The scorer ``name`` ("dnsmos", "none"; "" = ``default_mos()``), built once per process; None for "none"."""
    name = name or default_mos()
    if name not in BACKENDS:
        raise ValueError(f"--mos: unknown naturalness model {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "none":
        return None
    if name not in _LOADED:
        _LOADED[name] = DNSMOS()
    return _LOADED[name]


def mean_ratings(ratings: list[dict[str, float]]) -> dict[str, float]:
    """Per field, the mean over the utterances that have a number; plus how many did."""
    out = {}
    for k in FIELDS:
        values = [r[k] for r in ratings if not math.isnan(r[k])]
        out[k] = round(float(np.mean(values)), 4) if values else math.nan
    out["utterances"] = sum(not math.isnan(r["ovrl"]) for r in ratings)
    return out


def add_mos_arguments(parser) -> None:
    """``--mos`` for every command that scores audio."""
    parser.add_argument("--mos", default="", choices=["", *BACKENDS],
                        help="naturalness scored beside word error: dnsmos (DNSMOS P.835 OVRL/SIG/BAK and P.808) "
                             "or none (default: dnsmos where the 'eval' extra is installed)")


def resolve_mos(name: str) -> str:
    """The --mos to use: an explicit "dnsmos" must be installed (ImportError naming the extra); the default
    falls back to "none" with one message saying how to get it."""
    if name == "dnsmos" and not dnsmos_available():
        raise ImportError(f"--mos dnsmos needs the Python packages speechmos, onnxruntime and requests: {EXTRA_HINT} "
                          "(the 'eval' extra)")
    if not name:
        name = default_mos()
        if name == "none":
            print(f"note: naturalness (DNSMOS) is not scored: speechmos/onnxruntime are not installed ({EXTRA_HINT}); "
                  "--mos none silences this note", file=sys.stderr)
    return name
