"""Running statistics kept as module buffers, so they travel with the agent's checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ppokit import distributed


@dataclass(frozen=True)
class Moments:
    """Mean and population variance ``[*shape]`` (float64) of ``count`` samples (0-dim or float)."""

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor | float


def combined(a: Moments, b: Moments) -> Moments:
    """The moments of the union of two sets of samples, exactly (the parallel-variance formula of
    Chan et al.): ``M2 = M2_a + M2_b + delta^2 n_a n_b / n`` with ``delta = mean_b - mean_a``. The
    spread between the two means counts (averaging the two variances would drop it)."""
    total = a.count + b.count
    delta = b.mean - a.mean
    m2 = a.var * a.count + b.var * b.count + delta.square() * a.count * b.count / total
    return Moments(a.mean + delta * b.count / total, m2 / total, total)


def batch_moments(batch: torch.Tensor, shape: torch.Size) -> Moments:
    """The moments of ``batch [B, *shape]`` in float64 (mean 0, variance 0 when B is 0)."""
    flat = batch.reshape(-1, *shape).to(torch.float64)
    if flat.shape[0] == 0:
        return Moments(flat.new_zeros(shape), flat.new_zeros(shape), 0.0)
    return Moments(flat.mean(0), flat.var(0, unbiased=False), flat.shape[0])


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
        merged = combined(Moments(self.mean, self.var, self.count),
                          Moments(batch_mean.to(self.mean), batch_var.to(self.var), batch_count))
        self.mean.copy_(merged.mean)
        self.var.copy_(merged.var)
        self.count.copy_(torch.as_tensor(merged.count))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge this process's batch ``[B, *shape]`` (any float or integer dtype)."""
        mine = batch_moments(batch, self.mean.shape)
        self.update_from_moments(mine.mean, mine.var, float(mine.count))

    @torch.no_grad()
    def update_over_processes(self, batch: torch.Tensor) -> None:
        """Merge the batches ``[B_k, *shape]`` of every process (each passes its own), exactly: the
        processes' batch moments are gathered and combined (:func:`combined`, in rank order, the
        same on every process), then merged once, so K processes holding the statistics of one
        process that saw all K batches. :meth:`update` in one process."""
        if not distributed.active():
            self.update(batch)
            return
        mine = batch_moments(batch, self.mean.shape)
        packed = torch.cat([mine.mean.reshape(-1), mine.var.reshape(-1),
                            torch.tensor([float(mine.count)], dtype=torch.float64)])
        size = mine.mean.numel()
        everyone = [Moments(p[:size].view_as(self.mean), p[size:2 * size].view_as(self.var), p[-1])
                    for p in distributed.gather_tensors(packed)]
        merged = everyone[0]
        for other in everyone[1:]:
            merged = combined(merged, other) if float(other.count) > 0 else merged
        self.update_from_moments(merged.mean, merged.var, float(merged.count))

    def float32_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float32 ``mean`` and ``sqrt(var + eps)`` ``[*shape]`` that :meth:`normalize` uses."""
        return self.mean.to(torch.float32), torch.sqrt(self.var + self.epsilon).to(torch.float32)

    def normalize(self, x: torch.Tensor, moments: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``(x - mean) / sqrt(var + eps)``, clipped to ``[-clip, clip]``; float32 ``[..., *shape]``.

        ``moments``: :meth:`float32_moments` computed earlier, for many calls while the statistics
        stay the same (a rollout); the same numbers as without."""
        mean, std = moments if moments is not None else self.float32_moments()
        out = (x.to(torch.float32) - mean) / std
        return out.clamp(-self.clip, self.clip) if self.clip is not None else out

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """``x / sqrt(var + eps)`` without centering (reward scaling), clipped like normalize."""
        out = x.to(torch.float32) / torch.sqrt(self.var + self.epsilon).to(torch.float32)
        return out.clamp(-self.clip, self.clip) if self.clip is not None else out
