"""PPO loss terms (golden values of DESIGN.md) and one PPO update on a fixed batch."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.agent import Agent
from ppokit.algos import ALGOS
from ppokit.algos.common import clipped_surrogate, explained_variance, linear_schedule, value_loss
from ppokit.batch import SAMPLE_FIELDS, Batch, Minibatch, normalize_advantages, weighted_mean
from ppokit.distributions import approx_kl
from tests.helpers import small_config


def test_clipped_surrogate_golden():
    ratio = torch.tensor([0.5, 0.5, 1.5, 1.5])
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    objective = clipped_surrogate(ratio, advantages, torch.tensor(0.2))
    assert objective.tolist() == pytest.approx([0.5, -0.8, 1.2, -1.5])
    assert float(-objective.mean()) == pytest.approx(0.15)
    assert clipped_surrogate(ratio, advantages, None).tolist() == pytest.approx([0.5, -0.5, 1.5, -1.5])


def test_approx_kl_k3_golden():
    log_ratio = torch.log(torch.tensor([0.5, 2.0]))
    assert float(approx_kl(log_ratio).mean()) == pytest.approx(0.25, abs=5e-3)
    expected = [(r - 1) - math.log(r) for r in (0.5, 2.0)]
    assert approx_kl(log_ratio).tolist() == pytest.approx(expected)
    assert float(approx_kl(torch.zeros(3)).abs().max()) == 0.0


def _minibatch(**fields: torch.Tensor) -> Minibatch:
    """A Minibatch with the given fields and zeros for the others."""
    size = len(fields["weights"])
    return Minibatch.of({name: fields.get(name, torch.zeros(size)) for name in SAMPLE_FIELDS})


def test_weighted_statistics_ignore_invalid_samples():
    x = torch.tensor([1.0, 2.0, 100.0])
    weights = torch.tensor([1.0, 1.0, 0.0])
    assert float(weighted_mean(x, weights)) == pytest.approx(1.5)
    normalized = normalize_advantages(x, weights / weights.sum())
    assert normalized[:2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)
    minibatch = _minibatch(returns=torch.tensor([1.0, 1.0, 50.0]), weights=weights, values=torch.zeros(3))
    assert float(value_loss(torch.tensor([0.0, 3.0, 0.0]), minibatch, None)) == pytest.approx(0.5 * (1 + 4) / 2)


def test_clipped_value_loss():
    minibatch = _minibatch(returns=torch.tensor([2.0]), weights=torch.ones(1), values=torch.tensor([0.0]))
    # New value 1.0 is clipped to 0.2 around the old 0.0: max((1-2)^2, (0.2-2)^2) = 3.24.
    assert float(value_loss(torch.tensor([1.0]), minibatch, torch.tensor(0.2))) == pytest.approx(0.5 * 3.24)


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    weights = torch.ones(4)
    assert explained_variance(returns, returns, weights) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(4), returns, weights) == pytest.approx(0.0)
    assert math.isnan(explained_variance(torch.zeros(2), torch.ones(2), torch.ones(2)))


def test_linear_schedule():
    assert linear_schedule(1e-3, 0.25, True) == pytest.approx(7.5e-4)
    assert linear_schedule(1e-3, 0.25, False) == 1e-3


def test_ppo_update_improves_the_surrogate_and_reports_metrics():
    torch.manual_seed(0)
    cfg = small_config()
    cfg.ppo.update_epochs = 4
    cfg.ppo.learning_rate = 1e-2
    agent = Agent(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2), cfg.model, cfg.env)
    obs = torch.randn(64, 3)
    with torch.no_grad():
        policy_out, values = agent(obs)
    actions = agent.head.sample(policy_out)
    log_probs = agent.head.log_prob(policy_out, actions)
    advantages = torch.where(actions == 1, 1.0, -1.0)  # action 1 is good everywhere
    batch = Batch(obs, actions, log_probs, values, advantages, values + advantages, torch.ones(64), policy_out)
    algo = ALGOS["ppo"](agent, cfg, path="eager")
    stats = algo.update(batch, progress=0.0)
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "learning_rate"):
        assert key in stats and math.isfinite(stats[key]), key
    with torch.no_grad():
        new_probs = torch.softmax(agent(obs)[0], -1)[:, 1]
    assert float(new_probs.mean()) > float(torch.softmax(policy_out, -1)[:, 1].mean()) + 0.05
    assert stats["approx_kl"] > 0
