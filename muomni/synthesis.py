"""Synthesis: text -> codes -> mel -> wav. The last step, ``vocode``, lives here; the models come from
``muomni.load``.

``vocode`` uses a trained HiFi-GAN generator when one is given and falls back to Griffin-Lim
(no training needed, lower quality) otherwise, saying so once per process.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from muomni.audio import HOP_LENGTH, LOG_FLOOR, N_FFT, SAMPLE_RATE
from muomni.models.griffinlim import griffin_lim_from, magnitude_of, mel_to_wav
from muomni.streaming import (
    CodecStage,
    VocoderStage,
    WarmGriffinLim,
    codec_decoder_radius,
    hifigan_radius,
    pause_frames,
)
from muomni.synthesis_config import (
    GLOBAL_LOOKAHEAD,
    GRIFFIN_LIM_CONTEXT,
    GRIFFIN_LIM_CROSSFADE,
    MEL_FROM,
    PAUSE_SECONDS,
    STREAM_CHUNK_FRAMES,
    SynthesisConfig,
)
from muomni.text import TextProcessor, split_text

DEFAULTS = SynthesisConfig()  # every default below (muomni.synthesis_config)

_WARNED_GRIFFIN_LIM = False


def vocode(mel: Tensor, vocoder: nn.Module | None = None, n_iter: int = DEFAULTS.griffin_lim_iters) -> Tensor:
    """log-mel (B, T, 128) or (T, 128) -> wav (B, T * 256) or (T * 256,).

    vocoder: a HiFi-GAN generator (``muomni.load.load_vocoder``: trained or pretrained) or None for Griffin-Lim
    with n_iter iterations, run on mel's device (``muomni.models.griffinlim.mel_to_wav``, after one warning per
    process).
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
def text_to_codes(bundle: TalkerBundle, texts: list[str], speakers=None, temperature: float = DEFAULTS.temperature,
                  top_k: int | None = DEFAULTS.top_k, top_p: float | None = DEFAULTS.top_p,
                  seed: int | None = DEFAULTS.seed, max_frames: int | None = None,
                  duration_scale: float = DEFAULTS.duration_scale, return_probs: bool = False,
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
    _warn_past_training(bundle, texts, lens.tolist(), frames)
    codes = [out[0][i, :n] for i, n in enumerate(frames)]
    return (codes, [out[2][i, :n] for i, n in enumerate(frames)]) if return_probs else codes


def _warn_past_training(bundle: TalkerBundle, texts: list[str], text_lens: list[int], frames: list[int]) -> None:
    """One warning naming the texts whose tokens or generated frames ran past the lengths the Talker trained
    on (``max_text``, ``max_frames``): rotary positions it never saw, and no stop it learned there."""
    cfg = bundle.model.cfg
    over = [f"{t[:40]!r} ({n} tokens, {f} frames)" for t, n, f in zip(texts, text_lens, frames)
            if (cfg.max_text and n > cfg.max_text) or (cfg.max_frames and f > cfg.max_frames)]
    if over:
        warnings.warn(f"{len(over)} text(s) ran past the lengths this Talker trained on (max_text {cfg.max_text} "
                      f"tokens, max_frames {cfg.max_frames} frames), where it degrades: {'; '.join(over[:3])}; "
                      "synthesize() splits long texts at sentence and clause boundaries", stacklevel=4)


def split_for_talker(bundle: TalkerBundle, texts: list[str]) -> tuple[list[str], list[int]]:
    """Texts longer than the Talker's trained ``max_text`` cut into pieces that fit (``muomni.text.split_text``:
    sentences, then clauses) -> (every piece in order, the index of the text each piece comes from)."""
    limit = bundle.model.cfg.max_text
    pieces, owners = [], []
    for i, text in enumerate(texts):
        if not text or not text.strip():
            raise ValueError("cannot synthesize empty text")
        parts = split_text(text, lambda t: len(bundle.text.symbols(t)) <= limit) if limit else [text]
        pieces += parts
        owners += [i] * len(parts)
    return pieces, owners


def join_with_pauses(mels: list[Tensor], owners: list[int], seconds: float = PAUSE_SECONDS) -> list[Tensor]:
    """Mels (T_i, 128) of pieces -> one mel per text, its pieces joined by ``seconds`` of silence (the log-mel
    floor)."""
    joined: list[list[Tensor]] = [[] for _ in range(max(owners) + 1)]
    for mel, owner in zip(mels, owners):
        if joined[owner]:
            joined[owner].append(torch.full((round(seconds * SAMPLE_RATE / HOP_LENGTH), mel.shape[1]),
                                            math.log(LOG_FLOOR), dtype=mel.dtype, device=mel.device))
        joined[owner].append(mel)
    return [torch.cat(parts) for parts in joined]


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


def synthesize_with_mels(bundle: TalkerBundle, texts: list[str], speakers=None, vocoder: nn.Module | None = None,
                         n_iter: int = DEFAULTS.griffin_lim_iters, mel_from: str = DEFAULTS.mel_from,
                         **generation) -> tuple[list[Tensor], list]:
    """texts -> (log-mels (T, 128), 16 kHz waveforms as numpy float32): text -> codes -> mel -> vocoder.

    A text longer than the Talker's trained ``max_text`` is synthesized in pieces (``split_for_talker``),
    generated in one batch with the other texts' pieces and joined with short pauses.

    mel_from: "expected" decodes the expectation of each frame's code vectors under the Talker's
    distribution (``probs_to_mel``; the generated codes still drive generation), "codes" the generated
    codes themselves. On held-out demo sentences "expected" is the more intelligible (README).
    generation: temperature, top_k, top_p, seed, max_frames, duration_scale, compile (see text_to_codes).
    """
    if mel_from not in MEL_FROM:
        raise ValueError(f"mel_from = {mel_from!r}: expected one of {', '.join(MEL_FROM)}")
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    ids = _speaker_ids(bundle, speakers, len(texts))
    pieces, owners = split_for_talker(bundle, texts)
    spk = [ids[i] for i in owners]
    if mel_from == "expected":
        mels = probs_to_mel(bundle.codec, text_to_codes(bundle, pieces, spk, return_probs=True, **generation)[1])
    else:
        mels = codes_to_mel(bundle.codec, text_to_codes(bundle, pieces, spk, **generation))
    mels = join_with_pauses(mels, owners)
    return mels, [vocode(mel, vocoder, n_iter=n_iter).reshape(-1).cpu().numpy() for mel in mels]


def synthesize(bundle: TalkerBundle, texts: list[str], speakers=None, vocoder: nn.Module | None = None,
               n_iter: int = DEFAULTS.griffin_lim_iters, mel_from: str = DEFAULTS.mel_from, **generation) -> list:
    """texts -> 16 kHz waveforms (numpy float32), Griffin-Lim when no vocoder is given."""
    return synthesize_with_mels(bundle, texts, speakers, vocoder, n_iter, mel_from, **generation)[1]


# ---------------------------------------------------------------- streaming (docs/DESIGN.md §11)

def stream_synthesis(bundle: TalkerBundle, text: str, speaker=None, vocoder: nn.Module | None = None,
                     chunk_frames: int = STREAM_CHUNK_FRAMES, lookahead: int | None = None,
                     n_iter: int = DEFAULTS.griffin_lim_iters, mel_from: str = DEFAULTS.mel_from,
                     vocoder_context: int | None = None, temperature: float = DEFAULTS.temperature,
                     top_k: int | None = DEFAULTS.top_k, top_p: float | None = DEFAULTS.top_p,
                     seed: int | None = DEFAULTS.seed, max_frames: int | None = None,
                     duration_scale: float = DEFAULTS.duration_scale):
    """text -> 16 kHz float32 waveform chunks (numpy), yielded while the Talker decodes; together they are
    ``synthesize`` of the same text and seed (``muomni.streaming`` says how exactly).

    Every ``chunk_frames`` code frames (320 ms at 4) the new frames go through the codec decoder with its
    receptive field of context on the left and ``lookahead`` code frames on the right (default: the receptive
    field, which makes the mel exact; fewer frames wait less for the Talker and leave an edge error), and then
    through the vocoder with ``vocoder_context`` mel frames on both sides (default: the HiFi-GAN generator's
    receptive field, exact; for Griffin-Lim ``GRIFFIN_LIM_CONTEXT`` frames and a cross-fade). A codec whose
    decoder attends over the whole sequence is read from the first frame on at every chunk, with
    ``GLOBAL_LOOKAHEAD`` frames of lookahead by default, and says that its chunk edges differ from offline.

    A text longer than the Talker's trained ``max_text`` streams piece by piece (``split_for_talker``), with
    ``PAUSE_SECONDS`` of silence between pieces, as offline synthesis joins them. Greedy decoding gives the
    offline codes; sampled decoding does too for a text of one piece (offline samples several pieces as one
    batch, from one generator).
    """
    from muomni.models.talker.generate import stream_frames  # looked up per call, so a test can wrap it

    model, codec = _check_streamable(bundle, text, mel_from)
    radius, lookahead = _codec_window(codec.cfg, lookahead)
    device = next(model.parameters()).device
    spk = torch.tensor(_speaker_ids(bundle, speaker, 1)).to(device)
    pieces, _ = split_for_talker(bundle, [text])
    gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    decode = _chunk_decoder(codec, mel_from)
    voc = _vocoder_stage(vocoder, codec.cfg.n_mels, vocoder_context, n_iter)
    pause = pause_frames(PAUSE_SECONDS, codec.cfg.n_mels, SAMPLE_RATE, HOP_LENGTH, LOG_FLOOR)  # (T, n_mels)
    for i, piece in enumerate(pieces):
        if i and (wav := voc.push(pause)) is not None:
            yield wav
        ids, lens = (t.to(device) for t in encode_texts(bundle, [piece]))  # (1, N), (1,)
        stage = CodecStage(decode, radius, lookahead, chunk_frames, codec.cfg.frames_per_token)
        for frame, probs in stream_frames(model, ids, lens, spk, max_frames=max_frames, temperature=temperature,
                                          top_k=top_k, top_p=top_p, generator=gen, duration_scale=duration_scale,
                                          return_probs=mel_from == "expected"):
            mel = stage.push((probs if mel_from == "expected" else frame).cpu().numpy())
            if mel is not None and (wav := voc.push(mel)) is not None:
                yield wav
        _warn_past_training(bundle, [piece], lens.tolist(), [len(stage.inputs)])
        if (mel := stage.finish()) is not None and (wav := voc.push(mel)) is not None:
            yield wav
    if (wav := voc.finish()) is not None:
        yield wav


def _check_streamable(bundle: TalkerBundle, text: str, mel_from: str) -> tuple[nn.Module, nn.Module]:
    """The Talker and codec of a request ``stream_synthesis`` can serve: one text, a known ``mel_from``, and an
    autoregressive Talker (the others write every frame in one pass, so there is nothing to stream)."""
    if mel_from not in MEL_FROM:
        raise ValueError(f"mel_from = {mel_from!r}: expected one of {', '.join(MEL_FROM)}")
    if not isinstance(text, str):
        raise ValueError("stream_synthesis takes one text (a string)")
    if bundle.model.cfg.arch != "ar":
        raise ValueError(f"a '{bundle.model.cfg.arch}' Talker writes every frame in one pass: there is nothing to "
                         "stream; use synthesize()")
    return bundle.model, bundle.codec


def _codec_window(codec_cfg, lookahead: int | None) -> tuple[int | None, int]:
    """The codec decoder's context for streaming -> (left radius in code frames, None when its attention reads the
    whole utterance; lookahead in code frames, defaulting to the radius, which makes the mel exact, or to
    ``GLOBAL_LOOKAHEAD``). A whole-utterance decoder is warned about: its chunk edges differ from offline."""
    radius = codec_decoder_radius(codec_cfg)
    if radius is None:
        warnings.warn(f"the codec decoder has {codec_cfg.decoder_attention_layers} attention layer(s), which read "
                      "the whole utterance: streaming reads every earlier frame and waits "
                      f"{GLOBAL_LOOKAHEAD if lookahead is None else lookahead} frames past each chunk, and its "
                      "chunk edges differ from offline synthesis", stacklevel=3)
    return radius, (radius if radius is not None else GLOBAL_LOOKAHEAD) if lookahead is None else lookahead


def _chunk_decoder(codec: nn.Module, mel_from: str):
    """The codec decoder as the streaming ``CodecStage`` calls it: numpy (T, n_q) codes, or (T, n_q, K)
    distributions with ``mel_from="expected"`` -> numpy log-mel (5 T, 128)."""
    codec_device = _codec_device(codec)

    def decode(x):  # (T, n_q) codes or (T, n_q, K) distributions -> (5 T, 128)
        with torch.no_grad():
            x = torch.from_numpy(x)[None].to(codec_device)
            return (codec.decode_expected(x) if mel_from == "expected" else codec.decode(x))[0].cpu().numpy()

    return decode


def _vocoder_stage(vocoder: nn.Module | None, n_mels: int, vocoder_context: int | None, n_iter: int):
    """The streaming ``VocoderStage``: the HiFi-GAN generator with its receptive field of mel context on both
    sides (exact), or without one Griffin-Lim warm-started from the previous chunk, with ``GRIFFIN_LIM_CONTEXT``
    frames of context and a cross-fade; ``vocoder_context`` overrides the context."""
    if vocoder is not None:
        context, crossfade = hifigan_radius(vocoder.cfg) if vocoder_context is None else vocoder_context, 0

        def run_vocoder(mel, _start):  # (T, 128) -> (T * 256,)
            return vocode(torch.from_numpy(mel), vocoder).reshape(-1).cpu().numpy()
    else:
        context = GRIFFIN_LIM_CONTEXT if vocoder_context is None else vocoder_context
        crossfade = min(GRIFFIN_LIM_CROSSFADE, context)
        vocode(torch.zeros(8, n_mels), None, n_iter=1)  # its one warning per process, as offline
        run_vocoder = WarmGriffinLim(magnitude_of, lambda mag, angles: griffin_lim_from(mag, angles, n_iter),
                                     N_FFT // 2 + 1)
    return VocoderStage(run_vocoder, context, HOP_LENGTH, crossfade)
