"""Advantage estimation: pure ``[T, N] -> [T, N]`` functions.

The backward recursion runs in numpy (float64): T small vector ops are far cheaper there than
as torch ops, and the result is copied back to the input's device once.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al. 2016, eq. 16), ``[T, N]`` each.

    ``delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t`` and
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` with ``done = terminated | truncated``:
    a time limit bootstraps from V(final obs) (``next_values``) but still ends the sum.
    Returns ``(advantages, returns)`` with ``returns = advantages + values`` (float32).
    """
    r, v, nv = _as_numpy(rewards), _as_numpy(values), _as_numpy(next_values)
    term = terminated.cpu().numpy()
    done = term | truncated.cpu().numpy()
    deltas = r + gamma * np.where(term, 0.0, nv) - v
    carry = np.where(done, 0.0, gamma * gae_lambda)
    advantages = np.zeros_like(r)
    running = np.zeros(r.shape[1:])
    for t in range(r.shape[0] - 1, -1, -1):
        running = deltas[t] + carry[t] * running
        advantages[t] = running
    out = torch.as_tensor(advantages, dtype=torch.float32, device=rewards.device)
    return out, out + values


def discounted_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Monte-Carlo returns ``G_t = r_t + gamma * G_{t+1}``, ``[T, N]``.

    Bootstraps from ``next_values`` where the sum is cut without a terminal state (a time limit,
    or the end of the rollout); pass zeros for pure REINFORCE. Equal to GAE with lambda = 1.
    """
    # Only the cut points bootstrap: with zero values, GAE(lambda=1) would otherwise add
    # gamma * next_values at every step (they no longer telescope against V(s_t)).
    cut = truncated.clone()
    cut[-1] = True
    bootstrap = torch.where(cut & ~terminated, next_values, torch.zeros_like(next_values))
    advantages, returns = gae(rewards, torch.zeros_like(rewards), bootstrap, terminated, truncated, gamma, 1.0)
    return returns


def refreshed_next_values(
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
) -> torch.Tensor:
    """The values of the next states ``[T, N]`` after the critic changed: ``values[t + 1]`` (the
    new critic on the rollout's own next observation) where step ``t`` did not end its episode,
    else ``next_values[t]`` as the rollout computed them (the final observation of an episode cut
    by a time limit is not among the rollout's observations in every autoreset mode), and
    ``next_values[T - 1]`` for the last step (the observation after the rollout is not stored).
    At terminal steps the value is unused (GAE does not bootstrap there)."""
    fresh = next_values.clone()
    within = ~(terminated[:-1] | truncated[:-1])
    fresh[:-1] = torch.where(within, values[1:], next_values[:-1])
    return fresh
