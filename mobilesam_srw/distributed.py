"""Process-group setup under ``torchrun``: NCCL on GPUs, gloo on CPUs, nothing when alone."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from mobilesam_srw.errors import SrwError


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job.

    Args:
        rank: global rank (0 when not under torchrun).
        world_size: number of processes.
        local_rank: rank on this machine; picks the GPU.
        device: the device this rank computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def agree(self, error: str | None) -> None:
        """Every rank raises rank 0's setup error (or none does), so no rank waits forever at a barrier."""
        if self.is_distributed:
            shared = [error]
            dist.broadcast_object_list(shared, src=0)
            error = shared[0]
        if error:
            raise SrwError(error)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this rank's GPU when CUDA is available, else the CPU; else the named device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise SrwError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SrwError(f"--device {device}: no CUDA GPU is available here")
    if resolved.type not in ("cpu", "cuda"):
        raise SrwError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank)
    return resolved


@contextlib.contextmanager
def distributed_context(device: str = "auto") -> Iterator[DistributedContext]:
    """Join the torchrun process group if ``WORLD_SIZE`` > 1 (and leave it on exit)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size == 1:
        yield DistributedContext(device=resolved)
        return
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    try:
        yield DistributedContext(rank, world_size, local_rank, resolved)
    finally:
        dist.destroy_process_group()
