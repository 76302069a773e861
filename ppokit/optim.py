"""Adam and global-norm gradient clipping as tensor ops on lists of tensors.

Written functionally (state is plain tensors, learning rate is a tensor) so the whole update
step — gradient, clip, Adam — can be compiled into one graph without recompiling when the
learning rate is annealed, and so the optimizer state saves to safetensors as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AdamState:
    """First and second moment per parameter and the step count (a float64 0-dim tensor)."""

    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    step: torch.Tensor

    @classmethod
    def zeros_like(cls, params: list[torch.Tensor]) -> AdamState:
        return cls(
            [torch.zeros_like(p) for p in params],
            [torch.zeros_like(p) for p in params],
            torch.zeros((), dtype=torch.float32, device=params[0].device),
        )

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat ``name -> tensor`` dict for checkpoints."""
        out = {f"{prefix}.step": self.step}
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq)):
            out[f"{prefix}.exp_avg.{i}"] = m
            out[f"{prefix}.exp_avg_sq.{i}"] = v
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        """Copy state saved by :meth:`tensors` back in place."""
        self.step.copy_(tensors[f"{prefix}.step"])
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq)):
            m.copy_(tensors[f"{prefix}.exp_avg.{i}"])
            v.copy_(tensors[f"{prefix}.exp_avg_sq.{i}"])


def clip_by_global_norm(
    grads: list[torch.Tensor], max_norm: float | None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Scale all gradients by ``min(1, max_norm / ||g||)`` (one norm over every tensor).

    Returns the (possibly scaled) gradients and the norm before clipping, a 0-dim tensor.
    """
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if max_norm is None:
        return grads, norm
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return torch._foreach_mul(grads, scale), norm


def adam_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    state: AdamState,
    lr: torch.Tensor,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One Adam step (Kingma & Ba, Algorithm 1), updating ``params`` and ``state`` in place."""
    beta1, beta2 = betas
    state.step.add_(1)
    torch._foreach_lerp_(state.exp_avg, grads, 1 - beta1)
    torch._foreach_mul_(state.exp_avg_sq, beta2)
    torch._foreach_addcmul_(state.exp_avg_sq, grads, grads, 1 - beta2)
    bias_correction1 = 1 - beta1**state.step
    bias_correction2 = 1 - beta2**state.step
    step_size = lr / bias_correction1
    denom = torch._foreach_div(torch._foreach_sqrt(state.exp_avg_sq), torch.sqrt(bias_correction2))
    torch._foreach_add_(denom, eps)
    updates = torch._foreach_div(state.exp_avg, denom)
    torch._foreach_mul_(updates, step_size)
    torch._foreach_sub_(params, updates)
