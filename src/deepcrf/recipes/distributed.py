"""torchrun support: process group setup (gloo on CPU, nccl on CUDA) and small collectives.

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) every helper is a single-process
no-op, so the training loop has one code path.

torchrun starts its workers in sessions of their own, so a SIGKILL of torchrun (``kill -9``,
the OOM killer) would leave them training and writing the run folder, racing a later
``--resume``; ``exit_with_parent`` makes each worker follow its launcher: it kills itself
(SIGKILL, like its launcher) as soon as it is re-parented.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from deepcrf.parallel import watch_parent

__all__ = [
    "Dist",
    "all_gather_objects",
    "all_reduce_sum",
    "exit_with_parent",
    "setup_distributed",
]


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
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker
        exit_with_parent()
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        here = True
    return Dist(rank, world, device, here)


def exit_with_parent(interval: float = 0.5) -> threading.Thread:
    """Watch the parent process from a daemon thread: when it dies (this process is
    re-parented) send this process SIGKILL. Returns the thread."""
    return watch_parent(
        os.getppid(),
        lambda: os.kill(os.getpid(), signal.SIGKILL),
        interval,
        "deepcrf-exit-with-parent",
    )


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
