"""Text-to-speech synthesis speed on CPU: real-time factor for a 5-second sentence (target <= 0.05).

The whole path ``infer_tts.py`` runs after loading: text -> token ids -> Talker generation with the KV cache
-> codec decoder -> vocoder, for one sentence of about 5 s (the Talker's duration path given durations that
sum to 62 code frames = 4.96 s, so an untrained model produces a sentence of the stated length; speed does
not depend on the weights). Real-time factor = compute seconds / audio seconds (lower is faster).

- Talker tiny (configs/talker_tiny.json) + codec_tiny + HiFi-GAN tiny: the issue's figure; baseline in the
  same run: the same path with Griffin-Lim (32 iterations) as the vocoder.
- The demo's models (configs/demo/: the Talker with its depth decoder, the 8 x 256 codec_base, the demo
  HiFi-GAN): for reference.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # muomni, and bench_vocoder's helpers

from bench_vocoder import generator_config, median_time, on_one_thread  # noqa: E402

from muomni.config import read_json_with_base  # noqa: E402
from muomni.models.codec import CodecConfig, CodecModel  # noqa: E402
from muomni.models.hifigan import Generator  # noqa: E402
from muomni.models.talker import Talker, TalkerConfig  # noqa: E402
from muomni.models.talker.generate import generate  # noqa: E402
from muomni.synthesis import vocode  # noqa: E402
from muomni.text import TextProcessor  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs back home to sleep."
FRAMES = 62  # code frames of 80 ms: 4.96 s of audio
TARGET = 0.05


def _models(talker_config: str, codec_config: str, vocoder_config: str):
    """Untrained Talker, codec and HiFi-GAN generator built from config files, in eval mode."""
    torch.manual_seed(0)
    codec_cfg = CodecConfig(**read_json_with_base(ROOT / "configs" / codec_config)["model"])
    codec = CodecModel(codec_cfg)
    codec(torch.randn(4, 200, 128))  # one training call initialises the codebooks (k-means)
    text = TextProcessor.build([SENTENCE], "chars")
    talker_cfg = TalkerConfig(**{**read_json_with_base(ROOT / "configs" / talker_config)["model"],
                                 "vocab_size": len(text), "n_q": codec_cfg.n_codebooks,
                                 "codebook_size": codec_cfg.codebook_size, "max_text": 128, "max_frames": 128})
    vocoder = Generator(generator_config(vocoder_config)).remove_weight_norm().eval()
    return Talker(talker_cfg).eval(), codec.eval(), text, vocoder


@torch.inference_mode()
def _synthesize(talker, codec, text, vocoder) -> torch.Tensor:
    """One sentence, text -> waveform, decoding the expected code vectors as infer_tts.py does by default;
    vocoder None = Griffin-Lim."""
    ids = torch.tensor([text.encode(SENTENCE)])  # (1, N)
    n = ids.shape[1]
    sub = talker.cfg.sub_frames
    durations = torch.full((1, n), FRAMES * sub // n)
    durations[0, : FRAMES * sub - int(durations.sum())] += 1  # exactly FRAMES frames in all
    _, lengths, probs = generate(talker, ids, torch.tensor([n]), torch.zeros(1, dtype=torch.long), temperature=0.0,
                                 durations=durations, return_probs=True)
    assert int(lengths[0]) == FRAMES, lengths
    return vocode(codec.decode_expected(probs), vocoder).reshape(-1)


def run() -> list[dict]:
    return on_one_thread(_measure)


def _measure() -> list[dict]:
    rows = []
    seconds = FRAMES * 0.08
    for label, configs, target in (
        ("Talker tiny + codec_tiny + HiFi-GAN tiny", ("talker_tiny.json", "codec_tiny.json", "vocoder_tiny.json"),
         f"<= {TARGET}"),
        ("demo Talker + codec_base + demo HiFi-GAN", ("demo/talker.json", "codec_base.json", "demo/vocoder.json"),
         None),
    ):
        models = _models(*configs)
        wav = _synthesize(*models)
        assert abs(wav.numel() / 16000 - seconds) < 0.02, wav.numel()
        t_hifigan = median_time(lambda models=models: _synthesize(*models))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no vocoder given: Griffin-Lim" is the point here
            t_gl = median_time(lambda models=models: _synthesize(*models[:3], None))
        rows.append({"benchmark": "synthesis", "metric": f"{label}: real-time factor, {seconds:.2f} s sentence, "
                     f"CPU, {torch.get_num_threads()} thread", "value": t_hifigan / seconds,
                     "unit": "compute s / audio s", "baseline": "same path with Griffin-Lim (32 iterations)",
                     "baseline_value": t_gl / seconds, "target": target})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
