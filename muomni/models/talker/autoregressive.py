"""The autoregressive Talker: a decoder-only transformer from text to RVQ codes (docs/DESIGN.md §5).

Its layers (``muomni.models.layers``) read like gpt-fast; generation with the KV cache is ``generate.py``.
Unlike gpt-fast the same ``forward`` trains without a cache.

Sequence (one position per item of the list, per utterance)::

    text_0 .. text_{N-1}  start  frame_0 .. frame_{T-1}
    targets at the audio positions:  frame_0 .. frame_{T-1}  stop

The input at audio position t is frame t-1 (the start position for t = 0) and its target is frame t:
exactly one step ahead. A frame's embedding is the sum of one embedding per codebook.

Alignment ("duration path", ``duration_path``): a plain decoder-only model learns to continue codes
long before it learns *which* text it is saying. So a small non-causal text encoder feeds both the
text prefix and an explicit alignment: monotonic alignment search (Glow-TTS, Kim et al. 2020)
between text tokens and code frames gives per-token durations, a duration predictor learns them
(FastSpeech, Ren et al. 2019), and the aligned encoder state of the frame to be predicted is added
to each audio position's input. At inference predicted durations give the aligned states and the
frame count. See ``aligner.py``; codebooks 1.. may come from a depth decoder (``depth.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from muomni.models.layers import INIT_STD, Transformer, init_weights, masked_mean
from muomni.models.talker.aligner import Aligner, aligned_states, durations_to_path
from muomni.models.talker.common import TalkerBase, TalkerOutput
from muomni.models.talker.config import TalkerConfig
from muomni.models.talker.depth import DepthDecoder
from muomni.models.talker.generate import generate


class Talker(TalkerBase):
    cfg: TalkerConfig

    def __init__(self, cfg: TalkerConfig):
        super().__init__(cfg)  # text_emb, speaker_emb
        d = cfg.d_model
        self.code_emb = nn.ModuleList(nn.Embedding(cfg.codebook_size, d) for _ in range(cfg.n_q))
        self.start = nn.Parameter(torch.randn(d) * INIT_STD)
        self.aligner = Aligner(cfg, Transformer(cfg, cfg.encoder_layers)) if cfg.duration_path else None
        self.decoder = Transformer(cfg, cfg.n_layers)
        self.heads = nn.ModuleList(nn.Linear(d, cfg.codebook_size, bias=False) for _ in range(cfg.n_code_heads))
        self.stop_head = nn.Linear(d, 1)
        self.depth = DepthDecoder(cfg) if cfg.depth_layers else None
        self.apply(init_weights)

    # -- pieces shared by training and generation (generate.py)

    def encode_text(self, text: torch.Tensor, text_lens: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
        """text (B, N), speakers (B,) -> prefix states (B, N, D): the encoder's output on the duration path,
        else embeddings. With ``speaker_text`` the speaker is added first, so durations follow the voice."""
        x = self.embed_text(text, speakers, with_speaker=self.cfg.speaker_text)
        if self.aligner is not None:
            x = self.aligner.encode(x, text_lens)
        return x

    def frame_embedding(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T, n_q) -> (B, T, D): the sum of one embedding per codebook."""
        return sum(emb(codes[..., k]) for k, emb in enumerate(self.code_emb))

    def audio_inputs(self, codes, speakers, aligned):
        """Inputs of audio positions 0..T: start, then frames 0..T-1 (teacher forcing, one step behind).

        codes (B, T, n_q), speakers (B,), aligned (B, T + 1, D) or None -> (B, T + 1, D)
        """
        B = codes.shape[0]
        x = torch.cat([self.start.expand(B, 1, -1), self.frame_embedding(codes)], dim=1)
        x = x + self.speaker(speakers)
        return x if aligned is None else x + aligned

    def layout(self, text_lens: torch.Tensor, n_text: int, n_audio: int):
        """Positions (B, L) and the attention mask (B, 1, L, L) of a padded [text | audio] sequence.

        Text padding sits between the text and the audio; rotary positions skip it and the mask hides
        it, so an item's outputs do not depend on how much padding its batch has.
        """
        dev = text_lens.device
        B = text_lens.shape[0]
        n_text = n_text if self.cfg.text_prefix else 0
        t = torch.arange(n_text, device=dev).expand(B, -1)
        a = torch.arange(n_audio, device=dev)[None] + (text_lens[:, None] if n_text else 0)
        positions = torch.cat([t, a.expand(B, -1)], dim=1)  # (B, L)
        L = n_text + n_audio
        key_ok = torch.ones(B, L, dtype=torch.bool, device=dev)
        key_ok[:, :n_text] = t < text_lens[:, None]
        causal = torch.ones(L, L, dtype=torch.bool, device=dev).tril()
        mask = (causal[None] & key_ok[:, None]) | torch.eye(L, dtype=torch.bool, device=dev)  # no empty row
        return positions, mask[:, None]

    def predict(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, L, D) -> codebook logits (B, L, n_code_heads, K), stop logits (B, L)."""
        return torch.stack([head(h) for head in self.heads], dim=2), self.stop_head(h).squeeze(-1)

    @torch.no_grad()
    def generate(self, text: torch.Tensor, text_lens: torch.Tensor, speakers: torch.Tensor, **kw):
        """Batched generation -> codes (B, T, n_q), lengths (B,); keywords as ``generate.generate``."""
        return generate(self, text, text_lens, speakers, **kw)

    # -- training

    def forward(
        self, text: torch.Tensor, text_lens: torch.Tensor, codes: torch.Tensor, code_lens: torch.Tensor,
        speakers: torch.Tensor, ended: torch.Tensor | None = None, durations: torch.Tensor | None = None,
    ) -> TalkerOutput:
        """text (B, N) long, text_lens (B,), codes (B, F, n_q) long, code_lens (B,), speakers (B,).

        ended (B,) bool: False for items truncated to F frames (no stop target, free alignment end).
        durations (B, N) sub-frames per token: a given alignment instead of the search (no align/dur loss).
        """
        Fr = codes.shape[1]
        ended = torch.ones(codes.shape[0], dtype=torch.bool, device=codes.device) if ended is None else ended
        prefix = self.encode_text(text, text_lens, speakers)  # (B, N, D)
        aligned, durations, losses, counts = self._align(prefix, text_lens, codes, code_lens, ended, speakers,
                                                         durations)
        x = self.audio_inputs(codes, speakers, aligned)  # (B, F + 1, D)
        if self.cfg.text_prefix:
            x = torch.cat([prefix, x], dim=1)
        positions, mask = self.layout(text_lens, text.shape[1], Fr + 1)
        h = self.decoder(x, positions, mask, last=Fr + 1)  # (B, F + 1, D) audio positions
        logits, stop_logits = self.predict(h)
        logits = logits[:, :Fr]  # (B, F, n_code_heads, K)

        code_losses, code_counts, metrics = self._codebook_losses(logits, h[:, :Fr], codes, code_lens)
        losses.update(code_losses)
        counts.update(code_counts)
        losses["stop"], counts["stop"], metrics["stop_accuracy"] = self._stop_loss(stop_logits, code_lens, ended)
        losses["loss"] = sum(self.cfg.weight(name) * value for name, value in losses.items())
        return TalkerOutput(losses, counts, metrics, logits, stop_logits, durations)

    def _align(self, prefix, text_lens, codes, code_lens, ended, speakers, durations):
        """The aligned encoder state of every audio position -> (aligned (B, F + 1, D) or None without a duration
        path, durations (B, N), alignment losses, their counts). Given durations replace the search, and with it
        the align and duration losses."""
        if self.aligner is None:
            return None, durations, {}, {}
        Fr = codes.shape[1]
        if durations is not None:
            path = durations_to_path(durations, Fr * self.cfg.sub_frames)
            return aligned_states(self.aligner, prefix, path, code_lens, Fr + 1), durations, {}, {}
        align = self.aligner(prefix, text_lens, codes, code_lens, ended, speakers)
        aligned = aligned_states(self.aligner, prefix, align.path, code_lens, Fr + 1)  # (B, F + 1, D)
        return aligned, align.durations, dict(align.losses), dict(align.counts)

    def _codebook_losses(self, logits, h, codes, code_lens):
        """Cross-entropy and accuracy per codebook over the valid frames -> (losses, counts, metrics), keyed
        ``c{k}`` and ``c{k}_accuracy``. logits (B, F, n_code_heads, K), h (B, F, D), codes (B, F, n_q).

        With a depth decoder its losses replace those of codebooks 1.., counted over the frames it picked."""
        B, Fr, n_q = codes.shape
        frame_ok = torch.arange(Fr, device=codes.device)[None] < code_lens[:, None]  # (B, F)
        losses: dict[str, torch.Tensor] = {}
        metrics: dict[str, torch.Tensor] = {}
        counts = {f"c{k}": frame_ok.sum() for k in range(n_q)}
        for k in range(logits.shape[2]):
            ce = F.cross_entropy(logits[:, :, k].flatten(0, 1).float(), codes[..., k].flatten(), reduction="none")
            losses[f"c{k}"] = masked_mean(ce.view(B, Fr), frame_ok)
            hit = (logits[:, :, k].argmax(-1) == codes[..., k]).float()
            metrics[f"c{k}_accuracy"] = masked_mean(hit, frame_ok)
        if self.depth is not None:
            depth_ce, depth_hit, picked = self.depth.loss(h, codes, frame_ok)
            for k in range(1, n_q):
                losses[f"c{k}"], metrics[f"c{k}_accuracy"] = depth_ce[k - 1], depth_hit[k - 1]
                counts[f"c{k}"] = picked  # the frames these losses average over, not every valid frame
        return losses, counts, metrics

    def _stop_loss(self, stop_logits, code_lens, ended) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Binary cross-entropy of the stop logits (B, F + 1) against "the frames end here" -> (loss, count,
        accuracy). The target is 1 at position code_lens and 0 before it; a truncated item (not ``ended``) has no
        stop there, so only the positions before it count."""
        pos = torch.arange(stop_logits.shape[1], device=stop_logits.device)[None]
        stop_target = (pos == code_lens[:, None]).float()
        stop_ok = (pos <= code_lens[:, None]) & (ended[:, None] | (pos < code_lens[:, None]))
        bce = F.binary_cross_entropy_with_logits(stop_logits.float(), stop_target, reduction="none")
        accuracy = masked_mean(((stop_logits > 0).float() == stop_target).float(), stop_ok)
        return masked_mean(bce, stop_ok), stop_ok.sum(), accuracy
