"""Text to speech with numpy, onnxruntime and espeak-ng alone, from the folder that ``python -m muomni export RUN
--onnx OUT/`` writes (docs/DESIGN.md §12). Imports no torch: the text front-end (``muomni.text``), the streaming
stages (``muomni.streaming``) and Griffin-Lim (``muomni.griffinlim_numpy``) are numpy and the standard library,
and the defaults are synthesis's (``muomni.synthesis_config``).

    python -m muomni.onnx_runtime OUT/ --text "Hello there." --out hello.wav
    python -m muomni.onnx_runtime OUT/ --text "Hello there." --stream | aplay -r 16000 -f FLOAT_LE

It runs the same steps as ``muomni.synthesis`` (text_to_codes's generation with its KV cache, the codec's
expected or picked codes, the vocoder; long texts in pieces with pauses; ``stream`` as ``stream_synthesis``),
one text at a time. Greedy decoding gives torch's codes; sampling draws from numpy's generator, not torch's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from muomni.griffinlim_numpy import GriffinLim
from muomni.streaming import (
    CodecStage,
    VocoderStage,
    WarmGriffinLim,
    codec_decoder_radius,
    hifigan_radius,
    pause_frames,
    write_chunks,
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

DEFAULTS = SynthesisConfig()  # synthesis's defaults (muomni.synthesis_config imports no torch)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sample(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None,
           rng: np.random.Generator) -> np.ndarray:
    """logits (B, K) -> ids (B,): greedy at temperature 0, else temperature, top-k, nucleus (models/sampling.py)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.astype(np.float32) / max(temperature, 1e-5)
    if top_k:
        kth = np.sort(logits, -1)[:, -min(top_k, logits.shape[-1])][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p is not None and 0.0 < top_p < 1.0:
        order = np.argsort(-logits, -1)
        p = softmax(np.take_along_axis(logits, order, -1))
        drop = np.cumsum(p, -1) - p > top_p
        np.put_along_axis(logits, order, np.where(drop, -np.inf, np.take_along_axis(logits, order, -1)), -1)
    p = softmax(logits).astype(np.float64)
    return np.array([rng.choice(len(row), p=row / row.sum()) for row in p])


def durations_from_prediction(pred: np.ndarray, sub_frames: int, scale: float = 1.0) -> tuple[np.ndarray, int]:
    """Predicted code frames per token (N,) -> sub-frames per token (N,) >= 1 and the frame count, the last
    token stretched to fill whole frames (models/talker/aligner.py)."""
    d = np.maximum(np.round(pred.astype(np.float32) * sub_frames * scale), 1).astype(np.int64)
    n_frames = int(-(-d.sum() // sub_frames))
    d[-1] += n_frames * sub_frames - d.sum()
    return d, n_frames


class OnnxTTS:
    """An exported folder's graphs in onnxruntime sessions; ``threads`` sets their intra-op threads."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        self.folder = Path(folder)
        self.front = json.loads((self.folder / "frontend.json").read_text())
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        if threads != 1:  # idle pool threads spin by default: on 2 busy cores, 125 decoding steps of the demo
            # Talker at 2 threads took 1.8-2.0 s spinning, 0.6-0.8 s not (1 thread: 0.36-0.40 s)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {name: ort.InferenceSession(str(self.folder / file), opts, providers=["CPUExecutionProvider"])
                         for name, file in self.front["graphs"].items()}
        self.text = TextProcessor.from_dict(self.front["text"])
        self.speakers: list[str] = self.front["speakers"]
        self.cfg, self.codec, self.audio = self.front["talker"], self.front["codec"], self.front["audio"]
        a = self.audio
        self.griffin_lim = GriffinLim(np.load(self.folder / "mel_basis.npy"), a["n_fft"], a["hop_length"])

    def _run(self, name: str, **inputs) -> list[np.ndarray]:
        """One graph; inputs it does not read (the exporter drops unused ones: text_lens without an encoder) skipped."""
        session = self.sessions[name]
        return session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})

    def speaker_id(self, speaker: int | str | None) -> int:
        if speaker is None:
            return 0
        if isinstance(speaker, str) and not speaker.lstrip("-").isdigit():
            if speaker not in self.speakers:
                raise ValueError(f"unknown speaker {speaker!r}; this Talker knows {self.speakers}")
            return self.speakers.index(speaker)
        if not 0 <= int(speaker) < max(self.cfg["n_speakers"], 1):
            raise ValueError(f"speaker id {speaker} out of range ({self.speakers})")
        return int(speaker)

    def pieces(self, text: str) -> list[str]:
        """The text cut where it runs past the Talker's trained max_text (synthesis.split_for_talker)."""
        if not text or not text.strip():
            raise ValueError("cannot synthesize empty text")
        limit = self.cfg["max_text"]
        return split_text(text, lambda t: len(self.text.symbols(t)) <= limit) if limit else [text]

    # -- the Talker

    def frames(self, ids: list[int], speaker: int = 0, temperature: float = DEFAULTS.temperature,
               top_k: int | None = DEFAULTS.top_k, top_p: float | None = DEFAULTS.top_p,
               rng: np.random.Generator | None = None, max_frames: int | None = None,
               durations: np.ndarray | None = None, duration_scale: float = DEFAULTS.duration_scale
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Token ids -> (frame (n_q,) int64, distributions (n_q, K)) one frame at a time (generate.stream_frames).

        durations: sub-frames per token (N,), instead of the predictor's."""
        cfg, rng = self.cfg, rng or np.random.default_rng(0)
        N = len(ids)
        text = np.array([ids], dtype=np.int64)
        spk = np.array([speaker], dtype=np.int64)
        states, pred = self._run("text_encoder", text=text, text_lens=np.array([N], dtype=np.int64), speakers=spk)
        aligned, limit, cache_frames = self._align(states, pred, max_frames, durations, duration_scale)
        n_text = N if cfg["text_prefix"] else 0
        max_seq = -(-(n_text + cache_frames + 1) // cfg["cache_multiple"]) * cfg["cache_multiple"]
        L = n_text + 1
        mask = np.zeros((1, 1, L, max_seq), dtype=bool)
        mask[0, 0, :, :L] = np.tril(np.ones((L, L), dtype=bool))
        cache = {f"cache_{kv}{i}": np.zeros((1, cfg["n_kv_heads"], max_seq, cfg["head_dim"]), dtype=np.float32)
                 for i in range(cfg["n_layers"]) for kv in "kv"}
        lead = {"prefix": states} if cfg["text_prefix"] else {}
        h, logits, stop, *new = self._run("prefill", **lead, speakers=spk, aligned0=aligned[:, :1],
                                          positions=np.arange(L, dtype=np.int64)[None], mask=mask,
                                          slots=np.arange(L, dtype=np.int64), **cache)
        key_ok = np.zeros((1, 1, 1, max_seq), dtype=bool)
        key_ok[..., :L] = True
        base = N if n_text else 0
        for t in range(limit):
            if not cfg["duration_path"] and stop[0] > 0:
                return
            frame, probs = self._pick(logits, h, temperature, top_k, top_p, rng)
            yield frame[0], probs[0]
            if t + 1 < limit:
                cache = dict(zip(cache, new))
                key_ok[..., n_text + t + 1] = True
                logits, stop, h, *new = self._run(
                    "step", frame=frame, speakers=spk, aligned=aligned[:, min(t + 1, aligned.shape[1] - 1)][:, None],
                    positions=np.array([[base + t + 1]], dtype=np.int64), mask=key_ok,
                    slot=np.array([n_text + t + 1], dtype=np.int64), **cache)

    def _align(self, states: np.ndarray, pred: np.ndarray, max_frames: int | None, durations: np.ndarray | None,
               duration_scale: float) -> tuple[np.ndarray, int, int]:
        """The text encoder's states (1, N, D) and predicted durations (1, N) -> (the aligned states (1, F + 1, D)
        the audio positions add, zeros (1, 1, D) without a duration path; the frame limit; the frames the cache
        holds) (generate._plan). On the duration path the durations, given or predicted, set the length."""
        cfg, S = self.cfg, self.cfg["sub_frames"]
        limit = cache_frames = max_frames or cfg["frame_limit"]
        if not cfg["duration_path"]:
            return np.zeros((1, 1, cfg["d_model"]), dtype=np.float32), limit, cache_frames
        if durations is None:
            durations, n_frames = durations_from_prediction(pred[0], S, duration_scale)
        else:
            n_frames = int(-(-int(np.sum(durations)) // S))
        limit, cache_frames = (min(n_frames, limit), limit) if max_frames else (n_frames, n_frames)
        ends = np.cumsum(durations)
        sub = np.arange(n_frames * S)
        path = ((sub >= (ends - durations)[:, None]) & (sub < ends[:, None])).astype(np.float32)[None]
        aligned = self._run("align", states=states, path=path, n_frames=np.array([n_frames], dtype=np.int64))[0]
        return aligned, limit, cache_frames

    def _pick(self, logits, h, temperature, top_k, top_p, rng) -> tuple[np.ndarray, np.ndarray]:
        """One frame (1, n_q) and the distributions (1, n_q, K) (generate.pick_frame)."""
        first = [sample(logits[:, k], temperature, top_k, top_p, rng) for k in range(logits.shape[1])]
        if not self.cfg["depth"]:
            return np.stack(first, -1).astype(np.int64), softmax(logits)
        codes, every = np.stack(first[:1], -1).astype(np.int64), [logits[:, 0]]
        for _ in range(1, self.cfg["n_q"]):
            lg = self._run("depth", hidden=h, codes=codes)[0]
            every.append(lg)
            codes = np.concatenate([codes, sample(lg, temperature, top_k, top_p, rng)[:, None]], 1).astype(np.int64)
        return codes, softmax(np.stack(every, 1))

    def codes(self, text: str, speaker: int | str | None = None, **generation) -> tuple[np.ndarray, np.ndarray]:
        """One piece of text -> codes (T, n_q), distributions (T, n_q, K)."""
        out = list(self.frames(self.text.encode(text), self.speaker_id(speaker), **generation))
        return np.stack([f for f, _ in out]), np.stack([p for _, p in out])

    # -- codec and vocoder

    def decode(self, x: np.ndarray) -> np.ndarray:
        """Codes (T, n_q) or distributions (T, n_q, K) -> log-mel (5 T, n_mels)."""
        if x.ndim == 2:
            return self._run("codec_decode", codes=x[None].astype(np.int64))[0][0]
        return self._run("codec_expected", probs=x[None].astype(np.float32))[0][0]

    def vocode(self, mel: np.ndarray, vocoder: str = "auto", n_iter: int = DEFAULTS.griffin_lim_iters) -> np.ndarray:
        """log-mel (T, n_mels) -> wav (256 T,): the HiFi-GAN graph when the folder has one ("auto"), or Griffin-Lim."""
        if self._use_hifigan(vocoder):
            return self._run("vocoder", mel=mel[None].astype(np.float32))[0][0]
        self.griffin_lim.n_iter = n_iter
        return self.griffin_lim(mel)

    def _use_hifigan(self, vocoder: str) -> bool:
        if vocoder not in ("auto", "hifigan", "griffinlim"):
            raise ValueError(f"vocoder = {vocoder!r}: expected auto, hifigan or griffinlim")
        if vocoder == "hifigan" and "vocoder" not in self.sessions:
            raise ValueError(f"{self.folder} has no vocoder.onnx: export with --vocoder")
        return vocoder != "griffinlim" and "vocoder" in self.sessions

    def _pause(self) -> np.ndarray:
        a = self.audio
        return pause_frames(PAUSE_SECONDS, a["n_mels"], a["sample_rate"], a["hop_length"], a["log_floor"])

    # -- text to audio

    def synthesize(self, text: str, speaker: int | str | None = None, vocoder: str = "auto",
                   n_iter: int = DEFAULTS.griffin_lim_iters, mel_from: str = DEFAULTS.mel_from,
                   seed: int = DEFAULTS.seed, **generation) -> np.ndarray:
        """text -> 16 kHz float32 waveform, all at once (synthesis.synthesize)."""
        spk, rng, mels = self.speaker_id(speaker), np.random.default_rng(seed), []
        for piece in self.pieces(text):
            out = list(self.frames(self.text.encode(piece), spk, rng=rng, **generation))
            if out:
                mels += [self._pause()] if mels else []
                mels.append(self.decode(np.stack([p if mel_from == "expected" else f for f, p in out])))
        return self.vocode(np.concatenate(mels), vocoder, n_iter)

    def stream(self, text: str, speaker: int | str | None = None, vocoder: str = "auto",
               n_iter: int = DEFAULTS.griffin_lim_iters, mel_from: str = DEFAULTS.mel_from,
               chunk_frames: int = STREAM_CHUNK_FRAMES, lookahead: int | None = None, seed: int = DEFAULTS.seed,
               **generation) -> Iterator[np.ndarray]:
        """text -> waveform chunks while decoding (synthesis.stream_synthesis; muomni.streaming)."""
        spk, rng, hop = self.speaker_id(speaker), np.random.default_rng(seed), self.audio["hop_length"]
        radius = codec_decoder_radius(self.codec)
        if radius is None:
            warnings.warn("the codec decoder attends over the whole utterance: streaming reads every earlier frame "
                          "and its chunk edges differ from offline synthesis", stacklevel=2)
        lookahead = (radius if radius is not None else GLOBAL_LOOKAHEAD) if lookahead is None else lookahead
        if self._use_hifigan(vocoder):
            voc = VocoderStage(lambda mel, _start: self.vocode(mel, "hifigan"), hifigan_radius(self.front["vocoder"]),
                               hop)
        else:
            self.griffin_lim.n_iter = n_iter
            warm = WarmGriffinLim(self.griffin_lim.magnitude, self.griffin_lim.from_magnitude,
                                  self.audio["n_fft"] // 2 + 1)
            voc = VocoderStage(warm, GRIFFIN_LIM_CONTEXT, hop, GRIFFIN_LIM_CROSSFADE)
        for i, piece in enumerate(self.pieces(text)):
            if i and (wav := voc.push(self._pause())) is not None:
                yield wav
            stage = CodecStage(self.decode, radius, lookahead, chunk_frames, self.codec["frames_per_token"])
            for frame, probs in self.frames(self.text.encode(piece), spk, rng=rng, **generation):
                mel = stage.push(probs if mel_from == "expected" else frame)
                if mel is not None and (wav := voc.push(mel)) is not None:
                    yield wav
            if (mel := stage.finish()) is not None and (wav := voc.push(mel)) is not None:
                yield wav
        if (wav := voc.finish()) is not None:
            yield wav


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m muomni.onnx_runtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a folder written by python -m muomni export RUN --onnx FOLDER")
    parser.add_argument("--text", required=True)
    parser.add_argument("--speaker")
    parser.add_argument("--out", type=Path, help="wav to write (16-bit); with --stream it grows chunk by chunk")
    parser.add_argument("--stream", action="store_true", help="raw 16 kHz float32 PCM to stdout, or a growing --out")
    parser.add_argument("--vocoder", choices=("auto", "hifigan", "griffinlim"), default="auto")
    parser.add_argument("--mel-from", choices=MEL_FROM, default=DEFAULTS.mel_from)
    parser.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--max-seconds", type=float, default=DEFAULTS.max_seconds)
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime intra-op threads (its graphs are small: one is fastest on a busy 2-core box)")
    args = parser.parse_args(argv)
    if not args.stream and args.out is None:
        parser.error("give --out, or --stream for raw samples on stdout")
    tts = OnnxTTS(args.folder, args.threads)
    kw = dict(speaker=args.speaker, vocoder=args.vocoder, mel_from=args.mel_from, temperature=args.temperature,
              seed=args.seed, max_frames=int(args.max_seconds * tts.codec["frame_rate"]))
    rate, begin = tts.audio["sample_rate"], time.perf_counter()
    out = wave.open(str(args.out), "wb") if args.out is not None else None
    if out is not None:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)

    def write(chunk: np.ndarray) -> None:
        out.writeframes((np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes())  # the header follows

    try:
        first, samples = write_chunks(tts.stream(args.text, **kw) if args.stream else [tts.synthesize(args.text, **kw)],
                                      write if out is not None else None, begin)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if out is not None:
            out.close()
    seconds = samples / rate
    print(f"{args.out or 'stdout'}: {seconds:.2f} s, first audio after {first or 0:.3f} s, real-time factor "
          f"{(time.perf_counter() - begin) / max(seconds, 1e-9):.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
