"""The flat training batch ``[B, ...]`` (B = T * N) and its shuffled minibatches."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ppokit.rollout import Rollout


@dataclass
class Batch:
    """A rollout flattened over time and envs, with advantages and returns.

    obs ``[B, *obs]``; actions ``[B]`` or ``[B, A]``; log_probs, values, advantages, returns,
    weights ``[B]`` float32 (weights is 1 for a learnable step, 0 for a NEXT_STEP reset
    transition); policy_outputs ``[B, P]``.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    weights: torch.Tensor
    policy_outputs: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def __getitem__(self, index: torch.Tensor) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def flatten(rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
    """``[T, N, ...]`` -> ``[T * N, ...]``."""

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *x.shape[2:])

    return Batch(
        obs=flat(rollout.obs),
        actions=flat(rollout.actions),
        log_probs=flat(rollout.log_probs),
        values=flat(rollout.values),
        advantages=flat(advantages),
        returns=flat(returns),
        weights=flat(rollout.valid).to(torch.float32),
        policy_outputs=flat(rollout.policy_outputs),
    )


def minibatch_indices(batch_size: int, minibatch_size: int, device: torch.device) -> list[torch.Tensor]:
    """A random permutation of ``range(batch_size)`` cut into chunks of ``minibatch_size``.

    The last chunk is smaller when the sizes do not divide, so every sample is used once.
    """
    return list(torch.randperm(batch_size, device=device).split(minibatch_size))


def weighted_mean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B]`` over the samples with weight 1 (0-dim)."""
    return (x * weights).sum() / weights.sum().clamp(min=1.0)
