"""Environment construction: one vector env per process, autoreset mode chosen and asserted.

Two autoreset modes are supported, and the rollout handles each explicitly:

* ``NEXT_STEP`` (gymnasium's own vectorized envs, e.g. the numpy CartPole): the step that ends
  an episode returns the true final observation; the *next* step resets that sub-env, ignores
  its action and returns reward 0. That reset transition is marked invalid and never learned from.
* ``SAME_STEP`` (our SyncVectorEnv / AsyncVectorEnv): the step that ends an episode returns the
  reset observation and puts the final one in ``infos["final_obs"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from ppokit.config import Config, ConfigError, did_you_mean

EXTRA_FOR_MODULE = {"mujoco": "mujoco", "ale_py": "atari", "Box2D": "box2d", "box2d": "box2d"}


class EnvError(RuntimeError):
    """An environment raised while stepping or resetting (names the env and sub-env)."""


def ensure_registered(env_id: str) -> gym.envs.registration.EnvSpec:
    """The spec of ``env_id``, importing ale_py for ``ALE/`` ids; ConfigError if unknown."""
    if env_id.startswith("ALE/"):
        try:
            import ale_py  # noqa: F401  (registers the ALE/ ids)

            gym.register_envs(ale_py)
        except ImportError:
            raise ConfigError(f"env '{env_id}' needs Atari: pip install 'ppokit[atari]'") from None
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        raise ConfigError(
            f"unknown env '{env_id}'{did_you_mean(env_id, gym.envs.registry)} "
            "(any registered Gymnasium id is accepted; list them with gymnasium.pprint_registry())"
        ) from None


def _missing_dependency(env_id: str, error: BaseException) -> ConfigError:
    text = str(error)
    for module, extra in EXTRA_FOR_MODULE.items():
        if module.lower() in text.lower():
            return ConfigError(f"env '{env_id}' needs {module}: pip install 'ppokit[{extra}]'")
    return ConfigError(f"env '{env_id}' cannot be created: {text.splitlines()[0] if text else error!r}")


class ReportErrors(gym.Wrapper):
    """Re-raises any exception from step/reset as :class:`EnvError` naming the env and index."""

    def __init__(self, env: gym.Env, env_id: str, index: int):
        super().__init__(env)
        self.env_id = env_id
        self.index = index

    def _error(self, where: str, error: Exception) -> EnvError:
        return EnvError(f"env '{self.env_id}' sub-env {self.index} raised in {where}: {type(error).__name__}: {error}")

    def step(self, action: Any):
        try:
            return self.env.step(action)
        except Exception as error:  # noqa: BLE001  (re-raised with context)
            raise self._error("step", error) from error

    def reset(self, **kwargs: Any):
        try:
            return self.env.reset(**kwargs)
        except Exception as error:  # noqa: BLE001
            raise self._error("reset", error) from error


@dataclass
class VectorEnvs:
    """A gymnasium VectorEnv plus what the rollout needs to know about it."""

    env: gym.vector.VectorEnv
    env_id: str
    autoreset_mode: AutoresetMode
    seed: int

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    @property
    def observation_space(self) -> gym.Space:
        return self.env.single_observation_space

    @property
    def action_space(self) -> gym.Space:
        return self.env.single_action_space

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed)
        return obs

    def step(self, actions: np.ndarray):
        try:
            return self.env.step(actions)
        except EnvError:
            raise
        except Exception as error:  # noqa: BLE001  (vectorized envs have no per-sub-env wrapper)
            raise EnvError(f"env '{self.env_id}' raised in step: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        self.env.close()


def _sub_env_factory(env_id: str, index: int, kwargs: dict, render_mode: str | None):
    def make() -> gym.Env:
        # Pass render_mode only when asked: envs without a render_mode argument must still work.
        extra = {"render_mode": render_mode} if render_mode is not None else {}
        return ReportErrors(gym.make(env_id, **extra, **kwargs), env_id, index)

    return make


def process_seed(seed: int, rank: int) -> int:
    """Seed of this process's envs: ranks are spaced so their sub-env seeds never overlap."""
    return seed + 100_003 * rank


def make_envs(cfg: Config, rank: int = 0, world_size: int = 1, num_envs: int | None = None,
              seed: int | None = None, render_mode: str | None = None) -> VectorEnvs:
    """The vector env of process ``rank``: ``num_envs // world_size`` sub-envs.

    Backend: ``env.vector=auto`` uses gymnasium's own vectorized env when the env ships one
    (NEXT_STEP autoreset) and SyncVectorEnv otherwise (SAME_STEP); ``sync``/``async`` force those.
    """
    spec = ensure_registered(cfg.env_id)
    n = num_envs if num_envs is not None else cfg.rollout.num_envs // world_size
    kwargs = dict(cfg.env.kwargs)
    mode = cfg.env.vector
    try:
        if mode == "auto" and spec.vector_entry_point is not None and render_mode is None:
            env = gym.make_vec(cfg.env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)
        else:
            factories = [_sub_env_factory(cfg.env_id, i, kwargs, render_mode) for i in range(n)]
            if mode == "async":
                env = gym.vector.AsyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP)
            else:
                env = gym.vector.SyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP)
    except gym.error.DependencyNotInstalled as error:
        raise _missing_dependency(cfg.env_id, error) from None
    except ImportError as error:
        raise _missing_dependency(cfg.env_id, error) from None
    except TypeError as error:
        raise ConfigError(f"env.kwargs: '{cfg.env_id}' does not accept them: {error}") from None
    autoreset = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    # The rollout implements exactly these two modes; anything else would be learned wrongly.
    assert autoreset in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP), autoreset
    check_spaces(cfg.env_id, env.single_observation_space, env.single_action_space)
    return VectorEnvs(env, cfg.env_id, autoreset, process_seed(cfg.seed if seed is None else seed, rank))


def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    """ConfigError unless ppokit has an encoder and an action head for these spaces."""
    if not isinstance(observation_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise ConfigError(
            f"env '{env_id}': observation space {observation_space} is not supported "
            "(accepted: Box, Discrete; flatten dict observations with a wrapper)"
        )
    supported = (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
    if not (isinstance(action_space, supported) or (
        isinstance(action_space, gym.spaces.Box) and np.issubdtype(action_space.dtype, np.floating)
    )):
        raise ConfigError(
            f"env '{env_id}': action space {action_space} is not supported "
            "(accepted: Discrete, MultiDiscrete, MultiBinary, float Box)"
        )
