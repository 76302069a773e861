"""make_envs: backend and autoreset mode, seeding, errors that name the env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from ppokit.envs import ensure_registered, make_env, make_envs, process_seed
from ppokit.errors import ConfigError, EnvError
from ppokit.spaces import check_spaces
from tests.helpers import COUNTER_ID, small_config


def test_auto_uses_the_vector_entry_point_with_next_step():
    envs = make_envs(small_config("CartPole-v1", rollout={"num_envs": 3}))
    try:
        assert envs.autoreset_mode == AutoresetMode.NEXT_STEP
        assert not isinstance(envs.env, gym.vector.SyncVectorEnv)
        assert envs.num_envs == 3 and envs.action_space == gym.spaces.Discrete(2)
    finally:
        envs.close()


@pytest.mark.parametrize("env_id, vector", [("CartPole-v1", "sync"), ("Pendulum-v1", "auto"), (COUNTER_ID, "auto")])
def test_sync_is_same_step(env_id, vector):
    envs = make_envs(small_config(env_id, env={"vector": vector}))
    try:
        assert isinstance(envs.env, gym.vector.SyncVectorEnv)
        assert envs.autoreset_mode == AutoresetMode.SAME_STEP
        assert envs.env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    finally:
        envs.close()


def test_world_size_splits_envs_as_one_process_holds_them():
    """Rank r of K steps envs r*N/K ... of one process with N envs, seeded alike: with envs made one
    by one (each seeded with its own number), the processes' first observations, side by side, are
    the single process's. (A vectorized env, e.g. CartPole's, draws all its envs from one stream.)"""
    cfg = small_config("CartPole-v1", rollout={"num_envs": 4}, env={"vector": "sync"})
    envs = [make_envs(cfg, rank=rank, world_size=2) for rank in (0, 1)]
    whole = make_envs(cfg)
    try:
        assert [e.num_envs for e in envs] == [2, 2]
        assert [e.seed for e in envs] == [process_seed(cfg.seed, 0, 2), process_seed(cfg.seed, 1, 2)] == [0, 2]
        split = np.concatenate([e.reset() for e in envs])
        assert not np.allclose(split[:2], split[2:])
        np.testing.assert_array_equal(split, whole.reset())
    finally:
        for e in envs + [whole]:
            e.close()


def test_reset_is_seeded():
    cfg = small_config("Pendulum-v1")
    first, second = make_envs(cfg), make_envs(cfg)
    other = make_envs(small_config("Pendulum-v1"), seed=1)
    try:
        assert np.array_equal(first.reset(), second.reset())
        assert not np.array_equal(first.reset(), other.reset())
        assert not np.array_equal(first.reset()[0], first.reset()[1])  # sub-envs differ
    finally:
        for e in (first, second, other):
            e.close()


def test_unknown_env_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'CartPole-v1'"):
        ensure_registered("CartPole-v9")


def test_bad_env_kwargs_are_config_errors():
    with pytest.raises(ConfigError, match="env.kwargs"):
        make_envs(small_config(COUNTER_ID, env={"kwargs": {"no_such_argument": 1}}))


def test_env_errors_name_the_env_and_sub_env():
    envs = make_envs(small_config("Pendulum-v1"))
    try:
        envs.reset()
        with pytest.raises(EnvError, match="Pendulum-v1' sub-env 0 raised in step"):
            envs.step(np.array([["not a number"], ["x"]]))
    finally:
        envs.close()


def test_unsupported_spaces():
    with pytest.raises(ConfigError, match="observation space"):
        check_spaces("X", gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), gym.spaces.Discrete(2))
    with pytest.raises(ConfigError, match="action space"):
        check_spaces("X", gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(0, 3, (2,), np.int64))
    check_spaces("X", gym.spaces.Discrete(5), gym.spaces.MultiBinary(3))


def test_make_env_takes_max_episode_steps_from_the_kwargs():
    """env.kwargs may hold max_episode_steps (as gymnasium.make takes it); an explicit argument wins."""
    assert make_env(COUNTER_ID, {"max_episode_steps": 3, "reward": 2.0}).spec.max_episode_steps == 3
    assert make_env(COUNTER_ID, {"max_episode_steps": 3}, max_episode_steps=4).spec.max_episode_steps == 4
    env = make_env(COUNTER_ID, {"max_episode_steps": 3}, render_mode="rgb_array")
    assert env.render_mode == "rgb_array"
    env.reset(seed=0)
    assert [env.step(0)[3] for _ in range(3)] == [False, False, True]  # truncated at step 3
