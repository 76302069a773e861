"""collect(): both autoreset modes, bootstrapping at truncation, rewards, episodes, actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from ppokit.advantages import gae
from ppokit.agent import Agent
from ppokit.batch import flatten
from ppokit.envs import VectorEnvs, make_envs
from ppokit.rollout import CollectorState, Rollout, Timings, collect
from tests.helpers import CLIPPED_ID, COUNTER_ID, RecordActionEnv, small_config


class Setup:
    def __init__(self, cfg):
        torch.manual_seed(0)
        self.cfg = cfg
        self.envs = make_envs(cfg)
        self.agent = Agent(self.envs.observation_space, self.envs.action_space, cfg.model, cfg.env)
        self.storage = Rollout.allocate(self.agent, self.envs, cfg.rollout.num_steps, torch.device("cpu"))
        self.state = CollectorState.start(self.envs.reset())
        self.timings = Timings()

    def collect(self):
        return collect(self.agent, self.envs, self.state, self.storage, self.cfg.rollout.gamma, self.timings)

    def value(self, obs) -> torch.Tensor:
        with torch.no_grad():
            return self.agent(torch.as_tensor(np.asarray(obs), dtype=torch.float32))[1]

    def close(self):
        self.envs.close()


@pytest.fixture
def make_setup():
    made = []

    def make(cfg):
        made.append(Setup(cfg))
        return made[-1]

    yield make
    for setup in made:
        setup.close()


def counter_config(num_steps=12, **env):
    return small_config(COUNTER_ID, rollout={"num_envs": 2, "num_steps": num_steps}, env={"vector": "sync", **env})


# ---------------------------------------------------------------------------- SAME_STEP


def test_same_step_truncation_bootstraps_from_final_observation(make_setup):
    s = make_setup(counter_config())
    assert s.envs.autoreset_mode == AutoresetMode.SAME_STEP
    episodes = s.collect()
    r = s.storage
    counts = r.obs[:, :, 0]
    assert counts[:, 0].tolist() == [t % 5 for t in range(12)]  # the reset obs follows the final one
    truncated_at = [4, 9]
    assert torch.nonzero(r.truncated[:, 0]).flatten().tolist() == truncated_at
    assert not r.terminated.any() and r.valid.all()
    final_value = s.value([[5.0, 0.0]])[0]
    for t in truncated_at:
        assert torch.allclose(r.next_values[t], final_value.expand(2))
        assert not torch.allclose(r.next_values[t], r.values[t + 1])  # V(reset obs) would be wrong
    for t in set(range(11)) - set(truncated_at):
        assert torch.equal(r.next_values[t], r.values[t + 1])
    assert torch.allclose(r.next_values[11], s.value(s.state.obs))  # V(obs after the last step)
    assert torch.allclose(r.values, s.value(r.obs.reshape(-1, 2)).reshape(12, 2))
    # Rewards and episodes: count 1..5 in each 5-step episode.
    assert r.rewards[:, 0].tolist() == [float(t % 5 + 1) for t in range(12)]
    assert episodes.returns == [15.0] * 4 and episodes.lengths == [5] * 4
    # The unfinished episode carries over, and its return is completed by the next collect.
    assert s.state.episode_return.tolist() == [3.0, 3.0] and s.state.episode_length.tolist() == [2, 2]
    more = s.collect()
    assert more.returns[:2] == [15.0, 15.0] and more.lengths[:2] == [5, 5]


def test_same_step_termination_does_not_bootstrap(make_setup):
    s = make_setup(counter_config(kwargs={"terminate_at": 3}))
    episodes = s.collect()
    r = s.storage
    assert torch.nonzero(r.terminated[:, 0]).flatten().tolist() == [2, 5, 8, 11]
    assert not r.truncated.any()
    advantages, returns = gae(r.rewards, r.values, r.next_values, r.terminated, r.truncated, 0.9, 0.8)
    for t in (2, 5, 8):
        assert torch.allclose(advantages[t], r.rewards[t] - r.values[t])  # no gamma * V(next)
        assert torch.allclose(returns[t], r.rewards[t])
    assert episodes.returns == [6.0] * 8 and episodes.lengths == [3] * 8


def test_truncation_and_termination_on_the_same_step_is_termination(make_setup):
    s = make_setup(counter_config(kwargs={"terminate_at": 5}))  # time limit is 5 too
    s.collect()
    assert s.storage.terminated[4].all() and not s.storage.truncated.any()


# ---------------------------------------------------------------------------- NEXT_STEP


def cartpole_successor(obs: np.ndarray, action: int) -> np.ndarray:
    """The single-env CartPole dynamics from ``obs`` under ``action`` (no reset)."""
    env = gym.make("CartPole-v1").unwrapped
    env.reset(seed=0)
    env.state = np.array(obs, dtype=np.float64)
    return env.step(int(action))[0]


@pytest.mark.parametrize("max_episode_steps", [None, 12])
def test_next_step_reset_transition_is_invalid(make_setup, max_episode_steps):
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    cfg = small_config("CartPole-v1", rollout={"num_envs": 3, "num_steps": 60}, env={"kwargs": kwargs})
    s = make_setup(cfg)
    assert s.envs.autoreset_mode == AutoresetMode.NEXT_STEP
    episodes = s.collect()
    r = s.storage
    done = r.terminated | r.truncated
    assert (r.truncated.any() if max_episode_steps else r.terminated.any())
    expected_valid = torch.ones_like(r.valid)
    expected_valid[1:] = ~done[:-1]
    assert torch.equal(r.valid, expected_valid)
    assert not (done & ~r.valid).any()
    assert (r.rewards[~r.valid] == 0).all() and (r.rewards[r.valid] == 1).all()
    batch = flatten(r, *gae(r.rewards, r.values, r.next_values, r.terminated, r.truncated, 0.99, 0.95))
    assert torch.equal(batch.weights, r.valid.reshape(-1).float())
    checked = 0
    for t, env in torch.nonzero(done[:-1]).tolist():
        final = r.obs[t + 1, env].numpy()  # NEXT_STEP: the obs after a done is the true final obs
        assert np.allclose(final, cartpole_successor(r.obs[t, env].numpy(), r.actions[t, env]), atol=1e-5)
        if t + 2 < 60:  # then comes a reset obs (CartPole resets uniformly in [-0.05, 0.05])
            assert np.abs(r.obs[t + 2, env].numpy()).max() <= 0.05
        assert torch.allclose(r.next_values[t, env], s.value(final[None])[0])
        if r.truncated[t, env]:
            assert abs(final[2]) < 0.2095 and abs(final[0]) < 2.4  # a live state: bootstrapping matters
        checked += 1
    assert checked >= 3
    # Episode bookkeeping: every valid step counts, each episode once.
    assert sum(episodes.lengths) + int(s.state.episode_length.sum()) == int(r.valid.sum())
    assert episodes.returns == [float(n) for n in episodes.lengths]
    if max_episode_steps:
        assert max(episodes.lengths) == max_episode_steps


def test_next_step_on_the_counter_env(make_setup):
    """NEXT_STEP with exactly known values: SyncVectorEnv in NEXT_STEP mode on the 5-step counter."""
    s = make_setup(counter_config())
    s.envs.close()
    vector = gym.vector.SyncVectorEnv([lambda: gym.make(COUNTER_ID)] * 2, autoreset_mode=AutoresetMode.NEXT_STEP)
    s.envs = VectorEnvs(vector, COUNTER_ID, AutoresetMode.NEXT_STEP, seed=0)
    s.state = CollectorState.start(s.envs.reset())
    episodes = s.collect()
    r = s.storage
    assert r.obs[:, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]  # final obs, then the reset one
    assert torch.nonzero(r.truncated[:, 0]).flatten().tolist() == [4, 10]
    assert torch.nonzero(~r.valid[:, 0]).flatten().tolist() == [5, 11]
    assert r.rewards[:, 0].tolist() == [1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0]
    final_value = s.value([[5.0, 0.0]])[0]
    assert torch.allclose(r.next_values[4], final_value.expand(2))
    assert torch.allclose(r.next_values[10], final_value.expand(2))
    assert episodes.returns == [15.0] * 4 and episodes.lengths == [5] * 4
    advantages, _ = gae(r.rewards, r.values, r.next_values, r.terminated, r.truncated, 0.9, 0.95)
    # The truncated step bootstraps from V(final obs) and does not look past it.
    assert torch.allclose(advantages[4], r.rewards[4] + 0.9 * final_value - r.values[4])


def test_next_step_done_on_the_last_step_carries_over(make_setup):
    cfg = small_config("CartPole-v1", rollout={"num_envs": 2, "num_steps": 6}, env={"kwargs": {"max_episode_steps": 6}})
    s = make_setup(cfg)
    s.collect()
    assert s.storage.truncated[5].all()
    assert torch.allclose(s.storage.next_values[5], s.value(s.state.obs))  # the final obs
    assert s.state.next_is_reset.all()
    episodes = s.collect()
    assert not s.storage.valid[0].any() and s.storage.valid[1:].all()
    assert s.storage.rewards[0].tolist() == [0.0, 0.0]
    assert episodes.lengths == []  # the reset step is not counted as part of any episode
    assert s.state.episode_length.tolist() == [5, 5]


# ---------------------------------------------------------------------------- rewards and actions


def test_reward_scaling_keeps_raw_episode_returns(make_setup):
    s = make_setup(counter_config(num_steps=20, normalize_reward=True, clip_reward=1000.0))
    episodes = s.collect()
    assert episodes.returns == [15.0] * 8
    normalizer = s.agent.return_normalizer
    assert float(normalizer.count) == 40
    std = float(torch.sqrt(normalizer.var + normalizer.epsilon))
    raw = torch.tensor([float(t % 5 + 1) for t in range(20)])
    assert torch.allclose(s.storage.rewards[:, 0], raw / std, atol=1e-5)
    # The statistics are of the discounted return, reset at episode ends.
    gamma = s.cfg.rollout.gamma
    discounted = [sum(gamma ** (k - j) * j for j in range(1, k + 1)) for k in range(1, 6)] * 4
    assert float(normalizer.mean) == pytest.approx(np.mean(discounted))


def test_continuous_actions_store_the_unclipped_sample(make_setup):
    RecordActionEnv.received.clear()
    cfg = small_config(CLIPPED_ID, rollout={"num_envs": 2, "num_steps": 30}, model={"log_std_init": 1.0})
    s = make_setup(cfg)
    s.collect()
    r = s.storage
    sent = np.stack(RecordActionEnv.received)  # [T * N, 2] in stepping order
    stored = r.actions.reshape(-1, 2).numpy()
    assert (np.abs(stored) > 1).any(), "the test needs samples outside the bounds"
    assert np.array_equal(sent, np.clip(stored, -1, 1))
    assert r.actions.dtype == torch.float32 and r.actions.shape == (30, 2, 2)
    # The log-probability is that of the unclipped sample.
    recomputed = s.agent.head.log_prob(r.policy_outputs.reshape(60, -1), r.actions.reshape(60, 2))
    assert torch.allclose(recomputed, r.log_probs.reshape(-1), atol=1e-5)


def test_timings_accumulate(make_setup):
    s = make_setup(counter_config())
    s.collect()
    assert s.timings.env > 0 and s.timings.inference > 0
