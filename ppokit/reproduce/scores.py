"""Scores as the PPO paper computes them: a run's score, a random policy's, and the normalization.

- A run's score: the mean return of its last 100 training episodes (``summary.json``'s
  ``train_return_last100``).
- A random policy's score on an env: the mean return of uniformly random actions over a fixed
  number of episodes, measured once and cached in the reproduction folder.
- Normalized: per env, ``(score - random) / (best - random)``, where ``best`` is the highest
  mean score (over seeds) of any setting on that env: the random policy scores 0, the best setting 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np

from ppokit.envs import make_env
from ppokit.errors import ConfigError, quote

RANDOM_SEED = 0


def random_return(env_id: str, episodes: int, seed: int = RANDOM_SEED) -> float:
    """Mean return of ``episodes`` episodes of uniformly random actions (seeded, so repeatable).

    ConfigError if the env cannot be made or its actions are not a Box (the table's settings are
    for continuous control)."""
    env = make_env(env_id)
    try:
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ConfigError(f"env {quote(env_id)} has {type(env.action_space).__name__} actions; the PPO paper's "
                              "Table 1 is for continuous control (Box actions), e.g. Hopper-v5 or Pendulum-v1")
        env.action_space.seed(seed)
        returns = []
        for episode in range(episodes):
            env.reset(seed=seed if episode == 0 else None)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return float(np.mean(returns))


def random_returns(env_ids: list[str], episodes: int, cache: Path) -> dict[str, float]:
    """:func:`random_return` of each env, read from ``cache`` (a JSON file) when it was measured
    there with the same number of episodes, else measured and added to it."""
    known: dict = {}
    if cache.is_file():
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}  # unreadable: measure again
    out = {}
    for env_id in env_ids:
        entry = known.get(env_id)
        if not (isinstance(entry, dict) and entry.get("episodes") == episodes and entry.get("seed") == RANDOM_SEED
                and isinstance(entry.get("mean_return"), (int, float))):
            entry = {"mean_return": random_return(env_id, episodes), "episodes": episodes, "seed": RANDOM_SEED}
            known[env_id] = entry
            cache.write_text(json.dumps(known, indent=2) + "\n")
        out[env_id] = float(entry["mean_return"])
    return out


def run_score(run_dir: Path) -> float:
    """The score of a finished run: ``train_return_last100`` from its summary.json (the mean
    return of its last 100 training episodes, or of all of them when it finished fewer)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    score = summary.get("train_return_last100")
    if not isinstance(score, (int, float)):
        raise ConfigError(f"run {quote(run_dir)} has no train_return_last100 in its summary.json (no finished "
                          "training episode, or made by an older ppokit); remove the folder to run it again")
    return float(score)


Scores = dict[tuple[str, str], list[float]]  # (env, setting) -> one score per seed


def normalize(scores: Scores, random: dict[str, float]) -> Scores:
    """Raw scores ``{(env, setting): [score per seed]}`` -> normalized scores, same shape.

    Per env, the random policy maps to 0 and the setting with the highest mean score to 1. An env
    where the best setting does no better than random has no scale: its scores are NaN."""
    best: dict[str, float] = {}
    for (env, _), values in scores.items():
        best[env] = max(best.get(env, -math.inf), float(np.mean(values)))
    out = {}
    for (env, setting), values in scores.items():
        span = best[env] - random[env]
        out[env, setting] = [(v - random[env]) / span if span > 0 else math.nan for v in values]
    return out
