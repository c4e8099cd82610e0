"""What the training scripts write every ``sample_every`` steps into ``samples/step_XXXXXXXX/``: wavs
(Griffin-Lim for the codec and the Talker, the generator itself for the vocoder), mel pictures and
info.json (docs/DESIGN.md §7).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from muomni.audio import load_audio, mel_to_png, save_wav
from muomni.data.cache import MelCache
from muomni.data.corpus import Item
from muomni.data.talker import TalkerItem
from muomni.data.vocoder import AudioCache
from muomni.files import write_json
from muomni.metrics import heldout_mel_l1
from muomni.models.griffinlim import mel_to_wav
from muomni.synthesis import TalkerBundle, codes_to_mel, probs_to_mel, text_to_codes


@torch.no_grad()
def codec_samples(folder: Path, step: int, model: nn.Module, cache: MelCache, items: list[Item], indices: list[int],
                  n_iter: int) -> None:
    """Original vs reconstructed mel picture and both as Griffin-Lim wavs, per held-out item."""
    model.eval()
    info = []
    for k, i in enumerate(indices):
        mel = torch.from_numpy(cache.get(i))[None].to(next(model.parameters()).device)
        rec = model(mel).mel[0].cpu()  # (5*T_frames, 128)
        mel = mel[0, : rec.shape[0]].cpu()
        name = f"{k:02d}_{items[i].id}"
        mel_to_png(folder / f"{name}.png", [mel, rec], [f"{items[i].id}: original", f"codec, step {step}"])
        save_wav(folder / f"{name}_original.wav", mel_to_wav(mel, n_iter))
        save_wav(folder / f"{name}_codec.wav", mel_to_wav(rec, n_iter))
        info.append({"id": items[i].id, "text": items[i].text, "mse_raw": float((rec - mel).pow(2).mean())})
    write_json(folder / "info.json", {"step": step, "items": info})
    model.train()


def vocoder_samples(folder: Path, step: int, generator: nn.Module, data: AudioCache, n: int,
                    device: torch.device) -> None:
    """The generator's wav of the first n held-out items, with a real vs generated mel picture each."""
    generator.eval()
    _, outputs = heldout_mel_l1(generator, data, n, device)
    generator.train()
    info = []
    for k, (fake, real_mel, fake_mel, score) in enumerate(outputs):  # the log-mels and L1 heldout_mel_l1 made
        item = data.items[k]
        save_wav(folder / f"{k:02d}_{item.id}.wav", fake)
        mel_to_png(folder / f"{k:02d}_{item.id}.png", [real_mel, fake_mel], [f"{item.id}: real", f"step {step}"])
        info.append({"id": item.id, "text": item.text, "mel_l1": score})
    write_json(folder / "info.json", {"step": step, "items": info})


def talker_ground_truth(folder: Path, items: list[TalkerItem], codec: nn.Module) -> None:
    """The original audio of held-out items and their codec reconstructions (Griffin-Lim), once per run."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, u in enumerate(items):
        save_wav(folder / f"{i:02d}_original.wav", load_audio(u.path))
        mel = codes_to_mel(codec, [torch.from_numpy(np.asarray(u.codes, dtype=np.int64))])[0]
        save_wav(folder / f"{i:02d}_codec.wav", mel_to_wav(mel).reshape(-1))
    (folder / "info.json").write_text(json.dumps(
        [{"id": u.id, "speaker": u.speaker, "text": u.text} for u in items], indent=2) + "\n")


def talker_samples(folder: Path, step: int, bundle: TalkerBundle, prompts: list[tuple[int, str]], tcfg) -> None:
    """Generate the prompts (speaker id, text) with the train config's sampling settings; write wavs
    (Griffin-Lim), one mel PNG and info.json into folder."""
    model = bundle.model
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codes, probs = text_to_codes(bundle, [p[1] for p in prompts], [p[0] for p in prompts],
                                     temperature=tcfg.sample_temperature, top_k=tcfg.sample_top_k or None,
                                     top_p=tcfg.sample_top_p or None, seed=tcfg.sample_seed, return_probs=True)
        mels = probs_to_mel(bundle.codec, probs)  # as infer_tts.py decodes by default
        for i, mel in enumerate(mels):
            save_wav(folder / f"{i:02d}.wav", mel_to_wav(mel).reshape(-1))
    mel_to_png(folder / "mels.png", [m.cpu() for m in mels], [p[1][:80] for p in prompts])
    info = [{"speaker": s, "text": t, "frames": int(len(c)), "seconds": len(c) / bundle.codec.cfg.frame_rate}
            for (s, t), c in zip(prompts, codes)]
    (folder / "info.json").write_text(json.dumps({"step": step, "samples": info}, indent=2) + "\n")
    model.train()
