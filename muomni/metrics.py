"""Objective figures that need no recogniser (docs/DESIGN.md §9): codec reconstruction and codebook use,
the Talker's held-out losses and perplexities, vocoder mel L1, PESQ and STOI. Word error is
``muomni.eval.wer``'s, the recognisers are ``muomni.eval.asr``'s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from muomni.audio import SAMPLE_RATE, log_mel
from muomni.data.cache import MelCache
from muomni.data.corpus import Item
from muomni.data.talker import TalkerData
from muomni.data.vocoder import AudioCache
from muomni.models.hifigan import mel_l1
from muomni.models.talker import perplexity

# ---------------------------------------------------------------- codec


@torch.no_grad()
def codec_heldout(model: nn.Module, cache: MelCache, indices: list[int], device: torch.device) -> dict[str, float]:
    """Held-out log-mel MSE (standardised and raw) and per-codebook usage (% of codes) and perplexity."""
    model.eval()
    se = se_raw = count = 0.0
    codes = []
    for i in indices:
        mel = torch.from_numpy(cache.get(i))[None].to(device)  # (1, T, 128)
        out = model(mel)
        target = mel[:, : out.mel.shape[1]]
        se += float(out.losses["recon"]) * target.numel()
        se_raw += float((out.mel - target).pow(2).sum())
        count += target.numel()
        codes.append(out.codes[0])
    model.train()
    usage, perplexity = model.usage(torch.cat(codes))
    metrics = {"mse": se / count, "mse_raw": se_raw / count}
    for q, (u, p) in enumerate(zip(usage, perplexity)):
        metrics[f"usage_{q}"], metrics[f"perplexity_{q}"] = 100 * u, p
    return metrics


@torch.no_grad()
def codec_round_trip(codec: nn.Module, cache: MelCache, items: list[Item],
                     keep: int = 0) -> tuple[dict, list[tuple[Item, Tensor, Tensor]]]:
    """The codec's round trip over every cached mel holding a code frame (the others are skipped with a
    warning): {"utterances", "mse_std" (standardised log-mel), "mse_raw", "usage", "perplexity"} and
    (item, original mel, reconstruction), each (5 T_frames, 128), of the first ``keep`` (0 = all)."""
    n = codec.cfg.frames_per_token
    se = se_raw = count = 0.0
    codes_all, kept = [], []
    for i, item in enumerate(items):
        mel = torch.from_numpy(cache.get(i))[None]  # (1, T, 128)
        if mel.shape[1] < n:
            print(f"warning: {item.id} is shorter than one code frame; skipped", file=sys.stderr)
            continue
        codes = codec.encode(mel)  # (1, T_frames, n_q)
        rec = codec.decode(codes)  # (1, 5*T_frames, 128)
        mel = mel[:, : rec.shape[1]]
        se += float(((rec - mel) / codec.mel_std).pow(2).sum())
        se_raw += float((rec - mel).pow(2).sum())
        count += mel.numel()
        codes_all.append(codes[0])
        if not keep or len(kept) < keep:
            kept.append((item, mel[0], rec[0]))
    if not codes_all:
        return {"utterances": 0}, []
    usage, perplexity = codec.usage(torch.cat(codes_all))
    figures = {"utterances": len(codes_all), "mse_std": se / count, "mse_raw": se_raw / count, "usage": usage,
               "perplexity": perplexity}
    return figures, kept


# ---------------------------------------------------------------- Talker


@torch.no_grad()
def talker_heldout(model: nn.Module, data: TalkerData, batch_size: int, n_batches: int,
                   device: torch.device) -> dict[str, float]:
    """Held-out teacher-forced losses and metrics (accuracies), each averaged over up to n_batches batches.
    Leaves the model in eval mode."""
    model.eval()
    sums, n = {}, 0
    for idx in data.heldout_batches(batch_size, n_batches):
        out = model(**data.batch(idx, device, heldout=True))
        for k, v in {**out.losses, **out.metrics}.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


def talker_summary(avg: dict[str, float], n_q: int) -> str:
    """One line of held-out figures: the loss, each codebook's perplexity and c0's accuracy."""
    ppl = ", ".join(f"c{k} {perplexity(avg[f'c{k}']):.1f}" for k in range(n_q))
    return f"held-out loss {avg['loss']:.3f}, perplexity {ppl}, c0_accuracy {avg['c0_accuracy']:.3f}"


def perplexities(losses: dict[str, float], n_q: int) -> dict[str, float]:
    """Per codebook (``c{k}_perplexity``) and over all (``perplexity``) from the cross-entropies ``c{k}``."""
    out = {f"c{k}_perplexity": perplexity(losses[f"c{k}"]) for k in range(n_q) if f"c{k}" in losses}
    if out:
        out["perplexity"] = perplexity(sum(losses[f"c{k}"] for k in range(n_q)) / n_q)
    return out


# ---------------------------------------------------------------- vocoder


@torch.no_grad()
def heldout_mel_l1(vocode: Callable[[Tensor], Tensor], data: AudioCache, limit: int,
                   device: torch.device) -> tuple[float, list[tuple[Tensor, Tensor, Tensor, float]]]:
    """Mean over whole held-out utterances of L1(log-mel(vocode(mel)), log-mel(real)); and the outputs
    (fake wav (N,), real log-mel (T, 128), fake log-mel (T, 128), mel L1) per utterance."""
    scores, outputs = [], []
    for i in range(min(limit, len(data))):
        wav, mel = data.get(i)
        fake = vocode(mel.unsqueeze(0).to(device))[0, :len(wav)].float().cpu()  # (N,)
        real_mel, fake_mel = log_mel(wav)[0], log_mel(fake)[0]
        scores.append(mel_l1(real_mel, fake_mel).item())
        outputs.append((fake, real_mel, fake_mel, scores[-1]))
    return float(np.mean(scores)) if scores else float("nan"), outputs


def vocoder_scores(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Log-mel L1, and PESQ (wide band) and STOI where their packages are installed (the 'eval' extra)."""
    scores = {"mel_l1": float((log_mel(out)[0] - log_mel(ref)[0]).abs().mean())}
    try:
        from pesq import pesq

        scores["pesq"] = float(pesq(SAMPLE_RATE, ref, out, "wb"))
    except ImportError:
        pass
    except Exception as err:  # pesq refuses utterances it finds no speech in
        print(f"warning: PESQ failed ({err}); left out for this utterance", file=sys.stderr)
    try:
        from pystoi import stoi

        scores["stoi"] = float(stoi(ref, out, SAMPLE_RATE, extended=False))
    except ImportError:
        pass
    return scores


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the utterances that have it (PESQ may be missing for some)."""
    keys = sorted({k for s in scores for k in s})
    return {k: float(np.mean([s[k] for s in scores if k in s])) for k in keys}
