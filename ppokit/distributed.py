"""The only module that touches torch.distributed. Every function is a no-op at world size 1.

Launch with ``torchrun --nproc-per-node K -m ppokit train ...``: each process steps
``num_envs / K`` envs, gradients and statistics are averaged across processes, and only rank 0
writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init() -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns ``(rank, world_size)``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        nccl = torch.cuda.is_available() and os.environ.get("PPOKIT_NCCL")
        dist.init_process_group(backend="nccl" if nccl else "gloo")
    return rank(), world_size


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every process start from rank 0's parameters and buffers."""
    if active():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def mean_(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Average tensors across processes in place (one flattened all-reduce)."""
    if not active() or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return tensors


def sum_scalars(values: list[float]) -> list[float]:
    """Sum Python floats across processes."""
    if not active():
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def mean_scalar(value: float) -> float:
    """Average one float across processes (e.g. the KL that decides early stopping)."""
    return sum_scalars([value])[0] / world_size()


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (a decision every process must share)."""
    if not active():
        return flag
    tensor = torch.tensor([float(flag)])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def gather_objects(obj: object) -> list[object]:
    """All processes' ``obj`` (e.g. finished episode returns), on every process."""
    if not active():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    """Leave the process group, if this process joined one (safe at exit after an interrupted
    start-up: a torch.distributed left half imported is not touched)."""
    if getattr(dist, "is_available", None) and getattr(dist, "is_initialized", None) \
            and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
