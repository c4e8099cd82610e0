"""Streaming synthesis and the ONNX runtime on the CPU: time to first audio, real-time factor, streamed against
offline audio, the exported graphs against PyTorch, and what the codec's lookahead costs.

Models: the demo recipe's sizes (configs/demo/talker.json with its depth decoder, codec_base, the demo HiFi-GAN),
untrained, or a trained Talker run named by ``BENCH_STREAMING_TALKER`` (it carries its codec) and a HiFi-GAN
checkpoint by ``BENCH_STREAMING_VOCODER``; rows name which ran. Speed does not depend on the weights; errors do.
The sentence is stretched to 10 s (the trained duration predictor scaled; an untrained one set to a constant).

- Time to first audio (streamed: the first chunk out) against offline synthesis of the same sentence, per
  backend (torch eager, onnxruntime), vocoder (HiFi-GAN, Griffin-Lim 32 iterations) and thread count (1, 2);
  median of 3 after a warm-up (``BENCH_STREAMING_THREADS=2`` runs one count). Targets: <= 0.3 s with
  HiFi-GAN, <= 0.5 s with Griffin-Lim, >= 5x earlier.
- Real-time factor of the whole chain streamed; onnxruntime's against torch's (target: no worse).
- Streamed against offline waveform SNR (target >= 30 dB with HiFi-GAN; Griffin-Lim's phase differs, so its
  spectral convergence against the mel is reported beside offline's).
- ONNX parity: the largest absolute difference per graph, and greedy codes identical.
- Codec lookahead 0..radius: the mel error it leaves at chunk edges (on ``BENCH_STREAMING_DATA`` utterances
  through the codec when given, else on the Talker's output) and the time to first audio it gives.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import muomni  # noqa: E402, F401  (before torch: the OpenMP wait policy that infer_tts.py runs with)

# isort: split
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_synthesis import _models  # noqa: E402
from bench_vocoder import generator_config  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from muomni.load import load_talker, load_vocoder  # noqa: E402
from muomni.models.griffinlim import mel_to_magnitude, spectral_convergence  # noqa: E402
from muomni.models.hifigan import Generator  # noqa: E402
from muomni.models.talker.aligner import aligned_states, durations_from_prediction, durations_to_path  # noqa: E402
from muomni.onnx_export import export_onnx  # noqa: E402
from muomni.onnx_runtime import OnnxTTS  # noqa: E402
from muomni.streaming import CodecStage, codec_decoder_radius, snr_db  # noqa: E402
from muomni.synthesis import (  # noqa: E402
    TalkerBundle,
    split_for_talker,
    stream_synthesis,
    synthesize,
    synthesize_with_mels,
    text_to_codes,
)
from muomni.synthesis_config import PAUSE_SECONDS  # noqa: E402

SENTENCE = ("The quick brown fox jumps over the lazy dog, and then it runs back home through the long grass to "
            "sleep beside the warm fire until the morning comes.")
SECONDS = 10.0
THREADS = tuple(int(n) for n in os.environ.get("BENCH_STREAMING_THREADS", "1,2").split(","))  # 1,2 by default
TTFA_TARGET = {"HiFi-GAN": 0.3, "Griffin-Lim": 0.5}


def load_models() -> tuple[TalkerBundle, Generator, str]:
    """The Talker bundle, a HiFi-GAN generator and a label saying which models these are."""
    talker = os.environ.get("BENCH_STREAMING_TALKER")
    if talker:
        bundle = load_talker(talker)
        label = f"trained Talker {Path(talker).name} (step {bundle.step})"
    else:
        model, codec, text, _ = _models("demo/talker.json", "codec_base.json", "demo/vocoder.json")
        model.cfg.max_text = 0  # never split: the untrained model reads the whole sentence
        n = len(text.encode(SENTENCE))
        with torch.no_grad():  # every token the same length: SECONDS in all
            model.aligner.duration.out.weight.zero_()
            model.aligner.duration.out.bias.fill_(SECONDS * codec.cfg.frame_rate / n)
        bundle, label = TalkerBundle(model, codec, text, [""]), "untrained demo-size models"
    vocoder_path = os.environ.get("BENCH_STREAMING_VOCODER")
    if vocoder_path:
        return bundle, load_vocoder(vocoder_path), label + f", HiFi-GAN {Path(vocoder_path).name}"
    torch.manual_seed(0)
    return bundle, Generator(generator_config("demo/vocoder.json")).remove_weight_norm().eval(), label


def duration_scale(bundle: TalkerBundle) -> float:
    """The duration scale that makes SENTENCE last SECONDS (its pieces' frames plus the pauses between them)."""
    pieces = split_for_talker(bundle, [SENTENCE])[0]
    pauses = PAUSE_SECONDS * (len(pieces) - 1)
    scale, spk = 1.0, torch.zeros(1, dtype=torch.long)
    for _ in range(3):
        frames = 0
        for piece in pieces:
            ids = torch.tensor([bundle.text.encode(piece)])
            lens = torch.tensor([ids.shape[1]])
            with torch.no_grad():
                pred = bundle.model.aligner.predict_durations(bundle.model.encode_text(ids, lens, spk), lens, spk)
            frames += int(durations_from_prediction(pred, lens, bundle.model.cfg.sub_frames, scale)[1][0])
        scale *= (SECONDS - pauses) * bundle.codec.cfg.frame_rate / frames
    return scale


def timed_stream(make) -> tuple[float, float, np.ndarray]:
    begin, first, chunks = time.perf_counter(), None, []
    for chunk in make():
        first = time.perf_counter() - begin if first is None else first
        chunks.append(chunk)
    return first, time.perf_counter() - begin, np.concatenate(chunks)


def median_runs(fn, repeats: int = 3):
    """fn() once to warm up, then repeats times -> the per-field median of its tuples, and the last output."""
    fn()
    runs = [fn() for _ in range(repeats)]
    return [statistics.median(r[i] for r in runs) for i in range(len(runs[0]) - 1)], runs[-1][-1]


@torch.no_grad()
def parity(bundle: TalkerBundle, vocoder: Generator, tts: OnnxTTS) -> dict[str, float]:
    """Largest absolute difference of each graph's output against its PyTorch module, on the sentence."""
    model, cfg = bundle.model, bundle.model.cfg
    text = torch.tensor([bundle.text.encode(split_for_talker(bundle, [SENTENCE])[0][0])])
    lens, spk = torch.tensor([text.shape[1]]), torch.zeros(1, dtype=torch.long)
    states, dur = tts._run("text_encoder", text=text.numpy(), text_lens=lens.numpy(), speakers=spk.numpy())
    enc = model.encode_text(text, lens, spk)
    out = {"text_encoder": np.abs(states - enc.numpy()).max()}
    pred = model.aligner.predict_durations(enc, lens, spk)
    out["text_encoder durations"] = np.abs(dur - pred.numpy()).max()
    d, n = durations_from_prediction(pred, lens, cfg.sub_frames)
    path = durations_to_path(d, int(n[0]) * cfg.sub_frames)
    ort_aligned = tts._run("align", states=enc.numpy(), path=path.numpy(), n_frames=n.numpy())[0]
    out["align"] = np.abs(ort_aligned - aligned_states(model.aligner, enc, path, n, int(n[0]) + 1).numpy()).max()
    codes, probs = text_to_codes(bundle, [SENTENCE[:80]], return_probs=True, max_frames=40)
    ort_codes, ort_probs = tts.codes(SENTENCE[:80], max_frames=40)
    out["prefill + step + depth (distributions)"] = np.abs(ort_probs - probs[0].numpy()).max()
    out["greedy codes identical (fraction of frames)"] = float((ort_codes == codes[0].numpy()).all(-1).mean())
    if model.depth is not None:
        h, c = torch.randn(4, cfg.d_model), torch.randint(0, cfg.codebook_size, (4, cfg.n_q - 1))
        out["depth"] = max(np.abs(tts._run("depth", hidden=h.numpy(), codes=c[:, :k].numpy())[0]
                                  - model.depth.logits(h, c[:, :k])[:, -1].numpy()).max() for k in range(1, cfg.n_q))
    out["codec_decode"] = np.abs(tts.decode(codes[0].numpy()) - bundle.codec.decode(codes[0][None])[0].numpy()).max()
    out["codec_expected"] = np.abs(tts.decode(probs[0].numpy())
                                   - bundle.codec.decode_expected(probs[0][None])[0].numpy()).max()
    mel = bundle.codec.decode_expected(probs[0][None])[0]
    out["vocoder"] = np.abs(tts.vocode(mel.numpy(), "hifigan") - vocoder(mel).numpy()).max()
    return {k: float(v) for k, v in out.items()}


def edge_errors(bundle: TalkerBundle, scale: float) -> tuple[str, list[np.ndarray]]:
    """Per-frame codec inputs to stream: corpus utterances' codes (BENCH_STREAMING_DATA) or the Talker's output."""
    data = os.environ.get("BENCH_STREAMING_DATA")
    if data:
        from muomni.audio import load_audio, log_mel

        wavs = sorted((Path(data) / "wavs").glob("*.wav"))[:12]
        with torch.no_grad():
            return (f"{len(wavs)} utterances of {Path(data).name} through the codec",
                    [bundle.codec.encode(log_mel(load_audio(w)).reshape(1, -1, 128))[0].numpy() for w in wavs])
    probs = text_to_codes(bundle, split_for_talker(bundle, [SENTENCE])[0], return_probs=True,
                          duration_scale=scale)[1]
    return "the Talker's distributions on the sentence", [p.numpy() for p in probs]


def lookahead_rows(bundle: TalkerBundle, vocoder: Generator, scale: float, label: str) -> list[dict]:
    codec = bundle.codec
    radius = codec_decoder_radius(codec.cfg)
    source, inputs = edge_errors(bundle, scale)

    def decode(x):
        with torch.no_grad():
            t = torch.from_numpy(x)[None]
            return (codec.decode(t) if x.ndim == 2 else codec.decode_expected(t))[0].numpy()

    rows = []
    for L in sorted({0, 1, 2, 4, 6, radius}):
        worst, means = 0.0, []
        for x in inputs:
            stage = CodecStage(decode, radius, L, 4, codec.cfg.frames_per_token)
            out = [m for m in (stage.push(f) for f in x) if m is not None] + [stage.finish()]
            err = np.abs(np.concatenate([m for m in out if m is not None]) - decode(x))
            worst, means = max(worst, float(err.max())), means + [float(err.mean())]
        with torch.no_grad():
            ttfa = statistics.median(
                timed_first(lambda L=L: stream_synthesis(bundle, SENTENCE, vocoder=vocoder, lookahead=L,
                                                         duration_scale=scale)) for _ in range(3))
        rows.append(row(f"codec lookahead {L} of {radius} code frames ({source}): mel error at chunk edges, "
                        f"largest (mean over all frames {np.mean(means):.2g}); time to first audio, torch, HiFi-GAN, "
                        f"1 thread {ttfa:.3f} s; {label}", worst, "log-mel", "exact at the receptive field", 0.0,
                        None))
    return rows


def timed_first(make) -> float:
    begin = time.perf_counter()
    next(iter(make()))
    return time.perf_counter() - begin


def row(metric, value, unit, baseline, baseline_value, target) -> dict:
    return {"benchmark": "streaming", "metric": metric, "value": value, "unit": unit, "baseline": baseline,
            "baseline_value": baseline_value, "target": target}


def run() -> list[dict]:
    warnings.simplefilter("ignore")  # Griffin-Lim's "no vocoder given" is the point of half the rows
    bundle, vocoder, label = load_models()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    scale = duration_scale(bundle)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_onnx(bundle, Path(tmp) / "onnx", vocoder)
        rows += [row(f"onnxruntime vs torch eager, {name}: largest absolute difference ({label})", value,
                     "", None, None, None) for name, value in parity(bundle, vocoder, OnnxTTS(folder, 1)).items()]
        try:
            with torch.no_grad():
                mel = synthesize_with_mels(bundle, [SENTENCE], duration_scale=scale, n_iter=1)[0][0]
            target = mel_to_magnitude(mel)  # for Griffin-Lim's spectral convergence
            for n in THREADS:
                torch.set_num_threads(n)
                tts = OnnxTTS(folder, n)
                with threadpool_limits(n):
                    rows += speed_rows(bundle, vocoder, tts, scale, n, label, target)
            torch.set_num_threads(1)
            rows += lookahead_rows(bundle, vocoder, scale, label)
        finally:
            torch.set_num_threads(threads)
    return rows


def speed_rows(bundle, vocoder, tts, scale: float, n: int, label: str, target: torch.Tensor) -> list[dict]:
    rows, rtf = [], {}
    gen = {"duration_scale": scale}
    for vname, voc, ort_voc in (("HiFi-GAN", vocoder, "hifigan"), ("Griffin-Lim", None, "griffinlim")):
        runs = {
            "torch eager": (
                lambda voc=voc: timed_stream(lambda: stream_synthesis(bundle, SENTENCE, vocoder=voc, **gen)),
                lambda voc=voc: timed_offline(lambda: synthesize(bundle, [SENTENCE], vocoder=voc, **gen)[0])),
            "onnxruntime": (
                lambda ort_voc=ort_voc: timed_stream(lambda: tts.stream(SENTENCE, vocoder=ort_voc, **gen)),
                lambda ort_voc=ort_voc: timed_offline(lambda: tts.synthesize(SENTENCE, vocoder=ort_voc, **gen))),
        }
        for backend, (streamed, offline) in runs.items():
            with torch.no_grad():
                (first, total), wav = median_runs(streamed)
                (whole,), ref = median_runs(offline)
            seconds = len(wav) / 16000
            where = f"{backend}, {vname}, {n} thread{'s' * (n > 1)}, {seconds:.1f} s sentence"
            rows.append(row(f"{where}: time to first audio, streamed ({whole / first:.1f}x earlier); {label}", first,
                            "s", "offline synthesis, whole sentence", whole,
                            f"<= {TTFA_TARGET[vname]} s, >= 5x earlier"))
            rtf[backend, vname] = total / seconds
            rows.append(row(f"{where}: real-time factor, streamed", total / seconds, "compute s / audio s",
                            "offline", whole / seconds, None))
            if n == 1:
                rows.append(snr_row(backend, vname, ref, wav, label, target))
        rows.append(row(f"onnxruntime, {vname}, {n} thread{'s' * (n > 1)}: real-time factor of the whole chain, "
                        "streamed", rtf["onnxruntime", vname], "compute s / audio s", "torch eager, same",
                        rtf["torch eager", vname], "<= baseline"))
    return rows


def timed_offline(fn) -> tuple[float, np.ndarray]:
    begin = time.perf_counter()
    wav = fn()
    return time.perf_counter() - begin, wav


def snr_row(backend: str, vname: str, offline: np.ndarray, streamed: np.ndarray, label: str,
            target: torch.Tensor) -> dict:
    if vname == "HiFi-GAN":
        return row(f"{backend}, HiFi-GAN: streamed vs offline waveform SNR; {label}", snr_db(offline, streamed), "dB",
                   None, None, ">= 30 dB")
    sc = [float(spectral_convergence(torch.from_numpy(w), target)) for w in (streamed, offline)]
    return row(f"{backend}, Griffin-Lim: streamed vs offline waveform SNR {snr_db(offline, streamed):.1f} dB (its "
               "phase is arbitrary); spectral convergence against the Talker's mel, streamed", sc[0], "", "offline",
               sc[1], None)


if __name__ == "__main__":
    for r in run():
        print(r)
