"""Adam and global-norm gradient clipping on one flat vector of parameters.

The agent's parameters are views into a single buffer (:meth:`Agent.flat_parameters`), so
clipping and Adam are a handful of operations on one vector, whatever the number of layers
(on a CPU, ``torch._foreach_*`` ops fall back to one kernel per tensor). The optimizer state is
plain tensors, saved to safetensors as they are, and the learning rate is a tensor, so an
annealed rate never recompiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class AdamState:
    """First and second moments ``[P]`` (P = number of parameters) and the step count (0-dim)."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: torch.Tensor
    count: int = 0  # the same step count as a Python int: bias corrections need no tensor ops

    @classmethod
    def zeros(cls, size: int, device: torch.device) -> "AdamState":
        return cls(torch.zeros(size, device=device), torch.zeros(size, device=device),
                   torch.zeros((), device=device))

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat ``name -> tensor`` dict for checkpoints."""
        return {f"{prefix}.step": self.step, f"{prefix}.exp_avg": self.exp_avg, f"{prefix}.exp_avg_sq": self.exp_avg_sq}

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        """Copy state saved by :meth:`tensors` back in place."""
        self.step.copy_(tensors[f"{prefix}.step"])
        self.count = int(self.step.item())
        self.exp_avg.copy_(tensors[f"{prefix}.exp_avg"])
        self.exp_avg_sq.copy_(tensors[f"{prefix}.exp_avg_sq"])


def clip_by_global_norm(grad: torch.Tensor, max_norm: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale the flat gradient ``[P]`` by ``min(1, max_norm / ||g||)``; also return ``||g||``."""
    norm = torch.linalg.vector_norm(grad)
    if max_norm is None:
        return grad, norm
    return grad * torch.clamp(max_norm / (norm + 1e-6), max=1.0), norm


def adam_update(
    state: AdamState,
    grad: torch.Tensor,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.Tensor:
    """Advance the Adam state (Kingma & Ba, Algorithm 1) and return the step to *subtract*, ``[P]``."""
    beta1, beta2 = betas
    state.count += 1
    state.step.add_(1)
    state.exp_avg.lerp_(grad, 1 - beta1)
    state.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**state.count
    bias_correction2 = 1 - beta2**state.count
    denom = state.exp_avg_sq.sqrt().div_(math.sqrt(bias_correction2)).add_(eps)
    return torch.div(state.exp_avg, denom).mul_(float(lr) / bias_correction1)
