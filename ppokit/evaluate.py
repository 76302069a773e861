"""Evaluation of an agent on fresh environments, each episode at most ``step_cap`` steps long."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ppokit.envs import EnvFactory, EnvSource, ReportErrors, Wrapper, agent_pixels
from ppokit.errors import ConfigError
from ppokit.spaces import check_agent_fits, check_spaces

if TYPE_CHECKING:
    import gymnasium as gym

    from ppokit.agent import Agent

log = logging.getLogger("ppokit")

# Steps after which an evaluation (or recorded) episode is stopped if the env has not ended it: an
# env without a time limit (CliffWalking) and a deterministic policy that loops would never end.
# 27,000 is the Atari benchmark's limit (108,000 frames at frame skip 4); an env's own shorter
# time limit ends its episodes first.
DEFAULT_STEP_CAP = 27_000


def report_capped(capped: int, episodes: int, name: str, step_cap: int) -> None:
    """One warning line when episodes were stopped at the step cap."""
    if capped:
        log.warning("%d of %d evaluation episodes of %s were stopped at the step cap of %s steps (the env did not end "
                    "them; the return counts the steps played; raise it with --max-episode-steps or "
                    "eval_max_episode_steps)", capped, episodes, name, f"{step_cap:,}")


def play_episodes(agent: Agent, envs: list[gym.Env], seeds: list[int], deterministic: bool = True,
                  step_cap: int = DEFAULT_STEP_CAP,
                  after_step: Callable[[gym.Env], None] | None = None) -> tuple[list[float], list[int]]:
    """One episode on each of ``envs`` (reset with ``seeds``), stepped together: each step runs
    the agent once on the observations ``[K, *obs]`` of the K episodes still going. An episode
    the env has not ended after ``step_cap`` steps is stopped there (its length is ``step_cap``).
    ``after_step(env)``, if given, is called after each reset and each step of an env (``ppokit
    record`` renders its frame there).

    Returns the raw returns and lengths, in the order of ``envs``."""
    observations = []
    for env, seed in zip(envs, seeds):
        observations.append(env.reset(seed=seed)[0])
        if after_step is not None:
            after_step(env)
    returns, lengths = [0.0] * len(envs), [0] * len(envs)
    going = list(range(len(envs)))
    while going:
        actions = agent.act(np.stack([observations[i] for i in going]), deterministic=deterministic)
        still_going = []
        for i, action in zip(going, actions):
            observations[i], reward, terminated, truncated, _ = envs[i].step(action)
            if after_step is not None:
                after_step(envs[i])
            returns[i] += float(reward)
            lengths[i] += 1
            if not (terminated or truncated) and lengths[i] < step_cap:
                still_going.append(i)
        going = still_going
    return returns, lengths


def evaluate(agent: Any, env_id: str | EnvFactory | None = None, episodes: int = 10, seed: int = 0,
             deterministic: bool = True, env_kwargs: dict | None = None,
             max_episode_steps: int | None = None, wrappers: tuple[Wrapper, ...] = (),
             step_cap: int = DEFAULT_STEP_CAP) -> dict[str, Any]:
    """Run ``episodes`` episodes, one env, seeds ``seed, seed + 1, ...``; each ends when the env ends
    it or after ``step_cap`` steps (reported with a warning and in ``capped_episodes``).

    ``env_id`` is an env id or a callable that returns a new env (as ``ppokit.train`` takes);
    ``wrappers`` are applied to it in order; ``max_episode_steps`` sets the env's own time limit
    (gymnasium's TimeLimit). The agent's image preprocessing (its config's ``pixels``,
    :mod:`ppokit.pixels`) is applied after the ``wrappers``, without its training-only parts: the
    returns are raw full-game scores. Returns ``{"mean", "std", "returns", "lengths", "episodes", "step_cap",
    "capped_episodes"}`` with raw (unnormalized) returns; the agent's own normalizer is applied
    when acting.
    """
    env_id = env_id or getattr(agent, "env_id", None)
    if env_id is None:
        raise ConfigError("evaluate needs an env id (the agent does not name one)")
    source = EnvSource(None if isinstance(env_id, str) else env_id, tuple(wrappers))
    name = env_id if isinstance(env_id, str) else getattr(agent, "env_id", None) or "the env"
    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    env = ReportErrors(source.make(name, kwargs, pixels=agent_pixels(agent)), name, None)
    try:
        check_spaces(name, env.observation_space, env.action_space)
        check_agent_fits(agent, name, env.observation_space, env.action_space)
        returns, lengths = [], []
        for episode in range(episodes):
            episode_return, episode_length = play_episodes(agent, [env], [seed + episode], deterministic, step_cap)
            returns += episode_return
            lengths += episode_length
    finally:
        env.close()
    capped = sum(length >= step_cap for length in lengths)
    report_capped(capped, episodes, name, step_cap)
    return {"mean": float(np.mean(returns)) if returns else float("nan"),
            "std": float(np.std(returns)) if returns else float("nan"),
            "returns": returns, "lengths": lengths, "episodes": episodes, "step_cap": step_cap,
            "capped_episodes": capped}
