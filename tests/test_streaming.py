"""Streaming synthesis (muomni.streaming, synthesis.stream_synthesis, infer_tts.py --stream) on tiny models: the
receptive fields are the measured ones; streamed codes, mel and HiFi-GAN audio are the offline ones; audio comes
out before the Talker has finished."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

import infer_tts
from muomni import synthesis
from muomni.audio import load_audio, log_mel
from muomni.checkpoint import save_checkpoint
from muomni.load import load_talker, load_vocoder
from muomni.models.codec import CodecConfig, CodecModel
from muomni.models.griffinlim import (
    griffin_lim_from,
    magnitude_of,
    mel_to_magnitude,
    mel_to_wav,
    spectral_convergence,
)
from muomni.models.hifigan import Generator, HiFiGANConfig
from muomni.models.talker import Talker, TalkerConfig
from muomni.models.talker.generate import generate, stream_frames
from muomni.streaming import (
    CodecStage,
    VocoderStage,
    WarmGriffinLim,
    codec_decoder_radius,
    hifigan_radius,
    snr_db,
)
from muomni.synthesis_config import MEL_FROM

SNR_EXACT_DB = 80.0  # streamed vs offline HiFi-GAN audio with the full receptive field: float rounding only
CODECS = {"default": {}, "codec_tiny": {"n_blocks": 6, "dilations": [1, 2, 4]},
          "codec_base": {"n_blocks": 4, "dilations": [1, 2, 4, 1]},
          "wide_decoder": {"decoder_blocks": 3, "decoder_dilations": [3], "kernel_size": 5}}
VOCODERS = {"tiny": {}, "one_branch": {"resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 2]]},
            "v1_blocks": {"resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3}}
SMALL_CODEC = {"hidden_dim": 32, "latent_dim": 16, "codebook_dim": 16, "codebook_size": 32}


TALKERS = {"duration_path": {}, "plain_decoder": {"duration_path": False},
           "depth_decoder": {"n_q": 3, "depth_layers": 1}}


def tiny(**kw) -> Talker:
    torch.manual_seed(0)
    args = dict(vocab_size=20, n_q=2, codebook_size=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                ffn_dim=64, encoder_layers=1)
    return Talker(TalkerConfig(**{**args, **kw})).eval()


def lively(gen: Generator) -> Generator:
    """Weights at 1 / sqrt(fan-in) instead of HiFi-GAN's N(0, 0.01): a generator at its initialisation is
    almost constant, so context that it is missing would hardly show."""
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                m.weight.normal_(0, m.weight[0].numel() ** -0.5)
    return gen


def _reach(grad: torch.Tensor, centre: int) -> tuple[int, int]:
    """Frames left and right of centre where a gradient (T, C) is non-zero."""
    hit = (grad.abs().sum(-1) > 0).nonzero()[:, 0]
    return centre - int(hit.min()), int(hit.max()) - centre


@pytest.mark.parametrize("kw", CODECS.values(), ids=CODECS.keys())
def test_codec_receptive_field_is_the_measured_one(kw):
    codec = CodecModel(CodecConfig(**SMALL_CODEC, **kw))
    latent = torch.randn(1, 61, 16, requires_grad=True)
    codec._decode_latent(latent)[0, 150:155].sum().backward()  # the mel of code frame 30
    r = codec_decoder_radius(codec.cfg)
    assert _reach(latent.grad[0], 30) == (r, r)


@pytest.mark.parametrize("kw", VOCODERS.values(), ids=VOCODERS.keys())
def test_hifigan_receptive_field_is_the_measured_one(kw):
    gen = Generator(HiFiGANConfig(upsample_initial_channel=32, **kw)).remove_weight_norm()
    mel = torch.randn(1, 61, 128, requires_grad=True)
    gen(mel)[0, 30 * 256:31 * 256].sum().backward()
    r = hifigan_radius(gen.cfg)
    assert _reach(mel.grad[0], 30) == (r, r)


def test_an_attending_codec_decoder_reads_everything():
    assert codec_decoder_radius(CodecConfig(decoder_attention_layers=1)) is None
    assert codec_decoder_radius({"kernel_size": 3, "n_blocks": 2, "dilations": [1, 2]}) == 3  # the JSON form


def _stream(stage, inputs, *, finish=True) -> np.ndarray:
    out = [m for m in (stage.push(x) for x in inputs) if m is not None]
    last = stage.finish() if finish else None
    return np.concatenate(out + ([last] if last is not None else []))


@pytest.mark.parametrize("expected", [False, True], ids=["codes", "expected"])
@pytest.mark.parametrize("lookahead", [8, 3, 0], ids=["field", "three", "none"])
def test_codec_stage_equals_offline_away_from_chunk_edges(lookahead, expected):
    torch.manual_seed(0)
    codec = CodecModel(CodecConfig(**SMALL_CODEC, **CODECS["codec_base"])).eval()
    R, chunk, T = 8, 4, 37
    if expected:
        x = torch.randn(1, T, 2, 32).softmax(-1)
        offline = codec.decode_expected(x)[0].detach().numpy()
        stage = CodecStage(lambda w: codec.decode_expected(torch.from_numpy(w)[None])[0].detach().numpy(), R,
                           lookahead, chunk, 5)
    else:
        x = torch.randint(0, 32, (1, T, 2))
        offline = codec.decode(x)[0].detach().numpy()
        stage = CodecStage(lambda w: codec.decode(torch.from_numpy(w)[None])[0].detach().numpy(), R, lookahead,
                           chunk, 5)
    err = np.abs(_stream(stage, x[0].numpy()) - offline).max(-1).reshape(T, 5).max(-1)  # per code frame
    # a chunk [s, s + 4) is decoded with the window ending at s + 4 + lookahead: its last R - lookahead frames
    # read past that window, the others are exact
    edge = np.zeros(T, dtype=bool)
    for s in range(0, T - chunk - lookahead + 1, chunk):
        edge[max(s, s + chunk + lookahead - R):s + chunk] = True
    assert err[~edge].max() < 1e-5
    assert (err[edge].min() > 1e-4) if edge.any() else lookahead == R


@pytest.mark.parametrize("kw", VOCODERS.values(), ids=VOCODERS.keys())
def test_vocoder_stage_with_the_receptive_field_is_offline_hifigan(kw):
    torch.manual_seed(0)
    gen = lively(Generator(HiFiGANConfig(upsample_initial_channel=32, **kw)).remove_weight_norm().eval())
    mel = torch.randn(90, 128)

    def run(m, _start):
        with torch.no_grad():
            return gen(torch.from_numpy(m)).numpy()

    with torch.no_grad():
        offline = gen(mel).numpy()
    pieces = np.split(mel.numpy(), [7, 8, 30, 50, 71])  # irregular chunk sizes
    r = hifigan_radius(gen.cfg)
    exact = _stream(VocoderStage(run, r, 256), pieces)
    short = _stream(VocoderStage(run, r // 2, 256), pieces)
    assert len(exact) == len(offline) == len(short)
    assert snr_db(offline, exact) > SNR_EXACT_DB > snr_db(offline, short)


def test_warm_griffin_lim_keeps_the_phase_across_seams(flite_corpus):
    """Windows started from the last window's phases join almost as offline Griffin-Lim does; windows started
    from random phases do not (spectral convergence against the mel's magnitude). The mel inversion is per frame,
    so the windows may reuse it."""
    wavs = sorted((flite_corpus / "wavs").glob("*.wav"))[:2]
    scores = {"offline": [], "warm": [], "cold": []}
    for path in wavs:
        mel = log_mel(load_audio(path)).reshape(-1, 128)
        target = mel_to_magnitude(mel)
        np.testing.assert_allclose(magnitude_of(mel[10:30].numpy()), target[10:30].numpy(), rtol=1e-4, atol=1e-5)
        scores["offline"].append(float(spectral_convergence(mel_to_wav(mel), target)))
        warm = WarmGriffinLim(magnitude_of, griffin_lim_from, 513)
        for name, vocode in (("warm", warm), ("cold", lambda m, _: mel_to_wav(m))):
            out = _stream(VocoderStage(vocode, 12, 256, 4), np.split(mel.numpy(), range(20, len(mel), 20)))
            assert len(out) == len(mel) * 256
            scores[name].append(float(spectral_convergence(torch.from_numpy(out), target)))
    offline, warm, cold = (float(np.mean(v)) for v in scores.values())
    assert warm < 1.4 * offline < cold, scores  # measured: 1.22 and 1.60 times offline


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
@pytest.mark.parametrize("kw", TALKERS.values(), ids=TALKERS.keys())
def test_stream_frames_are_the_frames_generate_picks(kw, temperature):
    model = tiny(**kw)
    text, lens, spk = torch.randint(2, 20, (1, 9)), torch.tensor([9]), torch.zeros(1, dtype=torch.long)
    gen = dict(max_frames=12, temperature=temperature, top_k=8)
    codes, n, probs = generate(model, text, lens, spk, generator=torch.Generator().manual_seed(3), return_probs=True,
                               **gen)
    streamed = list(stream_frames(model, text, lens, spk, generator=torch.Generator().manual_seed(3),
                                  return_probs=True, **gen))
    assert len(streamed) == int(n[0]) > 0
    assert torch.equal(torch.stack([f for f, _ in streamed]), codes[0, :int(n[0])])
    torch.testing.assert_close(torch.stack([p for _, p in streamed]), probs[0, :int(n[0])], atol=1e-6, rtol=1e-6)


def test_a_suspended_stream_keeps_its_cache_while_other_text_is_generated():
    model = tiny()
    text, lens, spk = torch.randint(2, 20, (1, 9)), torch.tensor([9]), torch.zeros(1, dtype=torch.long)
    alone = [f for f, _ in stream_frames(model, text, lens, spk, max_frames=10, temperature=0.0)]
    stream, mixed = stream_frames(model, text, lens, spk, max_frames=10, temperature=0.0), []
    for i, (frame, _) in enumerate(stream):
        mixed.append(frame)
        if i == 3:  # the shared cache pool of the same shape is overwritten meanwhile
            generate(model, torch.randint(2, 20, (1, 9)), lens, spk, max_frames=10, temperature=0.0)
    assert torch.equal(torch.stack(alone), torch.stack(mixed))


# ---------------------------------------------------------------- the whole chain, with the trained tiny Talker

LONG = "the cat sat on the mat by the door, and then it walked out slowly into the rain and was gone."


@pytest.fixture(scope="module")
def talker_ckpt(tiny_talker):
    return tiny_talker["dir"] / "step_00000002.pt"


@pytest.fixture(scope="module")
def hifigan(tiny_talker):
    torch.manual_seed(0)
    gen = Generator(HiFiGANConfig(upsample_initial_channel=32, **VOCODERS["one_branch"]))
    path = tiny_talker["tmp"] / "vocoder.pt"
    save_checkpoint(path, {"stage": "vocoder", "step": 0, "format_version": 1,
                           "config": {"model": {"upsample_initial_channel": 32, **VOCODERS["one_branch"]}},
                           "generator": gen.state_dict()})
    return path


@pytest.mark.parametrize("mel_from", MEL_FROM)
def test_streamed_audio_is_the_offline_audio_and_starts_before_the_talker_ends(talker_ckpt, hifigan, mel_from,
                                                                               monkeypatch):
    bundle, vocoder = load_talker(talker_ckpt), load_vocoder(hifigan)
    offline = synthesis.synthesize(bundle, [LONG], vocoder=vocoder, mel_from=mel_from)[0]
    made, at_chunk = [], []

    def counted(*args, **kw):
        for item in stream_frames(*args, **kw):
            made.append(item)
            yield item

    monkeypatch.setattr("muomni.models.talker.generate.stream_frames", counted)
    chunks = []
    for chunk in synthesis.stream_synthesis(bundle, LONG, vocoder=vocoder, chunk_frames=2, mel_from=mel_from):
        chunks.append(chunk)
        at_chunk.append(len(made))
    streamed = np.concatenate(chunks)
    assert len(streamed) == len(offline) and snr_db(offline, streamed) > SNR_EXACT_DB
    assert len(chunks) > 3 and at_chunk[0] < len(made)  # audio out while the Talker is still writing


def test_a_long_text_streams_piece_by_piece_with_the_offline_pauses(talker_ckpt, hifigan):
    bundle, vocoder = load_talker(talker_ckpt), load_vocoder(hifigan)
    bundle.model.cfg.max_text = 40  # as if trained on short texts: LONG splits in clauses
    assert len(synthesis.split_for_talker(bundle, [LONG])[0]) > 2
    offline = synthesis.synthesize(bundle, [LONG], vocoder=vocoder)[0]
    streamed = np.concatenate(list(synthesis.stream_synthesis(bundle, LONG, vocoder=vocoder)))
    assert len(streamed) == len(offline) and snr_db(offline, streamed) > SNR_EXACT_DB


def test_griffin_lim_streams_the_offline_length_and_an_attending_codec_says_its_edges_differ(talker_ckpt):
    bundle = load_talker(talker_ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no vocoder given: Griffin-Lim", once per process
        offline = synthesis.synthesize(bundle, [LONG], n_iter=4)[0]
        streamed = np.concatenate(list(synthesis.stream_synthesis(bundle, LONG, n_iter=4)))
    assert len(streamed) == len(offline) and np.isfinite(streamed).all() and np.abs(streamed).max() > 0
    cfg = CodecConfig(**{**bundle.codec.cfg.__dict__, "decoder_attention_layers": 1})
    bundle.codec = CodecModel(cfg).eval()
    with pytest.warns(UserWarning, match="attention layer"):
        assert len(np.concatenate(list(synthesis.stream_synthesis(bundle, "Hello there.", n_iter=2)))) > 0


def test_infer_stream_writes_raw_float32_to_stdout(talker_ckpt, hifigan, capsysbinary):
    args = ["--talker", str(talker_ckpt), "--vocoder", str(hifigan), "--text", LONG, "--max-seconds", "20"]
    assert infer_tts.main(args + ["--stream", "--chunk-frames", "3"]) == 0
    captured = capsysbinary.readouterr()
    raw = np.frombuffer(captured.out, dtype="<f4")
    bundle = load_talker(talker_ckpt)
    offline = synthesis.synthesize(bundle, [LONG], vocoder=load_vocoder(hifigan), max_frames=250)[0]
    assert len(raw) == len(offline) and snr_db(offline, raw) > SNR_EXACT_DB
    assert b"first audio after" in captured.err


def test_infer_stream_out_grows_the_wav_as_chunks_arrive(talker_ckpt, tmp_path, monkeypatch):
    out, seen = tmp_path / "grow.wav", []

    def fake(*_args, **_kw):
        for k in range(3):
            seen.append(sf.info(str(out)).frames if k else 0)  # what a reader finds before chunk k arrives
            yield np.full(1000, 0.1 * (k + 1), dtype=np.float32)

    monkeypatch.setattr(infer_tts, "stream_synthesis", fake)
    assert infer_tts.main(["--talker", str(talker_ckpt), "--text", "hi", "--stream", "--out", str(out)]) == 0
    wav, sr = sf.read(str(out))
    assert seen == [0, 1000, 2000] and sr == 16000 and len(wav) == 3000
    assert wav[2500] == pytest.approx(0.3, abs=1e-4)


def test_infer_stream_refuses_several_texts(talker_ckpt, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("one\ntwo\n")
    with pytest.raises(SystemExit):
        infer_tts.main(["--talker", str(talker_ckpt), "--text-file", str(lines), "--stream"])
