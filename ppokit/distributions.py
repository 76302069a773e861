"""Action distributions as plain tensor functions of the policy output.

The policy network emits one tensor ``out [B, P]`` per observation; an :class:`ActionHead` turns
it into log-probabilities, entropies, samples and exact KL divergences. Written with raw tensor
ops (no ``torch.distributions`` objects on the hot path) so they are cheap in eager mode and
compile into one graph; ``head.torch_dist(out)`` gives the equivalent torch Distribution, and the
tests check both agree. Their derivatives by hand, for the fast update path, are in
:mod:`ppokit.fast.heads`.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import distributions as D

LOG_2PI = math.log(2 * math.pi)


class ActionHead:
    """How policy outputs ``[B, P]`` map to actions. Subclasses fix P and the action dtype."""

    num_outputs: int

    def log_prob(self, out: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``[B, P]``, actions ``[B, ...]`` -> ``[B]``."""
        raise NotImplementedError

    def entropy(self, out: torch.Tensor) -> torch.Tensor:
        """``[B, P]`` -> ``[B]``."""
        raise NotImplementedError

    def kl(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """Exact KL(old || new) per sample, ``[B]``."""
        raise NotImplementedError

    def sample(self, out: torch.Tensor) -> torch.Tensor:
        """Random action ``[B, ...]`` (uses the global torch RNG)."""
        raise NotImplementedError

    def mode(self, out: torch.Tensor) -> torch.Tensor:
        """Most likely action ``[B, ...]``."""
        raise NotImplementedError

    def torch_dist(self, out: torch.Tensor) -> D.Distribution:
        """The same distribution as a ``torch.distributions`` object (batch shape ``[B]``)."""
        raise NotImplementedError

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Actions as the env accepts them (Box: clipped to the bounds; the sample stays unclipped)."""
        return actions


def _categorical_sample(logits: torch.Tensor) -> torch.Tensor:
    # Gumbel-max: argmax(logits + G) with G = -log(E), E ~ Exponential(1), samples softmax(logits).
    return torch.argmax(logits - torch.empty_like(logits).exponential_().log(), dim=-1)


def _categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def _categorical_kl(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    log_old = torch.log_softmax(old, dim=-1)
    log_new = torch.log_softmax(new, dim=-1)
    return (log_old.exp() * (log_old - log_new)).sum(-1)


class CategoricalHead(ActionHead):
    """Discrete(n): ``out`` are the n logits; actions ``[B]`` int64."""

    def __init__(self, n: int, start: int = 0):
        self.num_outputs = n
        self.start = start

    def log_prob(self, out, actions):
        return torch.log_softmax(out, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, out):
        return _categorical_entropy(out)

    def kl(self, old, new):
        return _categorical_kl(old, new)

    def sample(self, out):
        return _categorical_sample(out)

    def mode(self, out):
        return out.argmax(-1)

    def torch_dist(self, out):
        return D.Categorical(logits=out)

    def to_env(self, actions):
        return actions + self.start if self.start else actions


class MultiCategoricalHead(ActionHead):
    """MultiDiscrete(nvec): one Categorical per dimension; ``out [B, sum(nvec)]``, actions ``[B, K]``."""

    def __init__(self, nvec: np.ndarray, start: np.ndarray | None = None):
        self.nvec = [int(n) for n in np.asarray(nvec).reshape(-1)]
        self.shape = tuple(np.asarray(nvec).shape)
        self.start = None if start is None or not np.any(start) else np.asarray(start)
        self.num_outputs = sum(self.nvec)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, P]`` -> one ``[B, n_i]`` logits tensor per action dimension."""
        return torch.split(out, self.nvec, dim=-1)

    def log_prob(self, out, actions):
        actions = actions.long().reshape(*out.shape[:-1], -1)  # [.., B, dims]
        return sum(
            torch.log_softmax(logits, -1).gather(-1, actions[..., i : i + 1]).squeeze(-1)
            for i, logits in enumerate(self.split(out))
        )

    def entropy(self, out):
        return sum(_categorical_entropy(logits) for logits in self.split(out))

    def kl(self, old, new):
        return sum(_categorical_kl(o, n) for o, n in zip(self.split(old), self.split(new)))

    def sample(self, out):
        return torch.stack([_categorical_sample(logits) for logits in self.split(out)], dim=-1)

    def mode(self, out):
        return torch.stack([logits.argmax(-1) for logits in self.split(out)], dim=-1)

    def torch_dist(self, out):
        return _IndependentCategoricals([D.Categorical(logits=logits) for logits in self.split(out)])

    def to_env(self, actions):
        actions = actions.reshape(actions.shape[0], *self.shape)
        return actions + self.start if self.start is not None else actions


class _IndependentCategoricals(D.Distribution):
    """Product of Categoricals over the last action axis (for ``Agent.dist`` on MultiDiscrete)."""

    arg_constraints: dict = {}

    def __init__(self, parts: list[D.Categorical]):
        self.parts = parts
        super().__init__(batch_shape=parts[0].batch_shape, validate_args=False)

    def sample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        return torch.stack([p.sample(sample_shape) for p in self.parts], dim=-1)

    def log_prob(self, value):
        return sum(p.log_prob(value[..., i]) for i, p in enumerate(self.parts))

    def entropy(self):
        return sum(p.entropy() for p in self.parts)


class DiagGaussianHead(ActionHead):
    """Box(A): ``out [B, 2A]`` = mean and log-std; actions ``[B, A]`` float32 (unclipped)."""

    def __init__(self, space: gym.spaces.Box):
        self.action_dim = int(np.prod(space.shape))
        self.shape = tuple(space.shape)
        self.num_outputs = 2 * self.action_dim
        self.low = space.low.reshape(-1).astype(np.float32)
        self.high = space.high.reshape(-1).astype(np.float32)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[.., B, 2A]`` -> ``(mean [.., B, A], log_std [.., B, A])``."""
        return out[..., : self.action_dim], out[..., self.action_dim :]

    def log_prob(self, out, actions):
        mean, log_std = self.split(out)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - 0.5 * LOG_2PI).sum(-1)

    def entropy(self, out):
        _, log_std = self.split(out)
        return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)

    def kl(self, old, new):
        mean_old, log_std_old = self.split(old)
        mean_new, log_std_new = self.split(new)
        var_ratio = torch.exp(2 * (log_std_old - log_std_new))
        mean_term = (mean_old - mean_new).square() * torch.exp(-2 * log_std_new)
        return 0.5 * (var_ratio + mean_term - 1.0 - 2 * (log_std_old - log_std_new)).sum(-1)

    def sample(self, out):
        mean, log_std = self.split(out)
        return self.sample_around(mean, torch.exp(log_std))

    @staticmethod
    def sample_around(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """``mean [B, A]`` plus Gaussian noise of ``std`` (``[B, A]``, or ``[A]`` for every row)."""
        return mean + std * torch.randn_like(mean)

    def mode(self, out):
        return self.split(out)[0]

    def torch_dist(self, out):
        mean, log_std = self.split(out)
        return D.Independent(D.Normal(mean, log_std.exp()), 1)

    def to_env(self, actions):
        clipped = np.clip(actions, self.low, self.high)
        return clipped.reshape(actions.shape[0], *self.shape)


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(old || new), ``(r - 1) - log r``, per sample (``[M]``)."""
    return torch.expm1(log_ratio) - log_ratio


def head_for(space: gym.Space) -> ActionHead:
    """The action head for a Gymnasium action space."""
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(int(space.n), int(space.start))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiCategoricalHead(space.nvec, getattr(space, "start", None))
    if isinstance(space, gym.spaces.MultiBinary):
        return MultiCategoricalHead(np.full(space.shape, 2))
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return DiagGaussianHead(space)
    raise ValueError(f"unsupported action space {space}")
