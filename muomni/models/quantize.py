"""Residual vector quantization with EMA codebooks (a stack of small classes, EnCodec ``core_vq`` style).

- VQ with straight-through gradients and a commitment loss: van den Oord et al. 2017, "Neural Discrete
  Representation Learning" (VQ-VAE).
- Codebooks updated by exponential moving averages of assigned latents instead of a codebook loss:
  VQ-VAE appendix A.1 and Razavi et al. 2019 (VQ-VAE-2).
- Residual VQ (codebook k quantizes what codebooks 0..k-1 left), k-means initialisation from the first
  batch and replacement of dead codes by random recent latents: Zeghidour et al. 2021 (SoundStream) and
  Défossez et al. 2022 (EnCodec).

All VQ arithmetic runs in float32 with autocast disabled: distances and EMA statistics are too fragile
for half precision.

Data parallel (DDP): the codebooks are buffers that no gradient all-reduce touches, so the quantizer
keeps the replicas equal itself. EMA cluster sizes and latent sums are summed over ranks
(``_all_reduce``); k-means and dead-code replacement draw from the latents of the whole global batch,
gathered in the single-process order (``_gather_batch``), with rank 0's random draw (``_broadcast``).
N processes then hold the codebooks that one process would hold with the same global batch. All
three are identities unless ``torch.distributed`` is initialised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum a statistic over data-parallel ranks (in place); identity in a single process."""
    if _distributed():
        dist.all_reduce(t)
    return t


def _broadcast(t: torch.Tensor) -> torch.Tensor:
    """Make every rank hold rank 0's copy (k-means init, dead-code replacement); identity in one process."""
    if _distributed():
        dist.broadcast(t, src=0)
    return t


