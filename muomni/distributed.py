"""Data-parallel collectives that reduce to the identity in one process (docs/DESIGN.md §8).

Every helper may be called unconditionally: without a process group (one process, the CPU demo,
the tests) it returns its input, so the stage scripts hold no ``if distributed`` branches. Under
``torchrun`` every rank must make the same calls in the same order.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_object(obj: Any) -> Any:
    """Rank 0's value of a picklable object on every rank (identity in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_distributed() -> bool:
    """True under a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def collective_device() -> torch.device:
    """Where small collective tensors live: the current GPU under NCCL, else the CPU (gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_object(obj: Any) -> list[Any] | None:
    """Every rank's object, in rank order, on rank 0 (None on the others); [obj] in one process."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Each number averaged over the data-parallel ranks in one collective (every rank must call it)."""
    if not is_distributed():
        return dict(metrics)
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=collective_device())
    dist.all_reduce(values)
    return dict(zip(keys, (values / dist.get_world_size()).tolist()))


def rank_shares(counts: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Per named mean: world x this rank's element count / the count summed over ranks (1.0 in one process).

    A loss that is a mean over ``counts[name]`` elements (valid frames, say) times its share is this rank's
    part of the mean over the global batch once DDP averages gradients over ranks: the N-process step is
    the one-process step even when the ranks' shares hold different numbers of elements. Each loss needs
    its own share when the losses average over different elements (frames, stop positions, text tokens).
    One all-reduce for all names.
    """
    if not is_distributed():
        return dict.fromkeys(counts, 1.0)
    names = list(counts)
    local = torch.tensor([float(counts[n]) for n in names], dtype=torch.float64, device=collective_device())
    total = local.clone()
    dist.all_reduce(total)
    world = dist.get_world_size()
    return {n: world * a / max(b, 1e-12) for n, a, b in zip(names, local.tolist(), total.tolist(), strict=True)}


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any rank (identity in one process)."""
    return any_ranks([flag])[0]


def any_ranks(flags: list[bool]) -> list[bool]:
    """any_rank for several flags in one collective."""
    if not is_distributed():
        return list(flags)
    value = torch.tensor([float(f) for f in flags], device=collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return [bool(v) for v in value.tolist()]


def leave_process_group() -> None:
    """Destroy the process group, every rank together (at the end of a run; nothing without a group)."""
    if not dist.is_initialized():
        return
    # Every rank leaves together: a rank that tears down its gloo pairs while another still
    # writes its last checkpoint aborts the process ("terminate called without an active exception").
    # Not while an error unwinds (Run.close in a finally): the other ranks would wait for this one.
    if sys.exc_info()[0] is None:
        work = dist.barrier(async_op=True)
        work.wait()
        # gloo's worker thread drops its reference to the finished barrier (and to the collectives
        # before it, whose tensors Python created) after this rank wakes up. Were that the last
        # reference, it would need the GIL, which this thread holds while the process group's
        # destructor (when the DDP wrapper is freed) joins that worker: both wait forever.
        # Holding the barrier here until the interpreter exits makes the worker's release free.
        _FINISHED_WORK.append(work)
    dist.destroy_process_group()


_FINISHED_WORK: list[Any] = []  # see leave_process_group


# ---------------------------------------------------------------- tensor collectives of the codebooks
# The RVQ codebooks are buffers that no gradient all-reduce touches: models/quantize.py keeps the replicas
# equal with these three (docs/DESIGN.md §4). Torch-only, so a model file may import them.


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """Sum a statistic over data-parallel ranks (in place); identity in a single process."""
    if is_distributed():
        dist.all_reduce(t)
    return t


def broadcast_tensor(t: torch.Tensor) -> torch.Tensor:
    """Make every rank hold rank 0's copy (in place; k-means init, dead-code replacement); identity in one process."""
    if is_distributed():
        dist.broadcast(t, src=0)
    return t


def gather_batch(z: torch.Tensor) -> torch.Tensor:
    """The global batch (B, T, D) from every rank's share (B_r, T, D); identity in one process.

    Ranks hold interleaved shares (``muomni.training.schedule.BatchOrder``: rank r takes items r, r + world, ...), so
    item b of the global batch is item b // world of rank b % world: the order one process sees.
    """
    if not is_distributed():
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
