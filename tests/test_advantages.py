"""GAE and discounted returns against the hand-checked golden values of DESIGN.md."""

from __future__ import annotations

import pytest
import torch

from ppokit.advantages import discounted_returns, gae

REWARDS = [1.0, 2.0, 3.0]
VALUES = [1.0, 1.0, 1.0]


def column(values: list[float]) -> torch.Tensor:
    """``[T]`` -> ``[T, 1]`` (one env)."""
    return torch.tensor(values, dtype=torch.float32)[:, None]


def flags(*indices: int) -> torch.Tensor:
    out = torch.zeros(3, 1, dtype=torch.bool)
    for i in indices:
        out[i] = True
    return out


def run_gae(next_values, terminated=(), truncated=(), gamma=0.5, lam=0.5):
    advantages, returns = gae(column(REWARDS), column(VALUES), column(next_values), flags(*terminated),
                              flags(*truncated), gamma, lam)
    return advantages[:, 0].tolist(), returns[:, 0].tolist()


def test_no_boundary():
    advantages, returns = run_gae([1, 1, 4])
    assert advantages == pytest.approx([1.125, 2.5, 4.0])
    assert returns == pytest.approx([2.125, 3.5, 5.0])


def test_truncation_bootstraps_from_final_observation():
    advantages, _ = run_gae([1, 2, 4], truncated=[1])
    assert advantages == pytest.approx([1.0, 2.0, 4.0])


def test_termination_does_not_bootstrap():
    advantages, _ = run_gae([1, 2, 4], terminated=[1])
    assert advantages == pytest.approx([0.75, 1.0, 4.0])


def test_truncation_differs_from_termination():
    truncated, _ = run_gae([1, 2, 4], truncated=[1])
    terminated, _ = run_gae([1, 2, 4], terminated=[1])
    assert truncated != pytest.approx(terminated)


@pytest.mark.parametrize("lam, expected", [(1.0, [2.25, 3.5, 4.0]), (0.0, [0.5, 1.5, 4.0])])
def test_lambda_extremes(lam, expected):
    advantages, _ = run_gae([1, 1, 4], lam=lam)
    assert advantages == pytest.approx(expected)


def test_envs_are_independent_columns():
    """Two envs side by side give each env's own answer."""
    rewards = torch.tensor([REWARDS, REWARDS]).T
    values = torch.ones(3, 2)
    next_values = torch.tensor([[1.0, 1.0], [1.0, 2.0], [4.0, 4.0]])
    terminated = torch.zeros(3, 2, dtype=torch.bool)
    truncated = torch.zeros(3, 2, dtype=torch.bool)
    truncated[1, 1] = True
    advantages, returns = gae(rewards, values, next_values, terminated, truncated, 0.5, 0.5)
    assert advantages.shape == (3, 2) and returns.shape == (3, 2)
    assert advantages[:, 0].tolist() == pytest.approx([1.125, 2.5, 4.0])
    assert advantages[:, 1].tolist() == pytest.approx([1.0, 2.0, 4.0])
    assert torch.allclose(returns, advantages + values)


def test_discounted_returns_equal_monte_carlo():
    # G = r + gamma * G', bootstrapped from next_values only at the rollout end and at truncation.
    rewards = column(REWARDS)
    next_values = column([9.0, 9.0, 4.0])  # ignored except at the end (no boundaries)
    out = discounted_returns(rewards, next_values, flags(), flags(), 0.5)
    assert out[:, 0].tolist() == pytest.approx([1 + 0.5 * (2 + 0.5 * (3 + 0.5 * 4)), 2 + 0.5 * (3 + 0.5 * 4), 5.0])
    terminated = discounted_returns(rewards, next_values, flags(1), flags(), 0.5)
    assert terminated[:, 0].tolist() == pytest.approx([1 + 0.5 * 2, 2.0, 5.0])
    truncated = discounted_returns(rewards, next_values, flags(), flags(1), 0.5)
    assert truncated[:, 0].tolist() == pytest.approx([1 + 0.5 * (2 + 0.5 * 9), 2 + 0.5 * 9, 5.0])
