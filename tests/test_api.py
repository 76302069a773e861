"""The Python API of CONTRACTS.md: train, act, value, save, load, evaluate."""

from __future__ import annotations

import json
from datetime import datetime

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppokit
import ppokit.cli
from tests.helpers import COUNTER_ID

SMALL = dict(rollout__num_envs=2, rollout__num_steps=16, ppo__minibatch_size=16, ppo_kl__minibatch_size=16,
             ppo__update_epochs=1, model__hidden_sizes=[8], eval_episodes=0, device="cpu")


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    return ppokit.train("CartPole-v1", algo="ppo", total_steps=64, seed=0,
                        run_dir=tmp_path_factory.mktemp("api") / "run", **SMALL)


def test_train_returns_an_agent(agent):
    assert isinstance(agent, ppokit.Agent)
    assert agent.env_id == "CartPole-v1" and agent.global_step == 64
    assert agent.config.rollout.num_envs == 2 and agent.config.model.hidden_sizes == [8]


def test_act_and_value_single_and_batch(agent):
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    action = agent.act(obs, deterministic=True)
    assert env.action_space.contains(int(action))
    env.step(action)  # accepted as is
    batch = np.stack([obs, obs * 0.5, -obs])
    actions = agent.act(batch)
    assert actions.shape == (3,) and int(actions[0]) == int(action)
    assert isinstance(agent.value(obs), float)
    values = agent.value(batch)
    assert values.shape == (3,) and values[0] == pytest.approx(agent.value(obs), abs=1e-6)


def test_save_load_acts_the_same(agent, tmp_path):
    agent.save(str(tmp_path / "agent"))
    loaded = ppokit.load(tmp_path / "agent")
    obs = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    assert np.array_equal(loaded.act(obs), agent.act(obs))
    torch.manual_seed(0)
    sampled = agent.act(obs, deterministic=False)
    torch.manual_seed(0)
    assert np.array_equal(loaded.act(obs, deterministic=False), sampled)
    assert np.allclose(loaded.value(obs), agent.value(obs))


def test_evaluate(agent):
    result = ppokit.evaluate(agent, "CartPole-v1", episodes=3)
    assert set(result) >= {"mean", "std", "returns"}
    assert len(result["returns"]) == 3
    assert result["mean"] == pytest.approx(np.mean(result["returns"]))
    assert result["std"] == pytest.approx(np.std(result["returns"]))
    assert result["returns"] == [float(n) for n in result["lengths"]]  # CartPole pays 1 per step
    assert ppokit.evaluate(agent, episodes=3) == result  # env id from the agent; deterministic is repeatable


def test_evaluate_sums_raw_rewards(tmp_path):
    agent = ppokit.train(COUNTER_ID, total_steps=32, run_dir=tmp_path / "run", env__vector="sync",
                         env__normalize_reward=True, env__normalize_obs=True, **SMALL)
    result = ppokit.evaluate(agent, episodes=2)
    assert result["returns"] == [15.0, 15.0] and result["lengths"] == [5, 5]


def test_evaluate_makes_the_agents_env_with_its_kwargs(tmp_path):
    agent = ppokit.train(COUNTER_ID, total_steps=32, run_dir=tmp_path / "run", env__vector="sync",
                         env__kwargs={"reward": 2.0, "max_episode_steps": 4}, **SMALL)
    doubled = [2.0 * (1 + 2 + 3 + 4)] * 2  # 4-step episodes paying 2, 4, 6, 8
    assert ppokit.evaluate(agent, episodes=2)["returns"] == doubled
    assert ppokit.evaluate(agent, COUNTER_ID, episodes=2)["returns"] == doubled  # named, but its own env
    loaded = ppokit.load(tmp_path / "run")
    assert ppokit.evaluate(loaded, episodes=2)["returns"] == doubled


def test_bad_api_input():
    with pytest.raises(ppokit.ConfigError, match="unknown env"):
        ppokit.train("NoSuchEnv-v0", total_steps=64)
    with pytest.raises(ppokit.ConfigError, match="ppo.nope"):
        ppokit.train("CartPole-v1", total_steps=64, ppo__nope=1)


def test_callbacks_see_every_row_and_can_stop_the_run_cleanly(tmp_path):
    seen = []

    def stop_after_three(row, agent):
        seen.append((row["iteration"], row["global_step"], isinstance(agent, ppokit.Agent)))
        return row["iteration"] < 3

    agent = ppokit.train("CartPole-v1", total_steps=10 * 32, run_dir=tmp_path / "run",
                         callbacks=[lambda row, agent: None, stop_after_three], **SMALL)
    assert seen == [(1, 32, True), (2, 64, True), (3, 96, True)]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 96
    assert "stop_after_three" in summary["stop_reason"] and "96" in summary["stop_reason"]
    assert summary["checkpoint_step"] == 96 and ppokit.load(tmp_path / "run").global_step == 96
    assert agent.run_dir == tmp_path / "run" and agent.summary == summary


def test_stop_when_solved_ends_the_run_at_the_iteration_that_reached_the_threshold(tmp_path):
    """With a threshold a random CartPole policy reaches (20 episodes of mean >= 10), the run stops at
    the first iteration after which the mean of the last 20 training returns is >= 10; without
    stop_when_solved the same run goes on to its budget and solves at that same step."""
    common = dict(total_steps=40 * 64, solved_threshold=10.0, **SMALL)
    full = ppokit.train("CartPole-v1", run_dir=tmp_path / "full", **common).summary
    stopped = ppokit.train("CartPole-v1", run_dir=tmp_path / "stopped", stop_when_solved=True, **common).summary
    assert full["total_steps"] == 40 * 64 and "stop_reason" not in full
    solved = full["solved_at_step"]
    assert solved is not None and solved < 40 * 64
    assert stopped["status"] == "completed" and stopped["solved_at_step"] == solved
    assert stopped["total_steps"] == solved and f"solved at step {solved}" in stopped["stop_reason"]
    with pytest.raises(ppokit.ConfigError, match="stop_when_solved: true needs a solved_threshold"):
        ppokit.train("Acrobot-v1", total_steps=64, run_dir=tmp_path / "none", stop_when_solved=True, **SMALL)


