"""ppokit: PPO and its family (PPO-KL, TRPO, VPG) on Gymnasium, fast on a CPU.

Public API::

    agent = ppokit.train("CartPole-v1", algo="ppo", total_steps=100_000, seed=0)
    action = agent.act(obs, deterministic=True)
    agent.save("cartpole_agent"); agent = ppokit.load("cartpole_agent")
    result = ppokit.evaluate(agent, "CartPole-v1", episodes=10)
"""

from __future__ import annotations

import operator
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppokit.errors import ConfigError
from ppokit.version import __version__

if TYPE_CHECKING:
    import torch

    from ppokit.agent import Agent
    from ppokit.config import Config
    from ppokit.envs import EnvFactory, Wrapper
    from ppokit.loop import Callback

__all__ = ["Agent", "Config", "ConfigError", "evaluate", "load", "train", "__version__"]

# Importing ppokit imports neither torch nor gymnasium: the command line installs its Ctrl-C and
# SIGTERM handling first, and ``python -m ppokit`` drops the current folder from sys.path before
# anything else is imported (see __main__.py). ``ppokit.Agent`` and ``ppokit.Config`` load on use.
_LAZY = {"Agent": "ppokit.agent", "Config": "ppokit.config"}


class _Package(types.ModuleType):
    """The ``ppokit`` module. Importing the submodule ``ppokit.evaluate`` (lazily, on first use) would
    make Python set the package attribute ``evaluate`` to it, hiding the function of that name; the
    function stays (the submodule is in ``sys.modules`` as always)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "evaluate" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ppokit' has no attribute {name!r}")


def train(
    env: str | EnvFactory,
    algo: str | None = None,
    total_steps: int | None = None,
    seed: int = 0,
    *,
    preset: str | None = None,
    config: str | Path | None = None,
    run_dir: str | Path | None = None,
    quiet: bool = True,
    callbacks: list[Callback] | None = None,
    wrappers: Sequence[Wrapper] = (),
    networks: dict[str, torch.nn.Module] | None = None,
    log_every: int | None = None,
    track: bool | str = False,
    seeds: Sequence[int] | None = None,
    sweep: dict[str, Sequence[float]] | None = None,
    **overrides: Any,
) -> Agent | list[Agent]:
    """Train and return the agent; the run folder is written as by ``ppokit train``.

    ``env`` is a registered env id (``"CartPole-v1"``) or a callable that returns a new
    ``gymnasium.Env`` (one call per sub-env, like SB3's ``make_vec_env``); ``wrappers``
    (callables ``env -> env``) are applied to every sub-env in order, and to the final
    evaluation's env. Neither is saved in checkpoints: evaluate such an agent with
    ``ppokit.evaluate(agent)`` in the same script, or pass the env again.

    ``networks`` replaces parts of the agent with your own ``torch.nn.Module``: ``"encoder"``
    (``[B, *obs] -> [B, D]``), ``"actor"`` and ``"critic"`` (``[B, D] -> [B, H]``, instead of the
    MLPs of ``model.actor_hidden_sizes`` / ``model.critic_hidden_sizes``); the heads and the
    normalizer stay ppokit's, and the update runs on the autograd path. Load such an agent with
    ``ppokit.load(path, networks=...)`` and the same modules.
    ``overrides`` set config fields by dotted name with ``__`` for the dot, e.g.
    ``ppo__clip_coef=0.1`` or ``rollout__num_envs=16``. Each of ``callbacks`` is called as
    ``fn(row, agent)`` after every iteration with that iteration's metrics row (a dict of the
    metrics.csv columns); returning False stops the run cleanly: it is saved and its summary says
    ``"completed"`` with a ``stop_reason``. The returned agent's ``run_dir`` and ``summary`` are
    the run folder and summary.json of this run. With ``quiet=False`` progress shows as a bar on
    a terminal, else as a line every ``log_every`` iterations (default: 10 unless quiet, when 0).
    ``track=True`` (or a project name) logs the run to Weights & Biases (project ``"ppokit"``
    by default; needs ``pip install 'ppokit[wandb]'``, see :mod:`ppokit.tracking`).

    ``seeds`` (a list of seeds) and/or ``sweep`` (``{"ppo.clip_coef": [0.1, 0.2]}``: float fields)
    train a population in one process, one agent per combination (:mod:`ppokit.population`), into
    the population folder ``run_dir``; they return the list of agents (each with its own
    ``run_dir`` and ``summary``) and raise nothing for an agent that failed (its summary says so).
    """
    from ppokit.envs import ensure_registered, source_for
    from ppokit.presets import build_config
    from ppokit.run import train as _train

    env_id, source = source_for(env, wrappers)
    if isinstance(env, str):
        ensure_registered(env, import_module=True)  # an id the caller gave: its module may be imported
    fields = {"total_steps": total_steps, "seed": seed}
    fields.update({key.replace("__", "."): value for key, value in overrides.items()})
    cfg = build_config(env_id, algo=algo, preset=preset, config_file=config, overrides=fields)
    log_every = log_every if log_every is not None else (0 if quiet else 10)
    if seeds is not None or sweep is not None:
        return _train_population(cfg, seeds, sweep, run_dir, source, dict(
            quiet=quiet, callbacks=callbacks, source=source, networks=networks, log_every=log_every,
            track=_project(track)))
    result = _train(cfg, run_dir=run_dir, quiet=quiet, callbacks=callbacks, source=source, networks=networks,
                    log_every=log_every, track=_project(track))
    agent = result.agent
    agent.run_dir, agent.summary, agent.env_source = result.run_dir, result.summary, source
    return agent


def _train_population(cfg: Config, seeds: Sequence[int] | None, sweep: dict[str, Sequence[float]] | None,
                      run_dir: str | Path | None, source: Any, options: dict[str, Any]) -> list[Agent]:
    from ppokit import population

    try:
        seed_list = [cfg.seed] if seeds is None else [operator.index(s) for s in seeds]
    except TypeError:
        raise ConfigError(f"seeds: expected a list of integers, got {seeds!r:.200}") from None
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"seeds: expected distinct seeds, got {list(seed_list)}")
    try:
        texts = [f"{key}={','.join(repr(float(v)) for v in values)}" for key, values in (sweep or {}).items()]
    except (TypeError, ValueError):
        raise ConfigError(f"sweep: expected {{\"field\": [numbers, ...]}}, got {sweep!r:.200}") from None
    result = population.train(cfg, seed_list, population.parse_sweep(texts), run_dir, **options)
    agents = []
    for run in result.results:
        run.agent.run_dir, run.agent.summary, run.agent.env_source = run.run_dir, run.summary, source
        agents.append(run.agent)
    return agents


def load(path: str | Path, device: str = "cpu", networks: dict[str, torch.nn.Module] | None = None) -> Agent:
    """Load an agent from a checkpoint folder or a run folder (its latest checkpoint); one trained
    with custom ``networks`` needs the same modules (their weights are in the checkpoint)."""
    from ppokit.agent import load_agent

    return load_agent(path, device, networks)[0]


def evaluate(agent: Agent, env: str | EnvFactory | None = None, episodes: int = 10, seed: int = 0,
             deterministic: bool = True, wrappers: Sequence[Wrapper] = ()) -> dict[str, Any]:
    """Mean, std and per-episode returns of ``agent`` on fresh episodes of ``env`` (an id or a
    callable that returns a new env, wrapped by ``wrappers``).

    With no ``env``, the agent's own env is made as in training: with the ``env.kwargs`` it was
    trained with, and by the callable and wrappers ``ppokit.train`` was given in this process."""
    from ppokit.envs import ensure_registered
    from ppokit.evaluate import evaluate as _evaluate

    if isinstance(env, str):
        ensure_registered(env, import_module=True)  # an id the caller gave: its module may be imported
    if env is None and agent.env_source is not None and agent.env_source.custom:
        return _evaluate(agent, agent.env_source.factory or agent.env_id, episodes, seed=seed,
                         deterministic=deterministic, env_kwargs=agent.config.env.kwargs,
                         wrappers=agent.env_source.wrappers)
    own_env = env is None or env == agent.env_id
    env_kwargs = agent.config.env.kwargs if own_env and agent.config is not None else None
    return _evaluate(agent, env, episodes, seed=seed, deterministic=deterministic, env_kwargs=env_kwargs,
                     wrappers=tuple(wrappers))


def _project(track: bool | str) -> str | None:
    """The W&B project of ``train(track=...)``: None when off, the default project for True."""
    from ppokit.tracking import DEFAULT_PROJECT

    if track is True:
        return DEFAULT_PROJECT
    return track or None
