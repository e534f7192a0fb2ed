"""Data parallelism for supernet training without DDP's reducer.

Each update trains a different subnet, so a different subset of the supernet's parameters
receives gradients every step. PyTorch's ``DistributedDataParallel`` needs
``find_unused_parameters=True`` for that, which is fragile (its unused set is computed per
rank and per forward; with gradient accumulation or several subnets per update — the
sandwich rule — it raises "Expected to have finished reduction" or skips a sync). We do
the simple, always-correct thing instead (fairseq's ``no_c10d`` idea): after all backward
passes of an update, `sync_gradients` all-reduces (sums) every gradient once, in bucketed
flat buffers, in a fixed parameter order. A parameter that got a gradient on some ranks but
not on others (an expert that received no tokens on one rank's batch) counts as zeros where
missing; a parameter that no rank touched keeps ``grad=None``, so Adam skips it exactly as
a single process would. All ranks draw the same subnet for an update (seeded by the update),
so the collectives always match.

Launch with ``torchrun``; `init_distributed` reads its environment (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "sync_gradients", "all_reduce_sum",
           "broadcast_module", "barrier"]

_BUCKET_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the data-parallel group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | torch.device | None = None) -> tuple[DistInfo, torch.device]:
    """Joins the process group that ``torchrun`` describes in the environment, if any.

    Returns the rank info and the device to train on: ``cuda:LOCAL_RANK`` with NCCL when
    CUDA is available (or `device` asks for it), else the CPU with gloo. On the CPU each rank
    gets ``cpu_count // local_world_size`` threads: several ranks with the default thread
    count oversubscribe the cores and run several times slower.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if want.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for CUDA, but no CUDA device is available")
        index = local_rank if world_size > 1 or want.index is None else want.index
        want = torch.device("cuda", index)
        torch.cuda.set_device(want)
    info = DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)
    if world_size > 1:
        if want.type == "cpu":
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if want.type == "cuda" else "gloo")
    return info, want


def sync_gradients(params: Sequence[torch.nn.Parameter], info: DistInfo) -> None:
    """Sums every parameter's gradient over the ranks (None counts as zeros if any rank has
    a gradient for it; stays None if none has)."""
    if not info.enabled:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has)
    active = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
    grads: list[torch.Tensor] = []
    for p in active:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    bucket: list[torch.Tensor] = []
    size = 0
    for grad in grads:
        if bucket and (grad.dtype != bucket[0].dtype or size >= _BUCKET_BYTES):
            _reduce_bucket(bucket)
            bucket, size = [], 0
        bucket.append(grad)
        size += grad.numel() * grad.element_size()
    if bucket:
        _reduce_bucket(bucket)


def _reduce_bucket(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def all_reduce_sum(values: Sequence[float], info: DistInfo,
                   device: torch.device) -> list[float]:
    """Sums a few float64 statistics over the ranks."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if info.enabled:
        dist.all_reduce(t)
    return t.tolist()


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Copies rank 0's parameters and buffers to every rank (identical start)."""
    if not info.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
