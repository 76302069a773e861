"""Evaluation of an agent on fresh environments."""

from __future__ import annotations

from typing import Any

import numpy as np

from ppokit.envs import EnvFactory, EnvSource, ReportErrors, Wrapper
from ppokit.errors import ConfigError
from ppokit.spaces import check_agent_fits, check_spaces


def evaluate(agent: Any, env_id: str | EnvFactory | None = None, episodes: int = 10, seed: int = 0,
             deterministic: bool = True, env_kwargs: dict | None = None,
             max_episode_steps: int | None = None, wrappers: tuple[Wrapper, ...] = ()) -> dict[str, Any]:
    """Run ``episodes`` full episodes, one env, seeds ``seed, seed + 1, ...``.

    ``env_id`` is an env id or a callable that returns a new env (as ``ppokit.train`` takes);
    ``wrappers`` are applied to it in order. Returns ``{"mean", "std", "returns", "lengths",
    "episodes"}`` with raw (unnormalized) returns; the agent's own normalizer is applied when acting.
    """
    env_id = env_id or getattr(agent, "env_id", None)
    if env_id is None:
        raise ConfigError("evaluate needs an env id (the agent does not name one)")
    source = EnvSource(None if isinstance(env_id, str) else env_id, tuple(wrappers))
    name = env_id if isinstance(env_id, str) else getattr(agent, "env_id", None) or "the env"
    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    env = ReportErrors(source.make(name, kwargs), name, None)
    try:
        check_spaces(name, env.observation_space, env.action_space)
        check_agent_fits(agent, name, env.observation_space, env.action_space)
        returns, lengths = [], []
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, length, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(agent.act(obs, deterministic=deterministic))
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
    finally:
        env.close()
    return {"mean": float(np.mean(returns)) if returns else float("nan"),
            "std": float(np.std(returns)) if returns else float("nan"),
            "returns": returns, "lengths": lengths, "episodes": episodes}
