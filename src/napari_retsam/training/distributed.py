"""Multi-process training with PyTorch's own engine (``torchrun`` + DDP).

``torchrun --nproc-per-node 2 -m napari_retsam finetune ...`` starts one process
per GPU (or CPU slot) with ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``/``MASTER_ADDR``/
``MASTER_PORT`` in the environment; :func:`init_from_env` joins the process group
(NCCL on CUDA, gloo on CPU) when ``WORLD_SIZE > 1`` and is a no-op otherwise.

How the run stays equal to a single-process run with the same global batch B:

* every rank enumerates the same samples; :func:`epoch_indices` uses
  ``torch.utils.data.DistributedSampler`` (seed, ``set_epoch``) so rank r gets
  ``perm[r::W]`` and batch k of rank r holds positions ``kB + r + W·j`` of the
  epoch permutation: the union over ranks is exactly the single-process batch k;
* per-sample randomness (view, box jitter) is keyed by the sample's identity
  (:func:`napari_retsam.training.data.rng_for`), not by a per-rank stream;
* the BSD loss is normalised by the *global* number of selected slices and
  pixels (all-reduced), multiplied by W because DDP averages the gradients;
* only rank 0 writes checkpoints and logs (:attr:`DistContext.is_main`).

The frozen-encoder embedding cache is shared through the SAM engine's signed
on-disk cache: each rank computes a disjoint share of the missing embeddings
(``keys[rank::W]``), each file is written atomically (temp file + rename, so a
reader never sees half a file), then all ranks meet at a barrier and read all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_from_env", "epoch_indices", "all_reduce_sum", "barrier", "cleanup"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``world_size`` processes, this one is ``rank``."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    initialized_here: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "cpu") -> DistContext:
    """Join the process group described by torchrun's environment variables.

    ``WORLD_SIZE`` unset or 1: a single-process context, nothing initialised.
    Backend: NCCL when ``device`` is CUDA and CUDA is available, else gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_nccl = str(device).startswith("cuda") and torch.cuda.is_available()
    backend = "nccl" if use_nccl else "gloo"
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank)
        here = True
    if use_nccl:
        torch.cuda.set_device(local_rank)
    return DistContext(world_size=world, rank=rank, local_rank=local_rank, backend=backend, initialized_here=here)


def rank_device(device: str, ctx: DistContext) -> str:
    """``cuda`` becomes ``cuda:<local_rank>`` in a distributed run; other devices unchanged."""
    if ctx.is_distributed and device == "cuda":
        return f"cuda:{ctx.local_rank}"
    return device


def epoch_indices(n: int, epoch: int, seed: int, ctx: DistContext, shuffle: bool = True) -> list[int]:
    """This rank's sample order for ``epoch`` (``DistributedSampler`` over ``range(n)``).

    With one process this is the seeded permutation itself; with W processes rank r
    gets ``perm[r::W]`` (the permutation padded by repetition to a multiple of W).
    """
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(
        range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed, drop_last=False
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def all_reduce_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``value`` over ranks (a detached copy; unchanged with one process)."""
    value = value.detach().clone()
    if ctx.is_distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_reduce_flag(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is True on any rank (e.g. a stop request)."""
    if not ctx.is_distributed:
        return flag
    device = f"cuda:{ctx.local_rank}" if ctx.backend == "nccl" else "cpu"
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op with one process)."""
    if ctx.is_distributed:
        dist.barrier()


def cleanup(ctx: DistContext, *, completed: bool = True) -> None:
    """Leave the process group if :func:`init_from_env` created it.

    After a run that ``completed`` on this rank, all ranks first meet at a
    barrier: otherwise a rank that finishes early (rank 0 still writing its
    checkpoint) closes its gloo connections under a peer that is still using
    them, which aborts that peer. After a failure no barrier is attempted (the
    other ranks may never reach it); torchrun stops them.
    """
    if ctx.initialized_here and dist.is_initialized():
        try:
            if completed:
                dist.barrier()
        finally:
            dist.destroy_process_group()
