"""The flat training batch ``[B, ...]`` (B = T * N) and its shuffled minibatches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ppokit.rollout import Rollout


@dataclass
class Samples:
    """The fields every loss reads, one row per sample: obs ``[B, *obs]``; actions ``[B]`` or
    ``[B, A]``; log_probs, values, advantages, returns, weights ``[B]`` float32 (weights is 1 for a
    learnable step, 0 for a NEXT_STEP reset transition); policy_outputs ``[B, P]`` (the acting policy's)."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    weights: torch.Tensor
    policy_outputs: torch.Tensor


@dataclass
class Batch(Samples):
    """A rollout flattened over time and envs, with advantages and returns: the fields of
    :class:`Samples` over B = T * N samples. Optional (``None`` when a batch is built by hand):
    rewards ``[B]`` float32 (as learned from, i.e. scaled if reward scaling is on), terminated,
    truncated ``[B]`` bool, for algorithms that compute their own returns (REINFORCE);
    next_values ``[B]`` float32, the acting critic's value of each step's next state (the GAE
    bootstraps), for algorithms that recompute the advantages. Sample ``i`` is step ``i // N``
    of env ``i % N``: :func:`time_major` undoes the flattening.
    """

    rewards: torch.Tensor | None = None
    terminated: torch.Tensor | None = None
    truncated: torch.Tensor | None = None
    next_values: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.obs.shape[0]

    def __getitem__(self, index: torch.Tensor) -> Batch:
        return Batch(**{name: value[index] for name, value in self.as_dict().items()})

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The tensors by field name (fields that are ``None`` left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class Minibatch(Samples):
    """What a loss function sees: the :class:`Samples` fields of M samples of a Batch (``[M, ...]``)
    plus what every loss derives from them, computed once per minibatch.

    mean_weights ``[M]``: ``weights / weights.sum()``, so a mean over the valid samples is one dot
    product (:func:`masked_mean`). normalized_advantages ``[M]``: set when the
    minibatch is the whole batch (then the same every epoch, so computed once). want_stats: False
    when the step may skip its loss statistics (every epoch but the last, see ``run_epochs``).
    """

    mean_weights: torch.Tensor
    normalized_advantages: torch.Tensor | None = None
    want_stats: bool = True

    @classmethod
    def of(cls, samples: dict[str, torch.Tensor], want_stats: bool = True,
           advantages_normalized: bool = False) -> Minibatch:
        """From a ``name -> [M, ...]`` dict of Batch fields (others, e.g. rewards, are ignored).
        ``advantages_normalized``: the advantages were normalized already (over the whole batch),
        so they are also the minibatch's ``normalized_advantages``."""
        weights = samples["weights"]
        return cls(**{name: samples[name] for name in SAMPLE_FIELDS},
                   mean_weights=weights / weights.sum(-1, keepdim=True).clamp(min=1.0), want_stats=want_stats,
                   normalized_advantages=samples["advantages"] if advantages_normalized else None)

    def with_stats(self, want_stats: bool) -> Minibatch:
        return self if want_stats == self.want_stats else replace(self, want_stats=want_stats)


SAMPLE_FIELDS = tuple(f.name for f in fields(Samples))


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
        rewards=flat(rollout.rewards),
        terminated=flat(rollout.terminated),
        truncated=flat(rollout.truncated),
        next_values=flat(rollout.next_values),
    )


def time_major(x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """``[T * N, ...]`` -> ``[T, N, ...]``: the inverse of :func:`flatten` for one field."""
    return x.reshape(num_steps, -1, *x.shape[1:])


def minibatches(data: dict[str, torch.Tensor], minibatch_size: int) -> list[dict[str, torch.Tensor]]:
    """The samples of ``data`` (every value ``[B, ...]``) in a new random order, cut into
    contiguous minibatch views of ``minibatch_size``; the last is smaller when the sizes do not
    divide, so every sample is used once. The samples are gathered once, not per minibatch.

    When one minibatch holds the whole batch, ``[data]`` is returned as it is: the order of a
    full-batch minibatch cannot change its gradient.
    """
    size = len(next(iter(data.values())))
    if minibatch_size >= size:
        return [data]
    order = torch.randperm(size, device=next(iter(data.values())).device)
    shuffled = {k: v[order] for k, v in data.items()}
    return [{k: v[i : i + minibatch_size] for k, v in shuffled.items()} for i in range(0, size, minibatch_size)]


def weighted_mean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B]`` over the samples with weight 1 (0-dim)."""
    return (x * weights).sum(-1) / weights.sum(-1).clamp(min=1.0)  # [K, M] (a population) -> [K]


def masked_mean(x: torch.Tensor, mean_weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [M]`` over the valid samples, given ``mean_weights [M]`` (weights / their sum,
    as in every :class:`Minibatch`). One dot product; ``[K, M]`` (a population) gives ``[K]``."""
    if x.dim() == 1:
        return torch.dot(x, mean_weights)
    return torch.matmul(x.unsqueeze(-2), mean_weights.unsqueeze(-1))[..., 0, 0]  # one mean per agent, [K]


def normalize_advantages(
    advantages: torch.Tensor,
    weights: torch.Tensor,
    mean_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = weighted_mean,
) -> torch.Tensor:
    """``(A - mean) / (std + 1e-8)`` over the valid samples of the minibatch, ``[M]``.

    ``mean_fn=ppokit.algos.common.global_weighted_mean`` takes the statistics over every process's batch."""
    mean = mean_fn(advantages, weights)[..., None]  # [1], or [K, 1] for a population's [K, M]
    var = mean_fn((advantages - mean).square(), weights)[..., None]
    return (advantages - mean) / (var.sqrt() + 1e-8)


def policy_advantages(minibatch: Minibatch, norm_adv: bool) -> torch.Tensor:
    """The minibatch's advantages ``[M]``, normalized over its valid samples if ``norm_adv``
    (computed once per update when the minibatch is the whole batch)."""
    if not norm_adv:
        return minibatch.advantages
    if minibatch.normalized_advantages is not None:
        return minibatch.normalized_advantages
    return normalize_advantages(minibatch.advantages, minibatch.mean_weights, mean_fn=masked_mean)
