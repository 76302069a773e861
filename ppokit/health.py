"""Numerical health checks, once per iteration: the first non-finite observation, reward, value,
loss, gradient statistic or parameter becomes a :class:`TrainingError` that names where it appeared.

Vectorized over the stored rollout: nothing is checked per env step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ppokit.errors import TrainingError, quote

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.rollout import CollectorState, Rollout


def _first_non_finite(values: torch.Tensor) -> tuple[int, int, float] | None:
    """``(t, n, value)`` of the first non-finite entry of a ``[T, N, ...]`` float tensor, or None."""
    if not values.is_floating_point():
        return None
    bad = ~torch.isfinite(values)
    if not bool(bad.any()):
        return None
    per_step = bad.reshape(bad.shape[0], bad.shape[1], -1).any(-1)
    t, n = (int(i) for i in per_step.nonzero()[0])
    return t, n, float(values[t, n][bad[t, n]].reshape(-1)[0])


def check_rollout(iteration: int, env_id: str, storage: Rollout, collector: CollectorState, agent: Agent) -> None:
    """TrainingError naming the sub-env, step and iteration of the first non-finite observation or reward.

    One vectorized check per iteration over the stored rollout (nothing per env step). Rollout
    step t is the t-th ``envs.step`` call of the iteration: it returned ``obs[t + 1]`` and
    ``rewards[t]`` (and, on a time-limit truncation, the final observation behind ``next_values[t]``).
    """
    where = f"of iteration {iteration + 1}"
    found: list[tuple[int, int, int, str]] = []  # (step, order, sub-env, what)
    bad = _first_non_finite(storage.obs)
    if bad is not None:
        t, n, value = bad
        found.append((t - 1, 0, n, f"observation ({value})"))
    if bool(storage.truncated.any()):
        # V(final observation) is non-finite while the network is finite: the final observation is not.
        final = _first_non_finite(torch.where(storage.truncated, storage.next_values, 0.0)[..., None])
        if final is not None:
            found.append((final[0], 0, final[1], "final observation (at a time-limit truncation)"))
    bad = _first_non_finite(storage.rewards)
    if bad is not None and agent.return_normalizer is None:
        t, n, value = bad
        found.append((t, 1, n, f"reward ({value})"))
    if found:
        step, _, n, what = min(found)
        at = "from reset" if step < 0 else f"at rollout step {step}"
        raise TrainingError(f"env {quote(env_id)} sub-env {n} returned a non-finite {what} {at} {where}")
    if bad is not None:
        # Reward scaling spreads one bad reward over the whole batch; the raw episode sums still show which env.
        sums = np.asarray(collector.episode_return, dtype=np.float64)
        culprits = np.flatnonzero(~np.isfinite(sums))
        who = f"sub-env {int(culprits[0])}" if culprits.size else "a sub-env"
        raise TrainingError(f"env {quote(env_id)} {who} returned a non-finite reward during iteration "
                            f"{iteration + 1} (reward normalization is on, so the step is not known)")
    last = np.asarray(collector.obs)
    if np.issubdtype(last.dtype, np.floating) and not np.isfinite(last).all():
        n = int(np.flatnonzero(~np.isfinite(last.reshape(last.shape[0], -1)).all(-1))[0])
        raise TrainingError(f"env {quote(env_id)} sub-env {n} returned a non-finite observation "
                            f"at the last rollout step {where}")
    for values in (storage.values, storage.next_values):
        bad = _first_non_finite(values)
        if bad is not None:
            t, n, value = bad
            raise TrainingError(f"the value network returned a non-finite value ({value}) for sub-env {n} "
                                f"at rollout step {t} {where}")


# Statistics from update() that must be finite, in the order they are reported; the first one
# that is not names where the fault appeared.
WATCHED_STATS = {
    "policy_loss": "policy loss", "value_loss": "value loss", "loss": "loss", "entropy": "entropy",
    "approx_kl": "approximate KL", "kl": "KL divergence", "grad_norm": "gradient norm (the gradients)",
    "improvement": "surrogate improvement",
}


def check_update(iteration: int, stats: dict[str, float], agent: Agent) -> None:
    """TrainingError naming the first non-finite loss, gradient statistic or parameter after an update."""
    where = f"iteration {iteration + 1}"
    for key, label in WATCHED_STATS.items():
        value = stats.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise TrainingError(f"non-finite {label} ({key} = {value}) in the update of {where}")
    for key, value in stats.items():
        if isinstance(value, float) and math.isinf(value):
            raise TrainingError(f"non-finite {key} ({value}) in the update of {where}")
    for name, param in agent.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise TrainingError(f"parameter {name} became non-finite in the update of {where}")
