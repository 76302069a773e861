"""The only module that touches torch.distributed. Every function is a no-op at world size 1.

Launch with ``torchrun --nproc-per-node K -m ppokit train ...`` (one machine) or with
``--nnodes M --rdzv-backend c10d`` (several; see docs/distributed.md): each process steps
``num_envs / K`` envs and only rank 0 writes files.

* **Exact.** Every reduction that feeds the update is weighted by how many valid samples each
  process contributed (:func:`weighted_mean_`, :func:`sum_`), and running statistics are merged
  from every process's batch moments (:func:`gather_tensors`), so K processes with N/K envs each
  compute the update one process with N envs computes on the same data, up to float rounding.
* **Bounded.** The process group has a timeout (``dist_timeout_s``); a collective that fails or
  times out because another process died or hangs raises :class:`ppokit.errors.PeerLost` (one
  line) instead of hanging or printing a backend traceback.
* **Independent streams.** :func:`stream_seeds` gives each (seed, rank) its own generators.

Backend: ``gloo`` for CPU tensors; when CUDA is available, CUDA tensors go over ``nccl``
(``cpu:gloo,cuda:nccl``).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ppokit.errors import PeerLost, first_line

# Seconds a process waits in a collective for the others before giving up (config: dist_timeout_s).
DEFAULT_TIMEOUT_S = 600.0


def launched_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def backend() -> str:
    """``gloo`` for CPU tensors, plus ``nccl`` for CUDA tensors when a GPU is available."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init(timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns ``(rank, world_size)``.

    ``timeout_s`` bounds every collective (and the rendezvous): past it the waiting processes
    raise :class:`PeerLost`. The process leaves the group again at exit (:func:`shutdown`, also
    when the Python API's caller does not): gloo's threads torn down with the interpreter instead
    can abort the process (SIGABRT, "terminate called without an active exception")."""
    if launched_world_size() > 1 and not dist.is_initialized():
        # torch.distributed.nn's functions take ``group=group.WORLD`` as a default argument, read
        # when the module is first imported. Imported after joining (torch._dynamo imports it,
        # lazily: the meta device and torch.compile do), the defaults hold the live group, so
        # destroy_process_group cannot free it and gloo's threads run into the interpreter's
        # teardown, where one still releasing a collective's tensors aborts the process.
        # Imported before, the defaults are None.
        import torch.distributed.nn  # noqa: F401
        with _collective("joining the process group"):
            dist.init_process_group(backend=backend(), timeout=datetime.timedelta(seconds=timeout_s))
        atexit.register(shutdown)
    return rank(), world_size()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    """Turn a backend error (a peer closed the connection, a timeout) into one-line :class:`PeerLost`."""
    try:
        yield
    except RuntimeError as error:  # DistBackendError, DistNetworkError and gloo's errors are RuntimeErrors
        # gloo's first line: "[source.cc:537] Read error ...: Connection reset by peer. This is typically ..."
        reason = re.sub(r"^\[[^\]]*\]\s*", "", first_line(error)).split(". This is typically")[0]
        raise PeerLost(
            f"process {rank()} of {world_size()} lost contact with the others while {what} ({reason}): "
            "another process died, or hung longer than dist_timeout_s"
        ) from None


# ---------------------------------------------------------------------------- random streams


@dataclass(frozen=True)
class StreamSeeds:
    """What seeds one process's global generators: ``torch.manual_seed(torch)``, ``np.random.seed(numpy)``."""

    torch: int
    numpy: int | np.ndarray


def stream_seeds(seed: int, rank: int, resumed_at: int | None = None) -> StreamSeeds:
    """The seeds of process ``rank``'s torch and numpy generators in a run with seed ``seed``.

    Rank 0 of a new run uses ``seed`` itself (so a one-process run is what it always was). Every
    other stream comes from numpy's ``SeedSequence(seed, spawn_key=key)`` (the ``key``-th child of
    ``SeedSequence(seed).spawn``), with ``key = (rank,)``, or ``(rank, resumed_at)`` for a process
    whose generator a resumed run cannot restore (ranks > 0, resumed at iteration ``resumed_at``):
    the words are a hash of (seed, key), so distinct (seed, rank) pairs never share a stream (the
    old ``seed + rank`` gave seed 0 rank 1 the stream of seed 1 rank 0)."""
    if rank == 0 and resumed_at is None:
        return StreamSeeds(torch=seed, numpy=seed % 2**32)
    key = (rank,) if resumed_at is None else (rank, resumed_at)
    words = np.random.SeedSequence(seed, spawn_key=key).generate_state(6)  # uint32
    return StreamSeeds(torch=int(words[0]) | int(words[1]) << 32, numpy=words[2:])


def seed_streams(seeds: StreamSeeds) -> None:
    """Seed torch's (every device's) and numpy's global generators."""
    torch.manual_seed(seeds.torch)
    np.random.seed(seeds.numpy)


# ---------------------------------------------------------------------------- collectives


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every process start from rank 0's parameters and buffers."""
    if active():
        with _collective("receiving rank 0's parameters"):
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)


def sum_(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum tensors over processes in place (one flattened all-reduce); returns them."""
    if not active() or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    with _collective("summing over processes"):
        dist.all_reduce(flat)
    _unflatten(flat, tensors)
    return tensors


def weighted_mean_(tensors: list[torch.Tensor], weight: float | torch.Tensor) -> list[torch.Tensor]:
    """``sum_k w_k t_k / sum_k w_k`` over processes, in place (one all-reduce); returns them.

    ``weight`` is this process's share, e.g. its number of valid samples: the mean of per-process
    means weighted so is the mean over all the samples (a plain average is not, when the
    processes hold different numbers of samples). A total weight of 0 leaves zeros."""
    if not active() or not tensors:
        return tensors
    weight = torch.as_tensor(weight, dtype=tensors[0].dtype, device=tensors[0].device).reshape(1)
    flat = torch.cat([t.reshape(-1) for t in tensors] + [torch.ones_like(weight)]) * weight
    with _collective("averaging over processes"):
        dist.all_reduce(flat)
    total = flat[-1]
    _unflatten(flat[:-1] / total.clamp(min=torch.finfo(flat.dtype).tiny), tensors)
    return tensors


def _unflatten(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def gather_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every process's ``tensor`` (same shape and dtype on all), in rank order, on every process."""
    if not active():
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    with _collective("gathering statistics"):
        dist.all_gather(out, tensor.contiguous())
    return out


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (a decision every process must share)."""
    if not active():
        return flag
    tensor = torch.tensor([float(flag)])
    with _collective("agreeing on a decision"):
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def gather_objects(obj: object) -> list[object]:
    """All processes' ``obj`` (e.g. finished episode returns), on every process."""
    if not active():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    with _collective("gathering episode statistics"):
        dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    """Leave the process group, if this process joined one (safe at exit after an interrupted
    start-up: a torch.distributed left half imported is not touched)."""
    if getattr(dist, "is_available", None) and getattr(dist, "is_initialized", None) \
            and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
