"""One code path for 1 process and for `torchrun` (DDP, or FSDP2 with `fully_shard` per block then the root).

torchrun --nproc_per_node 8 -m ttt.cli train ...                       one node
torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 --nproc_per_node 8 -m ttt.cli train ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Read torchrun's environment; initialise the process group (nccl on GPU, gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, device)


def wrap_model(model: nn.Module, info: DistInfo, fsdp: bool) -> nn.Module:
    if not info.enabled:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        base = getattr(model, "model", None) or getattr(model, "backbone", None)
        blocks = getattr(base, "layers", None)
        for block in blocks if blocks is not None else []:
            fully_shard(block)
        fully_shard(model)
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[info.local_rank] if info.device.type == "cuda" else None
    )


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
