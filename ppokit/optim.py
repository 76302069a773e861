"""The parameters a gradient step updates, kept in one flat buffer; Adam and global-norm
gradient clipping on that buffer.

:class:`ppokit.algos.common.GradientStep` moves the parameters it updates into one flat vector
``[S]`` and writes every gradient into a second one of the same layout, so the all-reduce, the
clipping and Adam are each a single operation on one vector, whatever the number of layers
(Adam is PyTorch's public functional ``torch.optim.adam.adam``, fused on CPU and CUDA).

Each tensor starts at a multiple of 64 bytes in its buffer (:class:`FlatLayout`), the alignment
PyTorch's CPU allocator gives a tensor of its own: a matrix product then takes the same kernel
path on a trained agent's parameters as on the separate tensors of the same agent loaded from a
checkpoint, so the two act bit for bit alike on every CPU (tests/test_checkpoint.py). The
padding between tensors holds zeros and its gradient is zero, so Adam leaves it at zero.

Checkpoints store Adam's moments without the padding, as one ``[P]`` vector each (P = number of
parameters): the format of ppokit 0.1.
"""

from __future__ import annotations

import math

import torch
from torch.optim.adam import adam

ALIGNMENT_BYTES = 64


class FlatLayout:
    """Where each of a list of tensors lives in a flat buffer ``[S]``: at offsets that are
    multiples of :data:`ALIGNMENT_BYTES`, in order (S >= P, the tensors' total size)."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.shapes = [t.shape for t in tensors]
        self.numels = [t.numel() for t in tensors]
        self.device = tensors[0].device
        self.dtype = tensors[0].dtype
        self.unit = ALIGNMENT_BYTES // tensors[0].element_size()  # elements per alignment step
        self.offsets = []
        size = 0
        for numel in self.numels:
            self.offsets.append(size)
            size += math.ceil(numel / self.unit) * self.unit
        self.size = size

    def zeros(self, rows: int | None = None) -> torch.Tensor:
        """A zero buffer ``[S]`` (or ``[rows, S]``: one row per agent of a population, each row
        64-byte aligned too, as S is a multiple of the alignment) whose first element is 64-byte aligned."""
        count = 1 if rows is None else rows
        spare = torch.zeros(count * self.size + self.unit, device=self.device, dtype=self.dtype)
        skip = (-spare.data_ptr() % ALIGNMENT_BYTES) // spare.element_size()
        flat = spare[skip:skip + count * self.size]
        return flat if rows is None else flat.view(rows, self.size)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of ``flat [S]`` with the tensors' shapes."""
        return [flat[o:o + n].view(shape) for o, n, shape in zip(self.offsets, self.numels, self.shapes)]

    def views_of_rows(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Views ``[K, *shape]`` of ``rows [K, S]`` (one agent of a population per row)."""
        return [rows[:, o:o + n].view(rows.shape[0], *shape)
                for o, n, shape in zip(self.offsets, self.numels, self.shapes)]

    def pack(self, flat: torch.Tensor) -> torch.Tensor:
        """The tensors' values without the padding, ``[P]`` (a copy)."""
        return torch.cat([view.reshape(-1) for view in self.views(flat)])

    def unpack_(self, flat: torch.Tensor, packed: torch.Tensor) -> None:
        """Write ``packed [P]`` (as :meth:`pack` gives it) into ``flat [S]``."""
        if packed.shape != (sum(self.numels),):
            raise ValueError(f"expected a vector of {sum(self.numels)} values, got shape {tuple(packed.shape)}")
        for view, chunk in zip(self.views(flat), packed.split(self.numels)):
            view.copy_(chunk.view_as(view))


class AdamState:
    """Adam's moments ``exp_avg``/``exp_avg_sq`` (flat ``[S]``, laid out as the parameters) and
    its step count (0-dim float32, as the fused kernel wants)."""

    def __init__(self, layout: FlatLayout):
        self.layout = layout
        self.exp_avg = layout.zeros()
        self.exp_avg_sq = layout.zeros()
        self.step = torch.zeros((), device=layout.device)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat ``name -> tensor`` dict for checkpoints (moments ``[P]``, without padding)."""
        return {f"{prefix}.step": self.step, f"{prefix}.exp_avg": self.layout.pack(self.exp_avg),
                f"{prefix}.exp_avg_sq": self.layout.pack(self.exp_avg_sq)}

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        """Copy state saved by :meth:`tensors` back in place."""
        self.step.copy_(tensors[f"{prefix}.step"])
        self.layout.unpack_(self.exp_avg, tensors[f"{prefix}.exp_avg"])
        self.layout.unpack_(self.exp_avg_sq, tensors[f"{prefix}.exp_avg_sq"])


def clip_by_global_norm_(grad: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale the flat gradient ``[S]`` in place by ``min(1, max_norm / ||g||)``; return ``||g||``."""
    norm = torch.linalg.vector_norm(grad)
    if max_norm is not None:
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


@torch.no_grad()
def adam_step_(
    params: torch.Tensor,
    grad: torch.Tensor,
    state: AdamState,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One Adam step (Kingma & Ba, Algorithm 1) on the flat ``params [S]`` in place, as
    ``torch.optim.Adam`` takes it (fused on CPU and CUDA, the single-tensor loop elsewhere)."""
    adam_steps_([params], [grad], [state], lr, betas, eps)


@torch.no_grad()
def adam_steps_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    states: list[AdamState],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """:func:`adam_step_` on several flat vectors at once (agents of a population with the same
    learning rate): one fused kernel, each vector with its own moments and step count."""
    fused = params[0].device.type in ("cpu", "cuda")
    adam(params, grads, [s.exp_avg for s in states], [s.exp_avg_sq for s in states], [], [s.step for s in states],
         foreach=False, fused=fused or None, amsgrad=False, beta1=betas[0], beta2=betas[1], lr=float(lr),
         weight_decay=0.0, eps=eps, maximize=False)
