"""Distributed data parallel training helpers (``torchrun`` / ``python -m torch.distributed.run``).

The CLI reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and passes them here; nothing in this
module reads the environment itself (``torch.distributed``'s ``env://`` rendezvous reads
``MASTER_ADDR``/``MASTER_PORT``, which torchrun sets). NCCL is used on CUDA, gloo on CPU.
Each rank draws its own patches (seeded by rank); DDP averages gradients; only rank 0
logs, validates, checkpoints and exports.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch

__all__ = ["DistContext", "init_distributed", "wrap_model", "unwrap_model", "barrier", "broadcast_float",
           "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(*, rank: int, world_size: int, local_rank: int, device: str = "auto",
                     timeout_s: float = 600.0) -> DistContext:
    """Join the process group (when ``world_size > 1``) and pick this rank's device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and torch.cuda.is_available():
        if world_size > 1 or device == "cuda":
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(torch.device(device))
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend, init_method="env://", rank=rank,
                                             world_size=world_size,
                                             timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world_size, local_rank, device)


def wrap_model(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model``."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if ctx.device.startswith("cuda"):
        return DDP(model, device_ids=[torch.device(ctx.device).index])
    return DDP(model)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def barrier(ctx: DistContext) -> None:
    if ctx.distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()


def broadcast_float(value: float, ctx: DistContext, *, src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every rank."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    torch.distributed.broadcast(t, src=src)
    return float(t.item())


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
