"""Residual vector quantization with EMA codebooks (a stack of small classes, EnCodec ``core_vq`` style).

- VQ with straight-through gradients and a commitment loss: van den Oord et al. 2017, "Neural Discrete
  Representation Learning" (VQ-VAE).
- Codebooks updated by exponential moving averages of assigned latents instead of a codebook loss:
  VQ-VAE appendix A.1 and Razavi et al. 2019 (VQ-VAE-2).
- Residual VQ (codebook k quantizes what codebooks 0..k-1 left), k-means initialisation from the first
  batch and replacement of dead codes by random recent latents: Zeghidour et al. 2021 (SoundStream) and
  Défossez et al. 2022 (EnCodec).
- Optional cosine lookup (``lookup="cosine"``): nearest code by the angle between the l2-normalised
  latent and code, the code vector itself still the mean of its latents; with a small ``codebook_dim``
  this is the factorized code of Yu et al. 2022 (ViT-VQGAN) and Kumar et al. 2023 (DAC's RVQ), which
  spreads the latents over more codes.

All VQ arithmetic runs in float32 with autocast disabled: distances and EMA statistics are too fragile
for half precision. On CUDA ``select_device`` turns TF32 matmuls on for the whole process, so on Ampere or
newer the distance matmuls (and the projections) run in TF32: in an emulation 0.02-0.06 % of codes flip
to a near-tie neighbour with no change in MSE; the EMA sums (``index_add_``) stay float32.

Data parallel (DDP): the codebooks are buffers that no gradient all-reduce touches, so the quantizer
keeps the replicas equal itself. EMA cluster sizes and latent sums are summed over ranks
(``sum_over_ranks``); k-means and dead-code replacement draw from the latents of the whole global batch,
gathered in the single-process order (``gather_batch``), with rank 0's random draw (``broadcast_tensor``),
and k-means ends with rank 0's centroids and counts (CUDA's atomic ``index_add_`` sums in no fixed order,
so replicas iterating alone could differ in the last bits). N processes then hold the codebooks that one
process would hold with the same global batch. All three (in ``muomni/distributed.py``) are identities in
a single process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from muomni.distributed import broadcast_tensor, gather_batch, sum_over_ranks


@torch.compiler.disable  # a one-off draw; compiled, randperm(N)[:n] with N == n trips an inductor pattern (torch 2.13)
def _sample(x: torch.Tensor, n: int) -> torch.Tensor:
    """n rows of x (N, D) drawn at random (with replacement only when N < n)."""
    if x.shape[0] >= n:
        return x[torch.randperm(x.shape[0], device=x.device)[:n]]
    return x[torch.randint(0, x.shape[0], (n,), device=x.device)]


def nearest(x: torch.Tensor, embed: torch.Tensor, lookup: str = "euclidean") -> torch.Tensor:
    """Index (N,) of the code in embed (K, D) nearest to each row of x (N, D): by Euclidean distance, or
    with ``lookup="cosine"`` by the angle (the largest dot product of the l2-normalised vectors)."""
    if lookup == "cosine":
        return (F.normalize(x, dim=1) @ F.normalize(embed, dim=1).t()).argmax(dim=1)
    dist_sq = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(1)[None]
    return dist_sq.argmin(dim=1)


def kmeans(x: torch.Tensor, k: int, iters: int, lookup: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on x (N, D) -> (centroids (k, D), cluster sizes (k,)); empty clusters keep their seed.
    Rows are assigned by ``nearest(..., lookup)``, so a cosine codebook starts from the clusters it will use.

    Under DDP x must be the same on every rank (the gathered global batch): the seeds are rank 0's draw,
    and so are the result, broadcast after the iterations: on CUDA the atomic ``index_add_`` sums in no
    fixed order, so each rank's own iterations may end a few bits apart; every replica holds rank 0's codebook.
    """
    centroids = broadcast_tensor(_sample(x, k).clone())  # (k, D)
    counts = torch.zeros(k, device=x.device)  # (k,)
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1) if lookup == "euclidean" else nearest(x, centroids, lookup)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
    return broadcast_tensor(centroids.contiguous()), broadcast_tensor(counts.contiguous())


LOOKUPS = ("euclidean", "cosine")  # how a codebook picks a latent's code (see nearest)


