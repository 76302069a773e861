"""Shared helpers for the error-path tests (test_errors_*.py, test_hostile_checkpoints.py, ...).

Toy envs that misbehave on purpose, a tiny training config, and a way to run the CLI in-process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

import ppokit.cli

REPO = Path(__file__).resolve().parents[1]
TOY = "ppokit_test/Toy-v0"
DICT_OBS = "ppokit_test/DictObs-v0"

# A training that takes well under a second per iteration: 2 envs x 16 steps, one epoch.
TINY = ["--num-envs", "2", "--set", "rollout.num_steps=16", "--set", "ppo.minibatch_size=32",
        "--set", "ppo.update_epochs=1", "--set", "eval_episodes=0", "--quiet"]
BATCH = 32  # environment steps per iteration with TINY


class SpaceEnv(gym.Env):
    """Observations and actions of the given spaces; episodes of 10 steps; ``exit_at``: sys.exit(0) then."""

    def __init__(self, observation_space, action_space=None, exit_at: int | None = None):
        self.observation_space = observation_space
        self.action_space = action_space or gym.spaces.Discrete(2)
        self.exit_at, self.steps, self.t = exit_at, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.steps += 1
        self.t += 1
        if self.exit_at is not None and self.steps >= self.exit_at:
            sys.exit(0)
        return self.observation_space.sample(), 1.0, False, self.t >= 10, {}


class ToyEnv(gym.Env):
    """Box(3) observations, Discrete(2) actions, episodes of ``length`` steps, reward 1 per step.

    ``fault`` happens in the sub-env seeded with ``sub_env`` (in a vector env seeded with 0 the
    sub-env of index i is seeded with i) once it has taken ``at`` steps in total:
    nan_obs, inf_obs, inf_reward, nan_reward, huge_reward (finite, but overflows the value loss),
    step_raise, reset_raise (the next reset raises), init_raise (the constructor raises).
    """

    metadata = {"render_modes": []}

    def __init__(self, fault: str | None = None, at: int = 40, sub_env: int | None = 1, length: int = 10,
                 render_mode: str | None = None):
        if fault == "init_raise":
            raise ValueError("toy env refuses to start")
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.fault, self.at, self.target, self.length = fault, at, sub_env, length
        self.index: int | None = None
        self.steps = 0
        self.t = 0

    def _armed(self) -> bool:
        return self.fault is not None and (self.target is None or self.index == self.target) and self.steps >= self.at

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1, 1, 3).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.index = seed
        if self.fault == "reset_raise" and self._armed():
            raise RuntimeError("toy env broke in reset")
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.steps += 1
        self.t += 1
        obs, reward = self._obs(), 1.0
        if self._armed():
            if self.fault == "step_raise":
                raise RuntimeError("toy env broke in step")
            if self.fault == "nan_obs":
                obs[1] = np.nan
            elif self.fault == "inf_obs":
                obs[0] = np.inf
            elif self.fault == "inf_reward":
                reward = np.inf
            elif self.fault == "nan_reward":
                reward = np.nan
            elif self.fault == "huge_reward":
                reward = 1e30
        return obs, reward, False, self.t >= self.length, {}


class DictObsEnv(ToyEnv):
    def __init__(self, render_mode: str | None = None):
        super().__init__()
        self.observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,))})


def register() -> None:
    if TOY not in gym.envs.registry:
        gym.register(TOY, entry_point=ToyEnv, max_episode_steps=None)
        gym.register(DICT_OBS, entry_point=DictObsEnv)


register()


def one_error_line(capsys, *words: str) -> str:
    """The one line a bad input printed on stderr (no traceback), checked to contain ``words``."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def run_cli(capsys, args: list[str]) -> tuple[int, str, list[str]]:
    """``ppokit.cli.main(args)`` in this process: ``(exit code, stdout, stderr lines)``."""
    capsys.readouterr()
    code = ppokit.cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def bad_input(capsys, args: list[str], *expected: str) -> str:
    """Assert exit code 2 and exactly one stderr line containing every ``expected`` text; returns it."""
    code, _, lines = run_cli(capsys, args)
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def train_tiny(run_dir: Path, *extra: str, env: str = "CartPole-v1", total_steps: int = 4 * BATCH) -> int:
    """A tiny in-process training (4 iterations by default); returns the exit code."""
    return ppokit.cli.main(["train", env, "--run-dir", str(run_dir), "--total-steps", str(total_steps),
                            *TINY, *extra])


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def subprocess_env() -> dict[str, str]:
    """Environment for ``python -m ppokit`` subprocesses that import this worktree's ppokit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable
