"""Capture and restore the state of a vector env, for an exact ``--resume``.

Works for envs whose state is plain attributes (numbers, numpy arrays, numpy random
generators) on the env, its wrappers and the vector env itself, which covers gymnasium's
classic-control and toy-text envs and their vectorized versions, plus MuJoCo envs (qpos, qvel,
act, time). Anything else (AsyncVectorEnv, whose envs live in other processes) returns ``None``
and a resumed run starts fresh episodes instead, with a warning.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

SKIP = {"spec", "metadata", "render_mode", "screen", "clock", "surf", "screens", "_saved_kwargs"}


def _objects(vector_env: gym.vector.VectorEnv) -> list[Any] | None:
    if isinstance(vector_env, gym.vector.AsyncVectorEnv):
        return None
    objects: list[Any] = [vector_env]
    for env in getattr(vector_env, "envs", []):
        while isinstance(env, gym.Wrapper):
            objects.append(env)
            env = env.env
        objects.append(env)
    return objects


def capture(vector_env: gym.vector.VectorEnv) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """``(arrays, json_values)`` describing the env's state, or ``None`` if it cannot be captured."""
    objects = _objects(vector_env)
    if objects is None:
        return None
    arrays: dict[str, np.ndarray] = {}
    values: dict[str, Any] = {}
    for i, obj in enumerate(objects):
        for name, value in vars(obj).items():
            key = f"{i}.{name}"
            if name in SKIP or isinstance(value, gym.Space):
                continue
            if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
                values[key] = value.item() if isinstance(value, np.generic) else value
            elif isinstance(value, np.ndarray) and value.dtype != object:
                arrays[key] = np.ascontiguousarray(value)
            elif isinstance(value, np.random.Generator):
                values[key] = {"generator": value.bit_generator.state}
        data = getattr(obj, "data", None)
        if data is not None and hasattr(data, "qpos") and hasattr(obj, "set_state"):
            for field in ("qpos", "qvel", "act"):
                arrays[f"{i}.mujoco.{field}"] = np.array(getattr(data, field))
            values[f"{i}.mujoco.time"] = float(data.time)
    return arrays, values


def restore(vector_env: gym.vector.VectorEnv, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> bool:
    """Put back a state from :func:`capture` into a freshly made env of the same id; True if done."""
    objects = _objects(vector_env)
    if objects is None:
        return False
    for key, value in {**arrays, **values}.items():
        index, name = key.split(".", 1)
        obj = objects[int(index)]
        if name.startswith("mujoco."):
            continue
        if isinstance(value, dict) and "generator" in value:
            generator = getattr(obj, name, None)
            if not isinstance(generator, np.random.Generator):
                generator = np.random.default_rng()
                setattr(obj, name, generator)
            generator.bit_generator.state = value["generator"]
        elif isinstance(value, np.ndarray):
            current = getattr(obj, name, None)
            if isinstance(current, np.ndarray) and current.shape == value.shape and current.dtype == value.dtype:
                current[...] = value
            else:
                setattr(obj, name, value.copy())
        else:
            setattr(obj, name, value)
    for i, obj in enumerate(objects):
        if f"{i}.mujoco.qpos" in arrays:
            import mujoco

            obj.data.qpos[:] = arrays[f"{i}.mujoco.qpos"]
            obj.data.qvel[:] = arrays[f"{i}.mujoco.qvel"]
            if obj.data.act.size:
                obj.data.act[:] = arrays[f"{i}.mujoco.act"]
            obj.data.time = values[f"{i}.mujoco.time"]
            mujoco.mj_forward(obj.model, obj.data)
    return True