@dataclass
class QuantizedResult:
    """What a (residual) quantizer returns; ``quantized`` carries straight-through gradients."""

    quantized: torch.Tensor  # (B, T, D)
    codes: torch.Tensor  # (B, T) for one codebook, (B, T, n_q) for the residual stack; int64
    commit_loss: torch.Tensor  # scalar
    replaced: torch.Tensor | int = 0  # dead codes replaced during this call (training only; a 0-d tensor)
    extra: dict = field(default_factory=dict)


class EuclideanCodebook(nn.Module):
    """K codes of dimension D, nearest-neighbour lookup, EMA updates, k-means init and dead-code replacement.

    A training forward computes the codebook's next statistics (k-means init, EMA step, dead-code
    replacement) without a host synchronisation and keeps them *pending*; :meth:`commit_` writes them
    into the buffers, :meth:`discard_` drops them. By default a forward commits at once; with
    ``defer = True`` (the training loop's setting) the loop commits only after the optimizer step is
    accepted, so a skipped step (NaN latents, an fp16 overflow) leaves every buffer as it was. Several
    forwards before a commit (gradient accumulation) chain their updates.
    """

    def __init__(self, dim: int, size: int, decay: float, kmeans_iters: int, dead_threshold: float,
                 eps: float = 1e-5, lookup: str = "euclidean"):
        super().__init__()
        if lookup not in LOOKUPS:
            raise ValueError(f"codebook lookup must be one of {', '.join(LOOKUPS)}, got '{lookup}'")
        self.size, self.decay, self.kmeans_iters, self.dead_threshold, self.eps, self.lookup = (
            size, decay, kmeans_iters, dead_threshold, eps, lookup)
        self.register_buffer("initted", torch.tensor(False))
        self.register_buffer("embed", torch.randn(size, dim))  # (K, D)
        self.register_buffer("embed_avg", self.embed.clone())  # EMA of the sum of assigned latents (K, D)
        self.register_buffer("cluster_size", torch.zeros(size))  # EMA of the assignment counts (K,)
        self.defer = False
        self._pending: dict[str, torch.Tensor] | None = None  # embed, embed_avg, cluster_size, replaced
        self._initted_seen = False  # Python copy of `initted` once true: no host sync per forward

    def _load_from_state_dict(self, *args, **kwargs):
        self._pending, self._initted_seen = None, False
        super()._load_from_state_dict(*args, **kwargs)

    def is_initted(self) -> bool:
        """Whether k-means has set the codes; reads the buffer (a host sync) only until it is true."""
        if not self._initted_seen:
            self._initted_seen = bool(self.initted)
        return self._initted_seen

    @torch.no_grad()
    def init_(self, x: torch.Tensor) -> None:
        """k-means on the first batch of latents x (N, D) sets codes, sums and sizes (under DDP: the
        global batch, the same on every rank)."""
        self._pending = self._kmeans_state(x)
        self.commit_()

    def _kmeans_state(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        centroids, counts = kmeans(x, self.size, self.kmeans_iters, self.lookup)
        return {"embed": centroids, "embed_avg": centroids * counts.clamp(min=1)[:, None], "cluster_size": counts,
                "replaced": torch.zeros((), dtype=torch.long, device=x.device)}

    def _state(self) -> dict[str, torch.Tensor]:
        """The statistics the next update starts from: the pending ones, else the buffers."""
        if self._pending is not None:
            return self._pending
        return {"embed": self.embed, "embed_avg": self.embed_avg, "cluster_size": self.cluster_size,
                "replaced": torch.zeros((), dtype=torch.long, device=self.embed.device)}

    @torch.no_grad()
    def commit_(self) -> None:
        """Write the pending statistics into the buffers (no-op when none are pending)."""
        if self._pending is None:
            return
        for name in ("embed", "embed_avg", "cluster_size"):
            getattr(self, name).copy_(self._pending[name])
        self.initted.fill_(True)
        self._initted_seen = True
        self._pending = None

    def discard_(self) -> None:
        """Drop the pending statistics: the buffers stay as they were before the forward."""
        self._pending = None

    def encode(self, x: torch.Tensor, embed: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, D) -> nearest code index (N,) int64 (in ``embed`` (K, D), by default the codebook)."""
        return nearest(x, self.embed if embed is None else embed, self.lookup)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)

    @torch.no_grad()
    def step_(self, x: torch.Tensor, everyone: Callable[[], torch.Tensor] | None = None) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training forward's codebook work on latents x (N, D): k-means init on the first call,
        encode, EMA step and dead-code replacement, kept pending (committed now unless ``defer``).

        Returns (codes (N,) in the codebook before this step's update, the updated codebook (K, D), the
        number of codes this call replaced (0-d tensor: read it only when logging)).
        Under DDP x is this rank's share; ``everyone()`` gives the global batch's latents.
        """
        everyone = everyone or (lambda: x)
        if self._pending is None and not self.is_initted():
            self._pending = self._kmeans_state(everyone())
        state = self._state()
        codes = self.encode(x, state["embed"])
        self._pending = self._ema_state(state, x, codes, everyone)
        embed, replaced = self._pending["embed"], self._pending["replaced"] - state["replaced"]
        if not self.defer:
            self.commit_()
        return codes, embed, replaced

    def _ema_state(self, state: dict[str, torch.Tensor], x: torch.Tensor, codes: torch.Tensor,
                   everyone: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        """The EMA step on latents x (N, D) with their codes (N,), then dead-code replacement, as new
        tensors (the buffers are not touched). Counts and sums are summed over ranks."""
        onehot_sum = sum_over_ranks(torch.bincount(codes, minlength=self.size).float())  # (K,)
        embed_sum = sum_over_ranks(torch.zeros_like(state["embed"]).index_add_(0, codes, x))  # (K, D)
        cluster_size = state["cluster_size"].lerp(onehot_sum, 1 - self.decay)
        embed_avg = state["embed_avg"].lerp(embed_sum, 1 - self.decay)
        # Laplace smoothing keeps rare codes from dividing by ~0 (VQ-VAE-2 / Sonnet implementation).
        n = cluster_size.sum()
        size = (cluster_size + self.eps) / (n + self.size * self.eps) * n
        embed = embed_avg / size[:, None]
        replaced = state["replaced"]
        if self.dead_threshold > 0:
            # Codes whose EMA usage fell under dead_threshold x the uniform usage restart at random recent
            # latents (SoundStream, EnCodec), with the uniform usage as their fresh EMA count. Candidates
            # are drawn every step and only dead rows take them: no host sync to ask whether any died.
            # Relative to the uniform rate, the threshold means the same for any batch and codebook size.
            uniform = cluster_size.sum() / self.size
            dead = self.dead(cluster_size)  # (K,); the same on every rank
            fresh = broadcast_tensor(_sample(everyone(), self.size))  # (K, D)
            embed = torch.where(dead[:, None], fresh, embed)
            embed_avg = torch.where(dead[:, None], fresh * uniform, embed_avg)
            cluster_size = torch.where(dead, uniform, cluster_size)
            replaced = replaced + dead.sum()
        return {"embed": embed, "embed_avg": embed_avg, "cluster_size": cluster_size, "replaced": replaced}

    @torch.no_grad()
    def update_(self, x: torch.Tensor, codes: torch.Tensor,
                everyone: Callable[[], torch.Tensor] | None = None) -> int:
        """EMA step on latents x (N, D) with their codes (N,) and dead-code replacement, applied to the
        buffers now. Returns how many codes were replaced."""
        self._pending = self._ema_state(self._state(), x, codes, everyone or (lambda: x))
        replaced = int(self._pending["replaced"])
        self.commit_()
        return replaced

    def dead(self, cluster_size: torch.Tensor | None = None) -> torch.Tensor:
        """(K,) bool: codes whose EMA usage (``cluster_size``, by default the buffer) fell under
        ``dead_threshold`` x the uniform usage."""
        cluster_size = self.cluster_size if cluster_size is None else cluster_size
        return cluster_size < self.dead_threshold * cluster_size.sum() / self.size


class VectorQuantizer(nn.Module):
    """One codebook with projections to and from ``codebook_dim``; ``lookup`` as in ``nearest``."""

    def __init__(self, dim: int, codebook_dim: int, size: int, decay: float, kmeans_iters: int,
                 dead_threshold: float, lookup: str = "euclidean"):
        super().__init__()
        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        self.codebook = EuclideanCodebook(codebook_dim, size, decay, kmeans_iters, dead_threshold, lookup=lookup)

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

    def forward(self, x: torch.Tensor, straight_through: bool = True) -> QuantizedResult:
        """x (B, T, dim) -> quantized (B, T, dim), codes (B, T), commitment loss. With ``straight_through``
        (training only) the quantized output passes its gradient on to x unchanged (VQ-VAE); without it the
        output's gradient reaches only ``project_out`` (the residual stack's "single" form adds its own)."""
        with _float32(x):
            z = self.project_in(x.float())  # (B, T, Dc)
            flat = z.reshape(-1, z.shape[-1]).detach()

            def everyone() -> torch.Tensor:  # latents of the global batch (B*T over all ranks, Dc)
                return gather_batch(z.detach()).reshape(-1, z.shape[-1])

            if self.training:  # codes from the codebook before this step, decoded by the updated one
                codes, embed, replaced = self.codebook.step_(flat, everyone)  # (B*T,), (K, Dc), ()
                q = F.embedding(codes, embed).view_as(z)
            else:
                codes = self.codebook.encode(flat)
                q = self.codebook.decode(codes).view_as(z)
                replaced = 0
            commit = F.mse_loss(z, q.detach())  # VQ-VAE commitment term; the codebook itself learns by EMA
            if self.training and straight_through:  # skipped in eval so forward == decode(encode) exactly
                q = z + (q - z).detach()
            return QuantizedResult(self.project_out(q), codes.view(z.shape[:-1]), commit, replaced)


# How a training forward passes the decoder's gradient back through the residual stack to the encoder:
# - "residual" (the default): EnCodec's ResidualVectorQuantization: each layer is straight-through and the
#   next residual subtracts that output itself, so its gradient cancels; only codebook 0's commitment
#   reaches the encoder.
# - "single": one straight-through estimator for the whole sum, ``x + (sum_q - x).detach()``; every layer
#   codes a detached residual and keeps its commitment term on the encoder.
# - "per_layer": each layer straight-through, residuals detached, so the sum's gradient to the encoder is
#   n_q x the identity (and the commitment term is in effect n_q x weaker). Muomni's form before 2026-12-07,
#   kept only to reproduce older runs.
# All three give the same forward values; docs/RESULTS.md (2026-12-07) has the measured comparison.
STRAIGHT_THROUGH = ("single", "residual", "per_layer")


class ResidualVQ(nn.Module):
    """n_q quantizers in sequence, each coding the residual of those before it (SoundStream, EnCodec)."""

    def __init__(self, n_q: int, straight_through: str = "residual", **kwargs):
        super().__init__()
        if straight_through not in STRAIGHT_THROUGH:
            raise ValueError(f"straight_through must be one of {', '.join(STRAIGHT_THROUGH)}, got '{straight_through}'")
        self.straight_through = straight_through
        self.layers = nn.ModuleList(VectorQuantizer(**kwargs) for _ in range(n_q))

    def forward(self, x: torch.Tensor) -> QuantizedResult:
        """x (B, T, dim) -> quantized (B, T, dim), codes (B, T, n_q), mean commitment loss.
        The quantized sum's gradient with respect to x is the identity (``STRAIGHT_THROUGH``)."""
        form = self.straight_through
        residual, quantized = x, torch.zeros_like(x)
        codes, losses, replaced = [], [], 0
        for layer in self.layers:
            res = layer(residual, straight_through=form != "single")
            residual = residual - (res.quantized if form == "residual" else res.quantized.detach())
            quantized = quantized + res.quantized
            codes.append(res.codes)
            losses.append(res.commit_loss)
            replaced += res.replaced
        if self.training and form == "single":  # value unchanged; d/dx = I; project_out keeps its own gradient
            quantized = quantized + (x - x.detach())
        return QuantizedResult(quantized, torch.stack(codes, -1), torch.stack(losses).mean(), replaced)

    def defer_updates(self, on: bool = True) -> None:
        """Keep each training forward's codebook updates pending until commit_updates() (see
        EuclideanCodebook): the training loop commits only accepted steps."""
        for layer in self.layers:
            layer.codebook.defer = on

    def commit_updates(self) -> None:
        for layer in self.layers:
            layer.codebook.commit_()

    def discard_updates(self) -> None:
        for layer in self.layers:
            layer.codebook.discard_()

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
