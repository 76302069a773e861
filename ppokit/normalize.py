"""Running statistics kept as module buffers, so they travel with the agent's checkpoint."""

from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Running mean and (population) variance of a stream of ``[B, *shape]`` batches.

    Batches are merged with the parallel-variance formula (Chan et al.), in float64. Before the
    first update the statistics are mean 0, variance 1, so :meth:`normalize` is the identity.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...] = (), clip: float | None = None, epsilon: float = 1e-8):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.clip = clip
        self.epsilon = epsilon

    def problem(self) -> str | None:
        """Why these statistics cannot have come from data (non-finite, a negative variance or
        count), or None. Checked on every loaded checkpoint."""
        if not all(bool(torch.isfinite(t).all()) for t in (self.mean, self.var, self.count)):
            return "holds NaN or infinity"
        if bool((self.var < 0).any()) or float(self.count) < 0:
            return "has a negative variance or count"
        return None

    @torch.no_grad()
    def update_from_moments(self, batch_mean: torch.Tensor, batch_var: torch.Tensor, batch_count: float) -> None:
        """Merge a batch given by its mean and variance ``[*shape]`` and its size."""
        if batch_count <= 0:
            return
        batch_mean = batch_mean.to(self.mean)
        batch_var = batch_var.to(self.var)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean.add_(delta * batch_count / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge a batch ``[B, *shape]`` (any float or integer dtype)."""
        flat = batch.reshape(-1, *self.mean.shape).to(torch.float64)
        self.update_from_moments(flat.mean(0), flat.var(0, unbiased=False), flat.shape[0])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / sqrt(var + eps)``, clipped to ``[-clip, clip]``; float32 ``[..., *shape]``."""
        mean = self.mean.to(torch.float32)
        std = torch.sqrt(self.var + self.epsilon).to(torch.float32)
        out = (x.to(torch.float32) - mean) / std
        return out.clamp(-self.clip, self.clip) if self.clip is not None else out

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """``x / sqrt(var + eps)`` without centering (reward scaling), clipped like normalize."""
        out = x.to(torch.float32) / torch.sqrt(self.var + self.epsilon).to(torch.float32)
        return out.clamp(-self.clip, self.clip) if self.clip is not None else out
