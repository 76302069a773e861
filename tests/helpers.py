"""Test helpers: toy environments with known dynamics (registered on import), small configs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from ppokit.config import Config

COUNTER_ID = "PpokitTest/Counter-v0"
CLIPPED_ID = "PpokitTest/RecordAction-v0"
GLOBAL_RANDOM_ID = "PpokitTest/GlobalRandomReward-v0"


class CounterEnv(gym.Env):
    """Observation = [step count, 1.0 on the terminal step]; reward ``reward * count`` at step count.

    With ``terminate_at`` set the episode terminates at that step; otherwise the TimeLimit of the
    registration truncates it at 5 steps. An episode of k steps returns ``reward * k * (k + 1) / 2``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, terminate_at: int | None = None, reward: float = 1.0, render_mode: str | None = None):
        self.observation_space = gym.spaces.Box(-1000.0, 1000.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.reward = reward
        self.render_mode = render_mode
        self.count = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.count, float(self.count == self.terminate_at)], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return self._obs(), {}

    def step(self, action):
        self.count += 1
        terminated = self.terminate_at is not None and self.count >= self.terminate_at
        return self._obs(), self.reward * self.count, terminated, False, {}

    def render(self):
        return np.full((8, 8, 3), self.count % 255, np.uint8)


class GlobalRandomRewardEnv(CounterEnv):
    """A counter whose reward is drawn from numpy's *global* RNG (as some third-party envs do)."""

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float(np.random.random()), terminated, truncated, info


class RecordActionEnv(gym.Env):
    """Box(-1, 1) actions; remembers every action it received (class-level log)."""

    received: list[np.ndarray] = []

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        RecordActionEnv.received.append(np.array(action, copy=True))
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), 0.0, False, False, {}


if COUNTER_ID not in gym.envs.registry:
    gym.register(COUNTER_ID, entry_point=CounterEnv, max_episode_steps=5)
if GLOBAL_RANDOM_ID not in gym.envs.registry:
    gym.register(GLOBAL_RANDOM_ID, entry_point=GlobalRandomRewardEnv, max_episode_steps=5)
if CLIPPED_ID not in gym.envs.registry:
    gym.register(CLIPPED_ID, entry_point=RecordActionEnv, max_episode_steps=50)


def small_config(env_id: str = "CartPole-v1", **sections) -> Config:
    """A tiny, fast config; ``sections`` are dicts merged into the dataclass sections."""
    cfg = Config(env_id=env_id, device="cpu", total_steps=64, eval_episodes=0)
    cfg.rollout.num_envs = 2
    cfg.rollout.num_steps = 16
    cfg.ppo.minibatch_size = 16
    cfg.ppo_kl.minibatch_size = 16
    cfg.ppo.update_epochs = 2
    cfg.model.hidden_sizes = [16, 16]
    for name, values in sections.items():
        section = getattr(cfg, name)
        for key, value in values.items():
            setattr(section, key, value)
    return cfg