def test_train_twice_in_one_script_makes_two_run_folders(tmp_path, monkeypatch):
    """The default run folder is named by the second; two runs in the same second must not collide."""

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 1, 12, 0, 0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("ppokit.run_folder.datetime", FrozenClock)
    first = ppokit.train("CartPole-v1", total_steps=32, **SMALL)
    second = ppokit.train("CartPole-v1", total_steps=32, **SMALL)
    assert first.run_dir != second.run_dir
    for agent in (first, second):
        assert agent.summary["status"] == "completed"
        assert json.loads((agent.run_dir / "summary.json").read_text()) == agent.summary


class TimesTenReward(gym.RewardWrapper):
    def reward(self, reward):
        return 10.0 * reward


def test_train_takes_an_env_factory_and_wrappers(tmp_path):
    made = []

    def make_counter():
        made.append(1)
        return gym.make(COUNTER_ID)

    agent = ppokit.train(make_counter, total_steps=64, run_dir=tmp_path / "run", wrappers=[TimesTenReward],
                         **{**SMALL, "eval_episodes": 2})
    assert agent.env_id == COUNTER_ID  # named by the env's registered id
    assert len(made) >= 1 + SMALL["rollout__num_envs"] + 1  # a probe, one per sub-env, the final evaluation
    # Counter episodes last 5 steps and return 1+2+3+4+5 = 15; the wrapper makes it 150 in training and evaluation.
    assert agent.summary["train_return_last20"] == 150.0 and agent.summary["eval_return_mean"] == 150.0
    assert ppokit.evaluate(agent, episodes=1)["mean"] == 150.0  # the agent remembers its env source
    assert ppokit.evaluate(agent, COUNTER_ID, episodes=1)["mean"] == 15.0
    assert ppokit.evaluate(agent, COUNTER_ID, episodes=1, wrappers=[TimesTenReward])["mean"] == 150.0


def test_train_with_wrappers_on_an_env_id(tmp_path):
    agent = ppokit.train(COUNTER_ID, total_steps=64, run_dir=tmp_path / "run", wrappers=[TimesTenReward], **SMALL)
    assert agent.summary["train_return_last20"] == 150.0


def test_an_env_instance_is_refused_with_a_hint():
    with pytest.raises(ppokit.ConfigError, match="env instance.*callable"):
        ppokit.train(gym.make("CartPole-v1"), total_steps=64, **SMALL)


def test_separate_actor_and_critic_sizes(tmp_path):
    agent = ppokit.train("CartPole-v1", total_steps=64, run_dir=tmp_path / "run",
                         **{**SMALL, "model__actor_hidden_sizes": [32], "model__critic_hidden_sizes": [16, 8]})
    assert agent.policy_head.weight.shape == (2, 32) and agent.value_head.weight.shape == (1, 8)
    assert [layer.weight.shape[0] for layer in agent.critic_trunk[1].layers] == [16, 8]
    loaded = ppokit.load(tmp_path / "run")
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    assert np.array_equal(loaded.act(obs), agent.act(obs)) and np.array_equal(loaded.value(obs), agent.value(obs))


class TwoLayer(torch.nn.Module):
    """A user's network: [B, 4] -> [B, 24], with a LayerNorm (not an MLP ppokit knows)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 24), torch.nn.LayerNorm(24), torch.nn.SiLU())

    def forward(self, x):
        return self.net(x)


def test_custom_networks_train_save_and_load(tmp_path, capsys):
    torch.manual_seed(0)
    actor, critic = TwoLayer(), TwoLayer()
    before = actor.net[0].weight.detach().clone()
    agent = ppokit.train("CartPole-v1", total_steps=96, run_dir=tmp_path / "run",
                         networks={"actor": actor, "critic": critic}, **SMALL)
    assert agent.actor_trunk[1] is actor and agent.critic_trunk[1] is critic
    assert not torch.equal(actor.net[0].weight, before), "the user's module was trained"
    assert agent.policy_head.weight.shape == (2, 24)
    with pytest.raises(ppokit.ConfigError, match=r"custom networks.*actor=TwoLayer.*networks="):
        ppokit.load(tmp_path / "run")
    loaded = ppokit.load(tmp_path / "run", networks={"actor": TwoLayer(), "critic": TwoLayer()})
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    assert np.array_equal(loaded.act(obs), agent.act(obs)) and np.array_equal(loaded.value(obs), agent.value(obs))
    assert ppokit.cli.main(["eval", str(tmp_path / "run")]) == 2
    assert "custom networks" in capsys.readouterr().err


def test_custom_encoder_and_bad_networks():
    encoder = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh())
    agent = ppokit.Agent(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(3),
                         networks={"encoder": encoder})
    assert agent.actor_trunk[0] is encoder and agent.critic_trunk[0] is not encoder  # the critic's own copy
    assert agent.actor_trunk[1].layers[0].weight.shape == (64, 6)
    with pytest.raises(ppokit.ConfigError, match="unknown role 'policy'"):
        ppokit.Agent(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(3), networks={"policy": encoder})
    with pytest.raises(ppokit.ConfigError, match=r"\[batch, features\]"):
        ppokit.Agent(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(3),
                     networks={"actor": torch.nn.Flatten(0)})  # [B, D] -> [B * D]
