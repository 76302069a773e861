"""ppokit: PPO and its family (PPO-KL, TRPO, VPG) on Gymnasium, fast on a CPU.

Public API::

    agent = ppokit.train("CartPole-v1", algo="ppo", total_steps=100_000, seed=0)
    action = agent.act(obs, deterministic=True)
    agent.save("cartpole_agent"); agent = ppokit.load("cartpole_agent")
    result = ppokit.evaluate(agent, "CartPole-v1", episodes=10)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

from ppokit.agent import Agent
from ppokit.config import Config, ConfigError
from ppokit.evaluate import evaluate as _evaluate

# The training loop lives in ppokit.training (not ppokit.train, which is this API function).
from ppokit.training import train as _train

__all__ = ["Agent", "Config", "ConfigError", "evaluate", "load", "train", "__version__"]


def train(
    env_id: str,
    algo: str | None = None,
    total_steps: int | None = None,
    seed: int = 0,
    *,
    preset: str | None = None,
    config: str | Path | None = None,
    run_dir: str | Path | None = None,
    quiet: bool = True,
    **overrides: Any,
) -> Agent:
    """Train and return the agent; the run folder is written as by ``ppokit train``.

    ``overrides`` set config fields by dotted name with ``__`` for the dot, e.g.
    ``ppo__clip_coef=0.1`` or ``rollout__num_envs=16``.
    """
    from ppokit.presets import build_config

    fields = {"total_steps": total_steps, "seed": seed}
    fields.update({key.replace("__", "."): value for key, value in overrides.items()})
    cfg = build_config(env_id, algo=algo, preset=preset, config_file=config, overrides=fields)
    return _train(cfg, run_dir=run_dir, quiet=quiet).agent


def load(path: str | Path, device: str = "cpu") -> Agent:
    """Load an agent from a checkpoint folder or a run folder (its latest checkpoint)."""
    from ppokit.agent import load_agent

    return load_agent(path, device)[0]


def evaluate(agent: Agent, env_id: str | None = None, episodes: int = 10, seed: int = 0,
             deterministic: bool = True) -> dict[str, Any]:
    """Mean, std and per-episode returns of ``agent`` on fresh ``env_id`` episodes.

    The agent's own env (the default) is made with the ``env.kwargs`` it was trained with."""
    own_env = env_id is None or env_id == agent.env_id
    env_kwargs = agent.config.env.kwargs if own_env and agent.config is not None else None
    return _evaluate(agent, env_id, episodes, seed=seed, deterministic=deterministic, env_kwargs=env_kwargs)
