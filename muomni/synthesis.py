"""Synthesis: text -> codes -> mel -> wav. The last step, ``vocode``, lives here.

``vocode`` uses a trained HiFi-GAN generator when one is given and falls back to Griffin-Lim
(no training needed, lower quality) otherwise, saying so once per process.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from muomni.checkpoint import load_checkpoint
from muomni.config import ConfigError, config_from_dict
from muomni.models.codec import codec_from_dict
from muomni.models.griffinlim import mel_to_wav
from muomni.models.hifigan import HiFiGANConfig
from muomni.models.talker import AnyTalkerConfig, TalkerConfig, build_talker
from muomni.models.universal import build_generator
from muomni.pretrained import is_pretrained_name, load_universal, parse_name
from muomni.text import TextProcessor

_WARNED_GRIFFIN_LIM = False


@dataclass
class _VocoderModel:
    model: HiFiGANConfig = field(default_factory=HiFiGANConfig)


def load_vocoder(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The HiFi-GAN generator of a train_vocoder.py checkpoint (file, run folder or exported folder), or the
    pretrained one a name gives: ``universal`` (HiFi-GAN V1's universal generator behind the default mel
    adapter) or ``universal:<adapter>`` (``muomni.pretrained``); in eval mode with weight norm folded in.
    Either maps muomni's log-mel (B, T, 128) to 16 kHz audio (B, T * 256).

    Raises CheckpointError for a damaged file or a checkpoint of another stage, and PretrainedMissing (a
    ConfigError naming the install command) when a pretrained name's package is not installed.
    """
    if is_pretrained_name(path):
        generator = load_universal(parse_name(str(path)))
        return generator.remove_weight_norm().eval().to(device)
    payload = load_checkpoint(path, stage="vocoder")
    if "generator" not in payload:
        raise ConfigError(f"{path}: vocoder checkpoint has no 'generator' weights")
    cfg = config_from_dict({"model": payload["config"]["model"]}, _VocoderModel, source=str(path)).model
    generator = build_generator(cfg)
    generator.load_state_dict(payload["generator"])
    return generator.remove_weight_norm().eval().to(device)


def vocode(mel: Tensor, vocoder: nn.Module | None = None, n_iter: int = 32) -> Tensor:
    """log-mel (B, T, 128) or (T, 128) -> wav (B, T * 256) or (T * 256,).

    vocoder: a HiFi-GAN generator (load_vocoder: trained or pretrained) or None for Griffin-Lim with n_iter iterations,
    run on mel's device (``muomni.models.griffinlim.mel_to_wav``, after one warning per process).
    """
    if vocoder is not None:
        device = next(vocoder.parameters()).device
        with torch.no_grad():
            return vocoder(mel.to(device).float()).to(mel.device)
    global _WARNED_GRIFFIN_LIM
    if not _WARNED_GRIFFIN_LIM:
        _WARNED_GRIFFIN_LIM = True
        warnings.warn("no vocoder checkpoint given: using Griffin-Lim, which needs no training but sounds "
                      "phasey and buzzy; train one with train_vocoder.py and pass it for better audio",
                      stacklevel=2)
    with torch.no_grad():
        return mel_to_wav(mel.float(), n_iter=n_iter)


# ---------------------------------------------------------------- text -> codes -> mel (the Talker)


@dataclass
class TalkerBundle:
    """Everything a Talker checkpoint carries: the model, its codec, its text vocabulary, its speakers."""

    model: nn.Module  # muomni.models.talker.Talker or TRMTalker (build_talker)
    codec: nn.Module  # muomni.models.codec.CodecModel
    text: TextProcessor
    speakers: list[str]
    step: int = 0


@dataclass
class _TalkerModel:
    model: AnyTalkerConfig = field(default_factory=TalkerConfig)


def load_talker(path: str | Path, device: str | torch.device = "cpu") -> TalkerBundle:
    """A train_talker.py checkpoint -> TalkerBundle in eval mode; needs no other file."""
    payload = load_checkpoint(path, stage="talker")
    for key in ("model", "codec", "text"):
        if key not in payload:
            raise ConfigError(f"{path}: Talker checkpoint has no '{key}' entry (written by an older train_talker.py?)")
    cfg = config_from_dict({"model": payload["config"]["model"]}, _TalkerModel, source=str(path)).model
    model = build_talker(cfg)
    model.load_state_dict(payload["model"])
    codec = codec_from_dict(payload["codec"], source=f"{path} (codec)")
    return TalkerBundle(model.eval().to(device), codec.eval().to(device), TextProcessor.from_dict(payload["text"]),
                        list(payload.get("speakers", [""])), int(payload.get("step", 0)))


def _speaker_ids(bundle: TalkerBundle, speakers, n: int) -> list[int]:
    n_spk = bundle.model.cfg.n_speakers
    if speakers is None:
        return [0] * n
    speakers = [speakers] * n if isinstance(speakers, (int, str)) else list(speakers)
    if len(speakers) != n:
        raise ValueError(f"{len(speakers)} speakers given for {n} texts")
    ids = []
    for s in speakers:
        if isinstance(s, str) and not s.lstrip("-").isdigit():
            if s not in bundle.speakers:
                raise ValueError(f"unknown speaker {s!r}; this Talker knows {bundle.speakers}")
            ids.append(bundle.speakers.index(s))
            continue
        if not 0 <= int(s) < n_spk:
            raise ValueError(f"speaker id {s} out of range: this Talker has {n_spk} speaker(s), ids 0..{n_spk - 1} "
                             f"({bundle.speakers})")
        ids.append(int(s))
    return ids


