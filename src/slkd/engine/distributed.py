"""One code path for one process and for many: ``torchrun`` only adds ranks.

Without the ``WORLD_SIZE`` variable that ``torchrun`` sets, everything runs in this process with
rank 0 of 1 and no process group. With it, a process group is created (gloo on CPU, nccl on
CUDA), each rank takes its own device, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from slkd.engine.text import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    #: launched by torchrun: a process group exists even for one rank (so a 1-GPU machine
    #: still runs DistributedDataParallel over NCCL, as a many-GPU one would)
    launched: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.launched or self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; pick this rank's device (the GPU of its
    local rank when ``device`` resolves to CUDA: :func:`slkd.engine.text.resolve_device`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    # auto: the GPU when there is one; a CUDA request without CUDA is an error (one resolver)
    use_cuda = resolve_device(device).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    launched = "TORCHELASTIC_RUN_ID" in os.environ  # set by torchrun for every rank
    if (world > 1 or launched) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, launched=launched)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
