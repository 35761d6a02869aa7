"""torch.distributed plumbing for training: the only module in clipforge that touches it.

Launch with torchrun (env:// rendezvous): `torchrun --nproc_per_node N -m clipforge.cli.main train ...`.
A plain `python` process (no WORLD_SIZE in the environment) is a world of one and needs no flags.
Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: Optional[str] = None) -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size <= 1 and not dist.is_initialized():
        return DistInfo(device=dev)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        created = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, created)


def cleanup(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum across ranks (no gradient); identity in a world of one."""
    if info.distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank (e.g. the checkpoint path to resume from)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_with_grad(tensor: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, list[int]]:
    """Concatenate every rank's `tensor` along dim 0, keeping gradients; returns (all, rows per rank).

    Gradients flow back to the rank that owns each row (the backward sums every rank's gradient for
    those rows), so a loss computed on the gathered features trains every
    rank's towers. Ranks may hold different numbers of rows (a bad sample dropped by the collate
    function): rows are padded to the largest count for the collective and cut again after.
    """
    if not info.distributed:
        return tensor, [tensor.shape[0]]
    count = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(info.world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0],) + tuple(tensor.shape[1:]))
        padded = torch.cat([tensor, pad], dim=0)
    gathered = _AllGather.apply(padded.contiguous(), info.rank, info.world_size)  # [world, longest, ...]
    return torch.cat([g[:n] for g, n in zip(gathered.unbind(0), sizes)], dim=0), sizes


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slot (all_reduce, then
    slice): the gradient of a loss summed over ranks, as DDP's average then expects."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rank = rank
        out = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(out, tensor)
        return torch.stack(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank], None, None