def encode_texts(bundle: TalkerBundle, texts: list[str]) -> tuple[Tensor, Tensor]:
    """Token ids (B, N) padded with 0 and lengths (B,); refuses empty and too-long texts."""
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    limit = 2 * bundle.model.cfg.max_text if bundle.model.cfg.max_text else 10_000
    ids = []
    for t in texts:
        tok = bundle.text.encode(t)  # ValueError on empty text; warns naming unknown characters
        if len(tok) > limit:
            raise ValueError(f"text too long: {len(tok)} tokens, this Talker reads at most {limit} (twice its "
                             f"training max_text); split it into sentences: {t[:60]!r}...")
        ids.append(tok)
    lens = torch.tensor([len(t) for t in ids])
    out = torch.zeros(len(ids), int(lens.max()), dtype=torch.long)
    for i, t in enumerate(ids):
        out[i, :len(t)] = torch.tensor(t)
    return out, lens


@torch.no_grad()
def text_to_codes(bundle: TalkerBundle, texts: list[str], speakers=None, temperature: float = 0.0,
                  top_k: int | None = None, top_p: float | None = None, seed: int | None = 0,
                  max_frames: int | None = None, duration_scale: float = 1.0, return_probs: bool = False,
                  compile: bool = False):
    """texts -> codes, one (T, n_q) long tensor each (batched generation, seedable).

    compile: the decoding step compiled (CUDA graphs on a GPU): the first call warms up, later calls reuse it.

    return_probs: -> (codes, probs): also the Talker's distribution over every codebook's codes at every
    frame, (T, n_q, K) each, for ``probs_to_mel``.
    """
    text, lens = encode_texts(bundle, texts)
    spk = torch.tensor(_speaker_ids(bundle, speakers, len(texts)))
    device = next(bundle.model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    out = bundle.model.generate(text.to(device), lens.to(device), spk.to(device), max_frames=max_frames,
                                temperature=temperature, top_k=top_k, top_p=top_p, generator=gen,
                                duration_scale=duration_scale, return_probs=return_probs, compile=compile)
    frames = [max(int(n), 1) for n in out[1]]
    codes = [out[0][i, :n] for i, n in enumerate(frames)]
    return (codes, [out[2][i, :n] for i, n in enumerate(frames)]) if return_probs else codes


def _codec_device(codec: nn.Module) -> torch.device:
    return next(codec.parameters()).device


@torch.no_grad()
def codes_to_mel(codec: nn.Module, codes: list[Tensor]) -> list[Tensor]:
    """Codes (T, n_q) each -> log-mel (5 T, 128) each, through the codec's decoder."""
    cb = codec.cfg.codebook_size
    for c in codes:
        if c.dim() != 2 or c.shape[1] != codec.cfg.n_codebooks or int(c.max()) >= cb or int(c.min()) < 0:
            raise ValueError(f"codes of shape {tuple(c.shape)} (ids {int(c.min())}..{int(c.max())}) do not fit this "
                             f"codec ({codec.cfg.n_codebooks} codebooks of {cb}): made by a different codec?")
    return [codec.decode(c[None].to(_codec_device(codec)))[0] for c in codes]


@torch.no_grad()
def probs_to_mel(codec: nn.Module, probs: list[Tensor]) -> list[Tensor]:
    """Distributions over the codes (T, n_q, K) each -> log-mel (5 T, 128) each: the codec decodes the
    expected latent (``CodecModel.decode_expected``)."""
    shape = (codec.cfg.n_codebooks, codec.cfg.codebook_size)
    for p in probs:
        if p.dim() != 3 or tuple(p.shape[1:]) != shape:
            raise ValueError(f"code distributions of shape {tuple(p.shape)} do not fit this codec "
                             f"({shape[0]} codebooks of {shape[1]}): made by a different codec?")
    return [codec.decode_expected(p[None].to(_codec_device(codec)))[0] for p in probs]


MEL_FROM = ("expected", "codes")


def synthesize_with_mels(bundle: TalkerBundle, texts: list[str], speakers=None, vocoder: nn.Module | None = None,
                         n_iter: int = 32, mel_from: str = "expected", **generation) -> tuple[list[Tensor], list]:
    """texts -> (log-mels (T, 128), 16 kHz waveforms as numpy float32): text -> codes -> mel -> vocoder.

    mel_from: "expected" decodes the expectation of each frame's code vectors under the Talker's
    distribution (``probs_to_mel``; the generated codes still drive generation), "codes" the generated
    codes themselves. On held-out demo sentences "expected" is the more intelligible (README).
    generation: temperature, top_k, top_p, seed, max_frames, duration_scale, compile (see text_to_codes).
    """
    if mel_from not in MEL_FROM:
        raise ValueError(f"mel_from = {mel_from!r}: expected one of {', '.join(MEL_FROM)}")
    if mel_from == "expected":
        mels = probs_to_mel(bundle.codec, text_to_codes(bundle, texts, speakers, return_probs=True, **generation)[1])
    else:
        mels = codes_to_mel(bundle.codec, text_to_codes(bundle, texts, speakers, **generation))
    return mels, [vocode(mel, vocoder, n_iter=n_iter).reshape(-1).cpu().numpy() for mel in mels]


def synthesize(bundle: TalkerBundle, texts: list[str], speakers=None, vocoder: nn.Module | None = None,
               n_iter: int = 32, mel_from: str = "expected", **generation) -> list:
    """texts -> 16 kHz waveforms (numpy float32), Griffin-Lim when no vocoder is given."""
    return synthesize_with_mels(bundle, texts, speakers, vocoder, n_iter, mel_from, **generation)[1]
