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
    def zeros(cls, size: int, device: torch.device) -> AdamState:
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


def clip_by_global_norm_(grad: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale the flat gradient ``[P]`` in place by ``min(1, max_norm / ||g||)``; return ``||g||``."""
    norm = torch.linalg.vector_norm(grad)
    if max_norm is not None:
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


def adam_step_(
    params: torch.Tensor,
    grad: torch.Tensor,
    state: AdamState,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One Adam step (Kingma & Ba, Algorithm 1) on the flat ``params [P]``, in place.

    Uses PyTorch's fused Adam kernel (one pass over the vector, as ``torch.optim.Adam(fused=True)``)
    where the build has one, else the same formula as tensor operations."""
    beta1, beta2 = betas
    state.count += 1
    state.step.add_(1)
    if _FUSED_ADAM is not None and params.device.type in ("cpu", "cuda"):
        _FUSED_ADAM([params], [grad], [state.exp_avg], [state.exp_avg_sq], [], [state.step], lr=float(lr),
                    beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
        return
    state.exp_avg.lerp_(grad, 1 - beta1)
    state.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**state.count
    bias_correction2 = 1 - beta2**state.count
    denom = state.exp_avg_sq.sqrt().div_(math.sqrt(bias_correction2)).add_(eps)
    params.addcdiv_(state.exp_avg, denom, value=-float(lr) / bias_correction1)


_FUSED_ADAM = getattr(torch, "_fused_adam_", None)
