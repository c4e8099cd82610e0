"""ONNX export (muomni.onnx_export, python -m muomni export --onnx) and the runtime without torch
(muomni.onnx_runtime): every graph against its PyTorch module, the same greedy codes and audio as the torch
chain, and a run in a process where torch cannot be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("onnxruntime", reason="the export extra is installed by make test")

from muomni import onnx_runtime, synthesis  # noqa: E402
from muomni.__main__ import main as muomni_main  # noqa: E402
from muomni.audio import HOP_LENGTH  # noqa: E402
from muomni.checkpoint import save_checkpoint  # noqa: E402
from muomni.griffinlim_numpy import GriffinLim  # noqa: E402
from muomni.load import load_talker  # noqa: E402
from muomni.models.codec import CodecConfig, CodecModel  # noqa: E402
from muomni.models.griffinlim import griffin_lim_from, magnitude_of  # noqa: E402
from muomni.models.hifigan import Generator, HiFiGANConfig  # noqa: E402
from muomni.models.talker import Talker, TalkerConfig  # noqa: E402
from muomni.models.talker.generate import decode_one, kv_caches, prefill  # noqa: E402
from muomni.onnx_export import export_onnx  # noqa: E402
from muomni.streaming import snr_db  # noqa: E402
from muomni.text import TextProcessor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRAPH_ATOL = 1e-4  # float32 graphs against eager PyTorch: operator order only
SNR_DB = 60.0  # onnxruntime's audio against torch's, HiFi-GAN
SENTENCES = ["Hello there.", "The number is 42, said the cat.", "Quiet rooms hear small sounds."]
VARIANTS = {"duration_path": {}, "plain_decoder": {"duration_path": False},
            "no_text_prefix": {"text_prefix": False}, "depth_decoder": {"n_q": 3, "depth_layers": 1},
            "attending_codec": {"codec": {"decoder_attention_layers": 1}}}


def _bundle(mode: str = "chars", codec: dict | None = None, **kw) -> synthesis.TalkerBundle:
    torch.manual_seed(0)
    text = TextProcessor(mode)
    codec = CodecModel(CodecConfig(n_codebooks=kw.get("n_q", 2), codebook_size=16, hidden_dim=32, latent_dim=16,
                                   codebook_dim=16, **(codec or {})))
    cfg = TalkerConfig(**{**dict(vocab_size=len(text), n_q=2, codebook_size=16, d_model=32, n_layers=2, n_heads=4,
                                 n_kv_heads=2, ffn_dim=64, encoder_layers=1, max_text=80, max_frames=16, n_speakers=2),
                          **kw})
    model = Talker(cfg).eval()
    if model.aligner is not None:
        with torch.no_grad():
            model.aligner.duration.out.bias.fill_(1.3)  # about 1.3 code frames per symbol
    return synthesis.TalkerBundle(model, codec.eval(), text, ["a", "b"])


def _vocoder() -> Generator:
    torch.manual_seed(0)
    return Generator(HiFiGANConfig(upsample_initial_channel=32, resblock_kernel_sizes=[3],
                                   resblock_dilation_sizes=[[1, 2]])).remove_weight_norm().eval()


@pytest.fixture(scope="module", params=VARIANTS.values(), ids=VARIANTS.keys())
def exported(request, tmp_path_factory):
    bundle, vocoder = _bundle(**request.param), _vocoder()
    folder = export_onnx(bundle, tmp_path_factory.mktemp("onnx") / "model", vocoder)
    return bundle, vocoder, onnx_runtime.OnnxTTS(folder, threads=1)


def _close(ort_out: np.ndarray, torch_out: torch.Tensor, name: str) -> float:
    diff = float(np.abs(ort_out - torch_out.detach().numpy()).max())
    assert ort_out.shape == tuple(torch_out.shape) and diff < GRAPH_ATOL, (name, diff)
    return diff


@torch.no_grad()
def test_every_graph_computes_its_pytorch_module(exported):
    bundle, vocoder, tts = exported
    model, cfg = bundle.model, bundle.model.cfg
    text = torch.tensor([bundle.text.encode("quiet rooms hear.")])
    lens, spk = torch.tensor([text.shape[1]]), torch.tensor([1])
    states, dur = tts._run("text_encoder", text=text.numpy(), text_lens=lens.numpy(), speakers=spk.numpy())
    _close(states, model.encode_text(text, lens, spk), "text_encoder")
    max_seq = 256
    with kv_caches(model, 1, max_seq):
        logits, stop, h, state = prefill(model, text, lens, spk, max_seq)
        cache = [t.clone() for a in model.decoder.modules() if hasattr(a, "kv_cache") and a.kv_cache is not None
                 for t in (a.kv_cache.k_cache, a.kv_cache.v_cache)]
        frame = torch.randint(0, cfg.codebook_size, (1, cfg.n_q))
        step = decode_one(model, state, frame, 1)
    if model.aligner is not None:
        _close(dur, model.aligner.predict_durations(model.encode_text(text, lens, spk), lens, spk), "durations")
        n = int(state.n_frames[0])
        path = np.zeros((1, text.shape[1], n * cfg.sub_frames), np.float32)
        path[0] = np.eye(text.shape[1], n * cfg.sub_frames, dtype=np.float32)
        out = tts._run("align", states=states, path=path, n_frames=np.array([n]))[0]
        from muomni.models.talker.aligner import aligned_states
        _close(out, aligned_states(model.aligner, torch.from_numpy(states), torch.from_numpy(path), torch.tensor([n]),
                                   n + 1), "align")
    # the runtime's own prefill and first step, fed the same frame, against the eager ones
    runtime = tts.frames(text[0].tolist(), 1, max_frames=3)
    first = next(runtime)
    np.testing.assert_allclose(first[1][0], torch.softmax(logits[0, 0], -1).numpy(), atol=GRAPH_ATOL)
    L = (text.shape[1] if cfg.text_prefix else 0) + 1
    mask = np.zeros((1, 1, 1, max_seq), bool)
    mask[..., :L + 1] = True
    aligned = state.aligned[:, 1:2].numpy() if state.aligned is not None else np.zeros((1, 1, cfg.d_model), np.float32)
    names = [f"cache_{kv}{i}" for i in range(cfg.n_layers) for kv in "kv"]
    out = tts._run("step", frame=frame.numpy(), speakers=spk.numpy(), aligned=aligned,
                   positions=np.array([[text.shape[1] * cfg.text_prefix + 1]]), mask=mask, slot=np.array([L]),
                   **{k: c.numpy() for k, c in zip(names, cache)})
    for name, a, b in zip(("logits", "stop", "hidden"), out, step):
        _close(a, b, f"step {name}")
    if model.depth is not None:
        for k in range(1, cfg.n_q):
            codes = torch.randint(0, cfg.codebook_size, (3, k))
            hid = torch.randn(3, cfg.d_model)
            _close(tts._run("depth", hidden=hid.numpy(), codes=codes.numpy())[0],
                   model.depth.logits(hid, codes)[:, -1], f"depth k={k}")
    codes = torch.randint(0, cfg.codebook_size, (1, 9, cfg.n_q))
    probs = torch.rand(1, 9, cfg.n_q, cfg.codebook_size).softmax(-1)
    _close(tts.decode(codes[0].numpy()), bundle.codec.decode(codes)[0], "codec_decode")
    _close(tts.decode(probs[0].numpy()), bundle.codec.decode_expected(probs)[0], "codec_expected")
    mel = torch.randn(30, 128) - 3
    _close(tts.vocode(mel.numpy(), "hifigan"), vocoder(mel), "vocoder")


@pytest.mark.parametrize("mel_from", ["expected", "codes"])
def test_the_runtime_synthesizes_the_torch_codes_and_audio(exported, mel_from):
    bundle, vocoder, tts = exported
    for sentence in SENTENCES:
        codes, probs = synthesis.text_to_codes(bundle, [sentence], speakers="b", return_probs=True, max_frames=16)
        ort_codes, ort_probs = tts.codes(sentence, speaker="b", max_frames=16)
        assert np.array_equal(ort_codes, codes[0].numpy()), sentence
        np.testing.assert_allclose(ort_probs, probs[0].numpy(), atol=GRAPH_ATOL)
    text = " ".join(SENTENCES)
    wav = synthesis.synthesize(bundle, [text], "b", vocoder, mel_from=mel_from, max_frames=16)[0]
    assert snr_db(wav, tts.synthesize(text, "b", mel_from=mel_from, max_frames=16)) > SNR_DB
    if bundle.codec.cfg.decoder_attention_layers:  # reads the whole utterance: streamed chunk edges differ
        with pytest.warns(UserWarning, match="attends over the whole utterance"):
            assert len(np.concatenate(list(tts.stream(text, "b", mel_from=mel_from, max_frames=16)))) == len(wav)
        return
    assert snr_db(wav, np.concatenate(list(tts.stream(text, "b", mel_from=mel_from, max_frames=16)))) > SNR_DB


def test_numpy_griffin_lim_is_torch_griffin_lim_from_the_same_phases():
    from muomni.audio import mel_basis

    mel = np.random.default_rng(0).normal(-4, 2, (40, 128)).astype(np.float32)
    angles = np.exp(2j * np.pi * np.random.default_rng(1).random((40, 513))).astype(np.complex64)
    gl = GriffinLim(mel_basis("cpu", torch.float64).numpy(), n_iter=8)
    np.testing.assert_allclose(gl.magnitude(mel), magnitude_of(mel), rtol=1e-3, atol=1e-4)
    ours, _ = gl.from_magnitude(gl.magnitude(mel), angles)
    ref, _ = griffin_lim_from(magnitude_of(mel), angles, n_iter=8)
    assert len(ours) == len(ref) == 40 * HOP_LENGTH and snr_db(ref, ours) > 40


def test_the_runtime_shares_synthesis_settings():
    assert onnx_runtime.PAUSE_SECONDS == synthesis.PAUSE_SECONDS
    assert (onnx_runtime.STREAM_CHUNK_FRAMES, onnx_runtime.GLOBAL_LOOKAHEAD, onnx_runtime.GRIFFIN_LIM_CONTEXT,
            onnx_runtime.GRIFFIN_LIM_CROSSFADE) == (synthesis.STREAM_CHUNK_FRAMES, synthesis.GLOBAL_LOOKAHEAD,
                                                    synthesis.GRIFFIN_LIM_CONTEXT, synthesis.GRIFFIN_LIM_CROSSFADE)


NO_TORCH = """import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
from muomni.onnx_runtime import main
code = main(sys.argv[1:])
assert not any(name == "torch" or name.startswith("torch.") for name, m in sys.modules.items() if m is not None)
sys.exit(code)
"""


@pytest.mark.parametrize("mode", ["chars", "phonemes"])
def test_the_runtime_runs_where_torch_cannot_be_imported(tmp_path, mode):
    bundle, vocoder = _bundle(mode), _vocoder()
    folder = export_onnx(bundle, tmp_path / "model", vocoder)
    text = "At 7:30, the quiet room heard it."
    for args in (["--out", str(tmp_path / "a.wav")], ["--stream"]):
        run = subprocess.run([sys.executable, "-c", NO_TORCH, str(folder), "--text", text, "--speaker", "b",
                              "--max-seconds", "1.2", *args], cwd=ROOT, capture_output=True, timeout=120)
        assert run.returncode == 0, run.stderr.decode()[-2000:]
    offline = synthesis.synthesize(bundle, [text], "b", vocoder, max_frames=15)[0]
    wav, sr = sf.read(str(tmp_path / "a.wav"), dtype="float32")
    raw = np.frombuffer(run.stdout, dtype="<f4")
    assert sr == 16000 and len(wav) == len(raw) == len(offline)
    assert np.abs(wav - offline).max() < 2 / 32768 and snr_db(offline, raw) > SNR_DB


def test_export_cli_writes_the_folder_and_refuses_a_codec(tiny_talker, tmp_path, capsys):
    ckpt = tiny_talker["dir"] / "step_00000002.pt"
    voc = _vocoder()
    save_checkpoint(tmp_path / "v.pt", {"stage": "vocoder", "step": 0, "format_version": 1,
                                        "config": {"model": {"upsample_initial_channel": 32,
                                                             "resblock_kernel_sizes": [3],
                                                             "resblock_dilation_sizes": [[1, 2]]}},
                                        "generator": Generator(voc.cfg).state_dict()})
    assert muomni_main(["export", str(ckpt), "--onnx", str(tmp_path / "o"), "--vocoder", str(tmp_path / "v.pt")]) == 0
    graphs = {p.name for p in (tmp_path / "o").glob("*.onnx")}
    assert graphs == {"text_encoder.onnx", "align.onnx", "prefill.onnx", "step.onnx", "codec_decode.onnx",
                      "codec_expected.onnx", "vocoder.onnx"}
    bundle, tts = load_talker(ckpt), onnx_runtime.OnnxTTS(tmp_path / "o")
    for sentence in SENTENCES:  # a trained (two steps) Talker on the flite corpus: the same greedy codes
        codes = synthesis.text_to_codes(bundle, [sentence], max_frames=30)[0]
        assert np.array_equal(tts.codes(sentence, max_frames=30)[0], codes.numpy()), sentence
    assert muomni_main(["export", str(tiny_talker["codec"]), "--onnx", str(tmp_path / "x")]) == 2
    assert "talker checkpoint is needed" in capsys.readouterr().err
