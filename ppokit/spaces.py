"""Observation and action spaces: their JSON form (for meta.json) and the checks that ppokit supports them.

Shared by environment construction, checkpoints and evaluation, so none of them imports another.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from ppokit.errors import ConfigError, quote

MAX_SPACE_SIZE = 2**23  # elements of a space read from meta.json (8M: four stacked 1024x1024 frames fit)


def is_image_space(space: gym.Space) -> bool:
    """uint8 Box of rank 3, (H, W, C) or (C, H, W), or of rank 4, (K, H, W, C) stacked frames: handled by a CNN."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (3, 4)


def _bounds(array: np.ndarray) -> Any:
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return _finite(flat[0].item())
    return [_finite(x) for x in flat.tolist()]


def _finite(x: float) -> Any:
    return x if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A JSON description of a Box / Discrete / MultiDiscrete / MultiBinary space."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": _bounds(space.low), "high": _bounds(space.high)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": space.n if isinstance(space.n, int) else list(space.n)}
    raise ValueError(f"unsupported space {space}")


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """Inverse of :func:`space_to_json`."""
    kind = data["type"]
    if kind == "Box":
        shape = tuple(int(n) for n in data["shape"])
        if any(n < 0 for n in shape) or int(np.prod(shape)) > MAX_SPACE_SIZE:
            raise ValueError(f"Box shape {shape} is not plausible")

        def bound(value: Any) -> np.ndarray:
            array = np.array(value, dtype=np.float64) if not isinstance(value, str) else np.array(float(value))
            return np.broadcast_to(array.astype(np.float64), shape).reshape(shape)

        dtype = np.dtype(data["dtype"])
        return gym.spaces.Box(bound(data["low"]).astype(dtype), bound(data["high"]).astype(dtype), shape, dtype)
    if kind == "Discrete":
        if not 0 < int(data["n"]) <= MAX_SPACE_SIZE:
            raise ValueError(f"Discrete({data['n']}) is not plausible")
        return gym.spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "MultiDiscrete":
        if int(np.sum(data["nvec"])) > MAX_SPACE_SIZE:
            raise ValueError("MultiDiscrete space is not plausible")
        return gym.spaces.MultiDiscrete(data["nvec"], start=data.get("start"))
    if kind == "MultiBinary":
        if int(np.prod(data["n"])) > MAX_SPACE_SIZE:
            raise ValueError("MultiBinary space is not plausible")
        return gym.spaces.MultiBinary(data["n"])
    raise ValueError(f"unknown space type {kind!r}")



def _holds_images(space: gym.Space) -> bool:
    """Whether ``space`` or a part of a Dict / Tuple space is an image space."""
    if isinstance(space, gym.spaces.Dict):
        return any(_holds_images(part) for part in space.spaces.values())
    if isinstance(space, gym.spaces.Tuple):
        return any(_holds_images(part) for part in space.spaces)
    return is_image_space(space)


def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    """ConfigError unless ppokit has an encoder and an action head for these spaces."""
    if isinstance(observation_space, (gym.spaces.Dict, gym.spaces.Tuple)) and _holds_images(observation_space):
        raise ConfigError(
            f"env {quote(env_id)}: observation space {observation_space} holds images among other observations, "
            "which ppokit does not support: keep the image alone with a wrapper, e.g. "
            "gymnasium.wrappers.TransformObservation(env, lambda obs: obs['pixels'], env.observation_space['pixels'])"
        )
    if isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) in (3, 4) and not is_image_space(
            observation_space):
        raise ConfigError(
            f"env {quote(env_id)}: observation space {observation_space} looks like images (rank "
            f"{len(observation_space.shape)}) but is not uint8; ppokit's CNNs take uint8 pixels in [0, 255] (they "
            "scale them): convert them with a wrapper (gymnasium.wrappers.TransformObservation), "
            "or flatten them for an MLP "
            "(gymnasium.wrappers.FlattenObservation)"
        )
    if not isinstance(observation_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise ConfigError(
            f"env {quote(env_id)}: observation space {observation_space} is not supported "
            "(accepted: Box, Discrete; flatten dict observations with a wrapper)"
        )
    for what, space in (("observation", observation_space), ("action", action_space)):
        if space.shape is not None and len(space.shape) > 0 and int(np.prod(space.shape)) == 0:
            raise ConfigError(f"env {quote(env_id)}: {what} space {space} has no elements (shape {space.shape}); "
                              "ppokit needs at least one number per observation and action")
    supported = (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
    if not (isinstance(action_space, supported) or (
        isinstance(action_space, gym.spaces.Box) and np.issubdtype(action_space.dtype, np.floating)
    )):
        raise ConfigError(
            f"env {quote(env_id)}: action space {action_space} is not supported "
            "(accepted: Discrete, MultiDiscrete, MultiBinary, float Box)"
        )


def check_agent_fits(agent: Any, env_id: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    """ConfigError unless the agent was built for exactly these spaces (e.g. a checkpoint of another env)."""
    for what, theirs, ours in (("observation", observation_space, agent.observation_space),
                               ("action", action_space, agent.action_space)):
        if space_to_json(theirs) != space_to_json(ours):
            raise ConfigError(
                f"the agent was trained on {what} space {ours}, but env {quote(env_id)} has {theirs}"
            )
