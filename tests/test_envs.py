"""make_envs: backend and autoreset mode, seeding, errors that name the env."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from ppokit.envs import ensure_registered, make_env, make_envs, process_seed
from ppokit.errors import ConfigError, EnvError
from ppokit.spaces import check_spaces
from tests.errors_support import REPO, TINY
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


def test_a_mujoco_run_leaves_nothing_in_the_working_directory(tmp_path):
    """MuJoCo's default warning handler appends to MUJOCO_LOG.TXT in the working directory (with
    MuJoCo 4.0.1, installed here, every HalfCheetah-v5 warns that its XML's ``settotalmass`` is
    deprecated). A fresh ppokit process, envs in worker processes too: the working directory stays
    empty."""
    pytest.importorskip("mujoco")
    cwd, run = tmp_path / "cwd", tmp_path / "run"
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-m", "ppokit", "train", "HalfCheetah-v5", "--run-dir", str(run),
                           "--total-steps", "64", *TINY, "--set", "env.vector=async"],
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in cwd.iterdir()) == []
    assert (run / "summary.json").is_file()


def test_mujoco_warnings_are_python_warnings(tmp_path, monkeypatch):
    """An unstable simulation's warning reaches Python's warnings (filterable, once per text), and
    still no file is written where the process runs."""
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)
    env = make_env("HalfCheetah-v5")
    env.reset(seed=0)
    physics = env.unwrapped
    physics.set_state(physics.init_qpos, physics.init_qvel + 1e30)
    with pytest.warns(RuntimeWarning, match="The simulation is unstable"):
        env.step(env.action_space.sample())
    env.close()
    assert list(tmp_path.iterdir()) == []
