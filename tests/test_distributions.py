"""Action heads agree with torch.distributions; sampling, modes and env actions are right."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import distributions as D

from ppokit.distributions import CategoricalHead, DiagGaussianHead, MultiCategoricalHead, head_for

SPACES = {
    "discrete": gym.spaces.Discrete(4),
    "discrete_start": gym.spaces.Discrete(3, start=-1),
    "multidiscrete": gym.spaces.MultiDiscrete([3, 2, 4]),
    "multibinary": gym.spaces.MultiBinary(3),
    "box": gym.spaces.Box(-2.0, 1.0, (3,), np.float32),
}


def outputs(head, batch: int = 5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, head.num_outputs, generator=generator)


@pytest.mark.parametrize("name", list(SPACES))
def test_log_prob_and_entropy_match_torch(name):
    head = head_for(SPACES[name])
    out = outputs(head)
    torch.manual_seed(1)
    actions = head.sample(out)
    dist = head.torch_dist(out)
    assert head.log_prob(out, actions).shape == (5,)
    assert torch.allclose(head.log_prob(out, actions), dist.log_prob(actions), atol=1e-5)
    assert torch.allclose(head.entropy(out), dist.entropy(), atol=1e-5)


def test_kl_matches_torch():
    for head in (head_for(SPACES["discrete"]), head_for(SPACES["box"])):
        old, new = outputs(head, seed=0), outputs(head, seed=1)
        expected = D.kl_divergence(head.torch_dist(old), head.torch_dist(new))
        assert torch.allclose(head.kl(old, new), expected, atol=1e-5)
        assert torch.allclose(head.kl(old, old), torch.zeros(5), atol=1e-6)
    head = head_for(SPACES["multidiscrete"])
    old, new = outputs(head, seed=0), outputs(head, seed=1)
    expected = sum(
        D.kl_divergence(D.Categorical(logits=o), D.Categorical(logits=n))
        for o, n in zip(old.split([3, 2, 4], -1), new.split([3, 2, 4], -1))
    )
    assert torch.allclose(head.kl(old, new), expected, atol=1e-5)


def test_categorical_sample_frequencies():
    head = CategoricalHead(3)
    probs = torch.tensor([0.2, 0.5, 0.3])
    torch.manual_seed(0)
    samples = head.sample(probs.log().expand(20000, 3))
    frequencies = torch.bincount(samples, minlength=3).float() / 20000
    assert torch.allclose(frequencies, probs, atol=0.015)
    assert samples.dtype == torch.int64


def test_gaussian_sample_moments_and_mode():
    head = DiagGaussianHead(SPACES["box"])
    mean = torch.tensor([0.5, -1.0, 3.0])
    log_std = torch.tensor([0.0, -1.0, 0.5])
    out = torch.cat([mean, log_std]).expand(20000, 6)
    torch.manual_seed(0)
    samples = head.sample(out)
    assert torch.allclose(samples.mean(0), mean, atol=0.05)
    assert torch.allclose(samples.std(0), log_std.exp(), atol=0.05)
    assert torch.equal(head.mode(out[:2]), mean.expand(2, 3))


def test_box_to_env_clips_a_copy():
    head = DiagGaussianHead(SPACES["box"])
    actions = np.array([[-5.0, 0.5, 7.0]], np.float32)
    env_actions = head.to_env(actions)
    assert env_actions.tolist() == [[-2.0, 0.5, 1.0]]
    assert actions.tolist() == [[-5.0, 0.5, 7.0]]  # the sample itself is untouched


def test_discrete_start_offsets_env_actions():
    head = head_for(SPACES["discrete_start"])
    assert head.to_env(np.array([0, 1, 2])).tolist() == [-1, 0, 1]
    md = MultiCategoricalHead(np.array([2, 3]), np.array([1, -1]))
    assert md.to_env(np.array([[0, 0], [1, 2]])).tolist() == [[1, -1], [2, 1]]


@pytest.mark.parametrize("name", list(SPACES))
def test_env_actions_belong_to_the_space(name):
    space = SPACES[name]
    head = head_for(space)
    torch.manual_seed(0)
    out = outputs(head, batch=50) * 5
    for actions in (head.sample(out), head.mode(out)):
        env_actions = head.to_env(actions.numpy())
        assert all(space.contains(np.asarray(a, dtype=space.dtype)) for a in env_actions)


def test_mode_is_most_likely():
    head = CategoricalHead(4)
    out = torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, 0.0, 0.0, 0.0]])
    assert head.mode(out).tolist() == [1, 0]


def test_unsupported_space():
    with pytest.raises(ValueError):
        head_for(gym.spaces.Box(0, 10, (2,), np.int64))
