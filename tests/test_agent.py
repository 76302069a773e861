"""Agent: shapes, single vs batch acting, normalizer inside the module, dist()."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.agent import Agent
from ppokit.config import EnvConfig, ModelConfig

BOX = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(3)


def build(action_space=DISCRETE, observation_space=BOX, **env) -> Agent:
    torch.manual_seed(0)
    return Agent(observation_space, action_space, ModelConfig(hidden_sizes=[16]), EnvConfig(**env))


@pytest.mark.parametrize("shared", [False, True])
def test_forward_shapes(shared):
    torch.manual_seed(0)
    agent = Agent(BOX, gym.spaces.Discrete(3), ModelConfig(hidden_sizes=[8, 8], shared_trunk=shared))
    policy_out, value = agent(torch.zeros(5, 3))
    assert policy_out.shape == (5, 3) and value.shape == (5,)
    assert (agent.critic_trunk is None) == shared
    gaussian = build(gym.spaces.Box(-1, 1, (2,), np.float32))
    policy_out, _ = gaussian(torch.zeros(4, 3))
    assert policy_out.shape == (4, 4) and torch.equal(policy_out[:, 2:], torch.zeros(4, 2))  # log_std_init 0


def test_act_single_and_batch_agree():
    agent = build()
    obs = np.random.default_rng(0).uniform(-1, 1, (6, 3)).astype(np.float32)
    batch = agent.act(obs)
    assert batch.shape == (6,)
    singles = [agent.act(o) for o in obs]
    assert [int(a) for a in singles] == batch.tolist()
    assert np.ndim(singles[0]) == 0
    assert isinstance(agent.value(obs[0]), float)
    assert agent.value(obs).shape == (6,)
    assert agent.value(obs[0]) == pytest.approx(float(agent.value(obs)[0]), abs=1e-6)
    assert agent.act(obs.astype(np.float64)).tolist() == batch.tolist()  # float64 input works
    assert agent.act(obs.tolist()).tolist() == batch.tolist()  # so do lists


def test_deterministic_act_is_the_mode_and_sampling_uses_the_torch_seed():
    agent = build()
    obs = torch.zeros(1, 3)
    assert int(agent.act(np.zeros(3, np.float32))) == int(agent(obs)[0].argmax())
    big = np.random.default_rng(1).uniform(-1, 1, (200, 3)).astype(np.float32)
    torch.manual_seed(5)
    first = agent.act(big, deterministic=False)
    torch.manual_seed(5)
    assert np.array_equal(first, agent.act(big, deterministic=False))
    assert len(set(first.tolist())) > 1  # near-uniform initial policy: samples vary


def test_continuous_act_is_clipped_to_the_bounds():
    agent = build(gym.spaces.Box(-0.5, 0.5, (2,), np.float32))
    with torch.no_grad():
        agent.policy_head.bias.copy_(torch.tensor([3.0, -3.0]))
    action = agent.act(np.zeros(3, np.float32))
    assert action.tolist() == [0.5, -0.5] and action.shape == (2,)


def test_discrete_observations_one_hot():
    agent = build(observation_space=gym.spaces.Discrete(4))
    assert agent.act(2).shape == () and agent.act([0, 1, 3]).shape == (3,)
    values = agent.value(np.arange(4))
    assert len(set(np.round(values, 6).tolist())) > 1


def test_normalizer_lives_in_the_agent():
    agent = build(normalize_obs=True, normalize_reward=True)
    keys = set(agent.state_dict())
    assert {"obs_normalizer.mean", "obs_normalizer.var", "return_normalizer.var"} <= keys
    obs = torch.tensor([[0.5, 0.5, 0.5]])
    before = agent(obs)[1]
    agent.obs_normalizer.update(torch.randn(100, 3) * 3 + 2)
    assert not torch.allclose(agent(obs)[1], before)
    expected = agent.obs_normalizer.normalize(obs)
    assert torch.allclose(agent.preprocess(obs), expected)
    assert build().obs_normalizer is None
    # Images are not normalized by the running statistics.
    image = build(observation_space=gym.spaces.Box(0, 255, (36, 36, 3), np.uint8), normalize_obs=True)
    assert image.obs_normalizer is None and image.shared_trunk


def test_dist_matches_the_head():
    agent = build()
    obs = torch.randn(7, 3)
    dist = agent.head.torch_dist(agent(obs)[0])
    actions = dist.sample()
    assert dist.log_prob(actions).shape == (7,) and dist.entropy().shape == (7,)
    assert torch.allclose(dist.log_prob(actions), agent.head.log_prob(agent(obs)[0], actions))


def test_initial_policy_is_near_uniform():
    agent = build(gym.spaces.Discrete(4))
    probs = torch.softmax(agent(torch.randn(10, 3))[0], -1)
    assert torch.allclose(probs, torch.full_like(probs, 0.25), atol=0.02)


@pytest.mark.parametrize("action_space, model", [
    (gym.spaces.Box(-1, 1, (2,), np.float32), {}),  # the MuJoCo case: a free log-std, its std computed once
    (gym.spaces.Box(-1, 1, (2,), np.float32), {"log_std_min": -0.4, "log_std_max": 0.3}),
    (gym.spaces.Box(-1, 1, (2,), np.float32), {"state_dependent_std": True}),
    (DISCRETE, {}),
    (gym.spaces.MultiDiscrete([2, 3]), {}),
])
@pytest.mark.parametrize("normalize_obs", [True, False])
def test_rollout_sampler_draws_what_the_policy_and_its_head_draw(action_space, model, normalize_obs):
    torch.manual_seed(0)
    agent = Agent(BOX, action_space, ModelConfig(hidden_sizes=[16, 16], **model),
                  EnvConfig(normalize_obs=normalize_obs))
    with torch.no_grad():
        if agent.log_std is not None:
            agent.log_std.copy_(torch.tensor([-0.9, 0.8]))  # outside the bounds of the second case, on both sides
        if normalize_obs:
            agent.obs_normalizer.update(torch.randn(50, 3, dtype=torch.float64) * 4 + 1)
    observations = [torch.randn(n, 3, dtype=torch.float64) * 3 for n in (1, 1, 5)]
    with torch.inference_mode():
        torch.manual_seed(7)
        expected = [agent.head.sample(agent.policy(obs)) for obs in observations]
        sample = agent.rollout_sampler()
        torch.manual_seed(7)
        assert all(torch.equal(sample(obs), want) for obs, want in zip(observations, expected))