def _gather_batch(z: torch.Tensor) -> torch.Tensor:
    """The global batch (B, T, D) from every rank's share (B_r, T, D); identity in one process.

    Ranks hold interleaved shares (``training.BatchOrder``: rank r takes items r, r + world, ...), so
    item b of the global batch is item b // world of rank b % world: the order one process sees.
    """
    if not _distributed():
        return z
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=z.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([z.shape[0]], device=z.device))
    sizes = [int(n) for n in sizes]
    padded = z.new_zeros(max(sizes), *z.shape[1:])
    padded[: z.shape[0]] = z
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.stack([parts[b % world][b // world] for b in range(sum(sizes))])


@torch.compiler.disable  # a one-off draw; compiled, randperm(N)[:n] with N == n trips an inductor pattern (torch 2.13)
def _sample(x: torch.Tensor, n: int) -> torch.Tensor:
    """n rows of x (N, D) drawn at random (with replacement only when N < n)."""
    if x.shape[0] >= n:
        return x[torch.randperm(x.shape[0], device=x.device)[:n]]
    return x[torch.randint(0, x.shape[0], (n,), device=x.device)]


def kmeans(x: torch.Tensor, k: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on x (N, D) -> (centroids (k, D), cluster sizes (k,)); empty clusters keep their seed.

    Under DDP x must be the same on every rank (the gathered global batch): the seeds are rank 0's
    draw and the iterations are then deterministic, so every replica gets the same codebook.
    """
    centroids = _broadcast(_sample(x, k).clone())
    counts = torch.zeros(k, device=x.device)
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)  # (N,)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
    return centroids, counts


@dataclass
class QuantizedResult:
    """What a (residual) quantizer returns; ``quantized`` carries straight-through gradients."""

    quantized: torch.Tensor  # (B, T, D)
    codes: torch.Tensor  # (B, T) for one codebook, (B, T, n_q) for the residual stack; int64
    commit_loss: torch.Tensor  # scalar
    replaced: int = 0  # dead codes replaced during this call (training only)
    extra: dict = field(default_factory=dict)


class EuclideanCodebook(nn.Module):
    """K codes of dimension D, nearest-neighbour lookup, EMA updates, k-means init and dead-code replacement."""

    def __init__(self, dim: int, size: int, decay: float, kmeans_iters: int, dead_threshold: float,
                 eps: float = 1e-5):
        super().__init__()
        self.size, self.decay, self.kmeans_iters, self.dead_threshold, self.eps = (
            size, decay, kmeans_iters, dead_threshold, eps)
        self.register_buffer("initted", torch.tensor(False))
        self.register_buffer("embed", torch.randn(size, dim))  # (K, D)
        self.register_buffer("embed_avg", self.embed.clone())  # EMA of the sum of assigned latents (K, D)
        self.register_buffer("cluster_size", torch.zeros(size))  # EMA of the assignment counts (K,)

    @torch.no_grad()
    def init_(self, x: torch.Tensor) -> None:
        """k-means on the first batch of latents x (N, D) sets codes, sums and sizes (under DDP: the
        global batch, the same on every rank)."""
        centroids, counts = kmeans(x, self.size, self.kmeans_iters)
        self.embed.copy_(centroids)
        self.embed_avg.copy_(centroids * counts.clamp(min=1)[:, None])
        self.cluster_size.copy_(counts)
        self.initted.fill_(True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D) -> nearest code index (N,) int64."""
        dist_sq = x.pow(2).sum(1, keepdim=True) - 2 * x @ self.embed.t() + self.embed.pow(2).sum(1)[None]
        return dist_sq.argmin(dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)

    @torch.no_grad()
    def update_(self, x: torch.Tensor, codes: torch.Tensor,
                everyone: Callable[[], torch.Tensor] | None = None) -> int:
        """EMA step on latents x (N, D) with their codes (N,); then replace dead codes. Returns how many.

        Under DDP x is this rank's share: counts and sums are summed over ranks, and ``everyone()``
        gives the global batch's latents (the same on every rank) to draw replacements from; it is
        called only when a code is dead.
        """
        onehot_sum = _all_reduce(torch.bincount(codes, minlength=self.size).float())  # (K,)
        embed_sum = _all_reduce(torch.zeros_like(self.embed).index_add_(0, codes, x))  # (K, D)
        self.cluster_size.lerp_(onehot_sum, 1 - self.decay)
        self.embed_avg.lerp_(embed_sum, 1 - self.decay)
        # Laplace smoothing keeps rare codes from dividing by ~0 (VQ-VAE-2 / Sonnet implementation).
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.eps) / (n + self.size * self.eps) * n
        self.embed.copy_(self.embed_avg / size[:, None])
        if not bool(self.dead().any()):  # the same answer on every rank: the statistics are shared
            return 0
        return self.replace_dead_(everyone() if everyone is not None else x)

    def dead(self) -> torch.Tensor:
        """(K,) bool: codes whose EMA usage fell under ``dead_threshold`` x the uniform usage."""
        return self.cluster_size < self.dead_threshold * self.cluster_size.sum() / self.size

    @torch.no_grad()
    def replace_dead_(self, x: torch.Tensor) -> int:
        """Codes whose EMA usage fell under ``dead_threshold`` x the uniform usage restart at random recent
        latents (SoundStream, EnCodec), with the uniform usage as their fresh EMA count. Relative to the
        uniform rate, the threshold means the same for any batch size and codebook size."""
        uniform = self.cluster_size.sum() / self.size
        dead = self.dead()  # (K,)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        fresh = _broadcast(_sample(x, self.size))  # (K, D)
        self.embed[dead] = fresh[dead]
        self.embed_avg[dead] = fresh[dead] * uniform
        self.cluster_size[dead] = uniform
        return n_dead


class VectorQuantizer(nn.Module):
    """One codebook with projections to and from ``codebook_dim``."""

    def __init__(self, dim: int, codebook_dim: int, size: int, decay: float, kmeans_iters: int,
                 dead_threshold: float):
        super().__init__()
        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        self.codebook = EuclideanCodebook(codebook_dim, size, decay, kmeans_iters, dead_threshold)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, dim) -> codes (B, T) int64."""
        with _float32(x):
            z = self.project_in(x.float())
            return self.codebook.encode(z.reshape(-1, z.shape[-1])).view(z.shape[:-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T) -> (B, T, dim)."""
        with _float32(codes):
            return self.project_out(self.codebook.decode(codes))

    def decode_expected(self, probs: torch.Tensor) -> torch.Tensor:
        """probs (B, T, K) over this codebook's codes -> (B, T, dim): the expected code vector."""
        with _float32(probs):
            return self.project_out(probs.float() @ self.codebook.embed)

    def forward(self, x: torch.Tensor) -> QuantizedResult:
        with _float32(x):
            z = self.project_in(x.float())  # (B, T, Dc)
            flat = z.reshape(-1, z.shape[-1]).detach()

            def everyone() -> torch.Tensor:  # latents of the global batch (B*T over all ranks, Dc)
                return _gather_batch(z.detach()).reshape(-1, z.shape[-1])

            if self.training and not bool(self.codebook.initted):
                self.codebook.init_(everyone())
            codes = self.codebook.encode(flat)  # (B*T,)
            replaced = self.codebook.update_(flat, codes, everyone) if self.training else 0
            q = self.codebook.decode(codes).view_as(z)
            commit = F.mse_loss(z, q.detach())  # VQ-VAE commitment term; the codebook itself learns by EMA
            if self.training:  # straight-through estimator; skipped in eval so forward == decode(encode) exactly
                q = z + (q - z).detach()
            return QuantizedResult(self.project_out(q), codes.view(z.shape[:-1]), commit, replaced)


class ResidualVQ(nn.Module):
    """n_q quantizers in sequence, each coding the residual of those before it (SoundStream, EnCodec)."""

    def __init__(self, n_q: int, **kwargs):
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantizer(**kwargs) for _ in range(n_q))

    def forward(self, x: torch.Tensor) -> QuantizedResult:
        """x (B, T, dim) -> quantized (B, T, dim), codes (B, T, n_q), mean commitment loss."""
        residual, quantized = x, torch.zeros_like(x)
        codes, losses, replaced = [], [], 0
        for layer in self.layers:
            res = layer(residual)
            residual = residual - res.quantized.detach()
            quantized = quantized + res.quantized
            codes.append(res.codes)
            losses.append(res.commit_loss)
            replaced += res.replaced
        return QuantizedResult(quantized, torch.stack(codes, -1), torch.stack(losses).mean(), replaced)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, dim) -> codes (B, T, n_q) int64."""
        residual, codes = x.float(), []
        for layer in self.layers:
            c = layer.encode(residual)
            residual = residual - layer.decode(c)
            codes.append(c)
        return torch.stack(codes, -1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T, n_q) -> (B, T, dim), the sum of every codebook's contribution."""
        return sum(layer.decode(codes[..., i]) for i, layer in enumerate(self.layers))

    def decode_expected(self, probs: torch.Tensor) -> torch.Tensor:
        """probs (B, T, n_q, K), a distribution over each codebook's codes -> (B, T, dim): the expected
        latent, sum over codebooks of the probability-weighted code vectors (one-hot probs = ``decode``)."""
        return sum(layer.decode_expected(probs[..., i, :]) for i, layer in enumerate(self.layers))


def codebook_usage(codes: torch.Tensor, size: int) -> tuple[list[float], list[float]]:
    """Per codebook: fraction of the ``size`` codes used and perplexity, from codes (..., n_q)."""
    flat = codes.reshape(-1, codes.shape[-1])
    usage, perplexity = [], []
    for q in range(flat.shape[1]):
        counts = torch.bincount(flat[:, q], minlength=size).float()
        p = counts / counts.sum().clamp(min=1)
        usage.append(float((counts > 0).float().mean()))
        perplexity.append(float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())))
    return usage, perplexity


def _float32(t: torch.Tensor) -> torch.autocast:
    """Autocast disabled for the tensor's device type: VQ math stays in float32."""
    return torch.autocast(device_type=t.device.type, enabled=False)
