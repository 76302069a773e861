"""Adam and global-norm gradient clipping for parameters whose gradients live in one flat buffer.

:class:`ppokit.algos.common.GradientStep` writes every gradient into a flat vector ``[P]`` (P =
number of parameters it updates), so the all-reduce and the clipping are a handful of operations
on one vector, whatever the number of layers. Adam then updates the agent's own parameter
tensors with PyTorch's public functional Adam (``torch.optim.adam.adam``), fused into one kernel
call on CPU and CUDA (the kernel loops over the tensors itself). Its moments are views of two
flat vectors, saved to safetensors as they are (the checkpoint format of ppokit 0.1).
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam


class AdamState:
    """Adam's moments for a list of parameters: flat ``exp_avg``/``exp_avg_sq`` ``[P]`` and, for
    each parameter, views of them shaped like it, plus one step count per parameter (0-dim
    float32, as the fused kernel wants; all equal)."""

    def __init__(self, params: list[torch.Tensor]):
        size = sum(p.numel() for p in params)
        device = params[0].device
        self.exp_avg = torch.zeros(size, device=device)
        self.exp_avg_sq = torch.zeros(size, device=device)
        self.exp_avg_views = split_like(self.exp_avg, params)
        self.exp_avg_sq_views = split_like(self.exp_avg_sq, params)
        self.steps = [torch.zeros((), device=device) for _ in params]

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat ``name -> tensor`` dict for checkpoints."""
        return {f"{prefix}.step": self.steps[0], f"{prefix}.exp_avg": self.exp_avg,
                f"{prefix}.exp_avg_sq": self.exp_avg_sq}

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        """Copy state saved by :meth:`tensors` back in place (the views see it)."""
        for step in self.steps:
            step.copy_(tensors[f"{prefix}.step"])
        self.exp_avg.copy_(tensors[f"{prefix}.exp_avg"])
        self.exp_avg_sq.copy_(tensors[f"{prefix}.exp_avg_sq"])


def split_like(flat: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Views of ``flat [P]`` with the shapes of ``tensors`` (P = their total size), in order."""
    return [view.view_as(t) for view, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def clip_by_global_norm_(grad: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale the flat gradient ``[P]`` in place by ``min(1, max_norm / ||g||)``; return ``||g||``."""
    norm = torch.linalg.vector_norm(grad)
    if max_norm is not None:
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


@torch.no_grad()
def adam_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    state: AdamState,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One Adam step (Kingma & Ba, Algorithm 1) on ``params`` in place, as ``torch.optim.Adam``
    takes it (fused on CPU and CUDA, the single-tensor loop elsewhere)."""
    fused = params[0].device.type in ("cpu", "cuda")
    adam(params, grads, state.exp_avg_views, state.exp_avg_sq_views, [], state.steps, foreach=False,
         fused=fused or None, amsgrad=False, beta1=betas[0], beta2=betas[1], lr=float(lr), weight_decay=0.0,
         eps=eps, maximize=False)
