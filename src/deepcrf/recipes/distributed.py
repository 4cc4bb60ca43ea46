"""torchrun support: process group setup (gloo on CPU, nccl on CUDA) and small collectives.

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) every helper is a single-process
no-op, so the training loop has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Dist", "all_gather_objects", "all_reduce_sum", "setup_distributed"]


@dataclass
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device: {spec!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def setup_distributed(device_spec: str = "auto") -> Dist:
    """Join the torchrun job described by the environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(device_spec, local_rank)
    if world <= 1:
        return Dist(0, 1, device)
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        here = True
    return Dist(rank, world, device, here)


def all_reduce_sum(value: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """The sum over processes (in place; unchanged when alone)."""
    if ctx.active:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_gather_objects(obj: Any, ctx: Dist) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out
