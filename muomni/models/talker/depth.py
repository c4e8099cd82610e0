"""Depth decoder: codebooks 1..n_q-1 of one frame given the Talker's hidden state and codebook 0.

As in CSM / Marvis (Sesame 2025): a small causal transformer runs along the codebook axis of a
single frame, so residual codebooks are predicted conditioned on the coarser ones instead of
independently. It trains on a random ``decoder_fraction`` of the frames only, which keeps its cost
a small part of a step; in eval mode it scores every valid frame, so a held-out loss is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from muomni.models.layers import Transformer, masked_mean
from muomni.models.talker.config import TalkerConfig


class DepthDecoder(nn.Module):
    def __init__(self, cfg: TalkerConfig):
        super().__init__()
        d = cfg.d_model
        self.n_q, self.fraction = cfg.n_q, cfg.decoder_fraction
        self.in_proj = nn.Linear(d, d)
        self.code_emb = nn.ModuleList(nn.Embedding(cfg.codebook_size, d) for _ in range(cfg.n_q - 1))
        self.transformer = Transformer(cfg, cfg.depth_layers)
        self.heads = nn.ModuleList(nn.Linear(d, cfg.codebook_size, bias=False) for _ in range(cfg.n_q - 1))

    def logits(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """h (M, D), given codebooks 0..k-1 (M, k) -> logits (M, k, K) for codebooks 1..k.

        Position 0 holds the hidden state plus codebook 0, position i codebook i.
        """
        embs = [self.code_emb[i](codes[:, i]) for i in range(codes.shape[1])]
        x = torch.stack([self.in_proj(h) + embs[0]] + embs[1:], dim=1)  # (M, k, D)
        M, k, _ = x.shape
        positions = torch.arange(k, device=h.device).expand(M, -1)
        out = self.transformer(x, positions, None)  # (M, k, D), causal along the codebooks
        return torch.stack([self.heads[i](out[:, i]) for i in range(k)], dim=1)

    def pick(self, frame_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frame_ok (B, F) -> flat frame indices (M,) and their weights (M,), M = ceil(fraction x B x F).

        A fixed count (no boolean indexing, whose size the host must read back): M random valid frames,
        or every valid frame and some weight-0 padding frames where fewer than M are valid.
        """
        n = frame_ok.numel()
        m = min(n, max(1, math.ceil(self.fraction * n)))
        keys = torch.rand(frame_ok.shape, device=frame_ok.device).masked_fill(~frame_ok, 2.0)  # valid first
        idx = keys.flatten().topk(m, largest=False).indices  # (M,)
        return idx, frame_ok.flatten()[idx].float()

    def loss(self, h: torch.Tensor, codes: torch.Tensor, frame_ok: torch.Tensor):
        """h (B, F, D), codes (B, F, n_q), frame_ok (B, F) -> per-codebook CE and accuracy lists (1..n_q-1)
        and the number of frames they average over (0-d; the DDP share of the c1.. losses).

        Training scores the random pick; eval mode every valid frame (the held-out loss picks best.pt).
        """
        if self.training:
            idx, weight = self.pick(frame_ok)
        else:
            idx, weight = torch.arange(frame_ok.numel(), device=frame_ok.device), frame_ok.flatten().float()
        picked = codes.flatten(0, 1)[idx]  # (M, n_q)
        logits = self.logits(h.flatten(0, 1)[idx], picked[:, :-1])  # (M, n_q - 1, K)
        target = picked[:, 1:]  # (M, n_q - 1)
        ce = [masked_mean(F.cross_entropy(logits[:, i].float(), target[:, i], reduction="none"), weight)
              for i in range(self.n_q - 1)]
        acc = [masked_mean((logits[:, i].argmax(-1) == target[:, i]).float(), weight) for i in range(self.n_q - 1)]
        return ce, acc, weight.sum()

    @torch.no_grad()
    def generate(self, h: torch.Tensor, c0: torch.Tensor, pick: Callable[[torch.Tensor], torch.Tensor],
                 logits_out: list[torch.Tensor] | None = None):
        """h (B, D), c0 (B,) -> frame (B, n_q), sampling each codebook with pick(logits (B, K)).

        logits_out: a list that receives the logits (B, K) of codebooks 1..n_q-1, each given the picks before it.
        """
        codes = c0[:, None]
        for _ in range(1, self.n_q):
            logits = self.logits(h, codes)[:, codes.shape[1] - 1]  # (B, K)
            if logits_out is not None:
                logits_out.append(logits)
            codes = torch.cat([codes, pick(logits)[:, None]], dim=1)
        return codes
