"""Capture and restore the state of a vector env, for an exact ``--resume``.

Works for envs whose state is plain attributes (numbers, numpy arrays, numpy random
generators) on the env, its wrappers and the vector env itself, which covers gymnasium's
classic-control and toy-text envs and their vectorized versions, plus MuJoCo envs (qpos, qvel,
act, time). Anything else (AsyncVectorEnv, whose envs live in other processes; EnvPool) returns ``None``
and a resumed run starts fresh episodes instead, with a warning.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

SKIP = {"spec", "metadata", "render_mode", "screen", "clock", "surf", "screens", "_saved_kwargs"}


def _objects(vector_env: gym.vector.VectorEnv) -> list[Any] | None:
    if isinstance(vector_env, gym.vector.AsyncVectorEnv) or not getattr(vector_env, "captures_state", True):
        return None  # the envs live in other processes, or in C++ (EnvPool)
    objects: list[Any] = [vector_env]
    for env in getattr(vector_env, "envs", []):
        while isinstance(env, gym.Wrapper):
            objects.append(env)
            env = env.env
        objects.append(env)
    return objects


def _captured(value: Any) -> str | None:
    """The kind of attribute value :func:`capture` saves ("scalar", "array", "generator"), else None."""
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return "scalar"
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":  # numbers (not text, e.g. FrozenLake's map)
        return "array"
    if isinstance(value, np.random.Generator):
        return "generator"
    return None


def _attributes(obj: Any) -> dict[str, Any]:
    """The plain attributes of ``obj`` that are env state (not spaces, renderers, metadata)."""
    return {name: value for name, value in vars(obj).items() if name not in SKIP and not isinstance(value, gym.Space)}


def capture(vector_env: gym.vector.VectorEnv) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """``(arrays, json_values)`` describing the env's state, or ``None`` if it cannot be captured."""
    objects = _objects(vector_env)
    if objects is None:
        return None
    arrays: dict[str, np.ndarray] = {}
    values: dict[str, Any] = {}
    for i, obj in enumerate(objects):
        for name, value in _attributes(obj).items():
            key, kind = f"{i}.{name}", _captured(value)
            if kind == "scalar":
                values[key] = value.item() if isinstance(value, np.generic) else value
            elif kind == "array":
                arrays[key] = np.ascontiguousarray(value)
            elif kind == "generator":
                values[key] = {"generator": value.bit_generator.state}
        if _is_mujoco(obj):
            for field in MUJOCO_ARRAYS:
                arrays[f"{i}.mujoco.{field}"] = np.array(getattr(obj.data, field))
            values[f"{i}.mujoco.time"] = float(obj.data.time)
    return arrays, values


MUJOCO_ARRAYS = ("qpos", "qvel", "act")


def _is_mujoco(obj: Any) -> bool:
    data = getattr(obj, "data", None)
    return data is not None and hasattr(data, "qpos") and hasattr(obj, "set_state")


class StateMismatch(ValueError):
    """A saved env state entry that the freshly made env has no place for (name, kind, dtype or shape)."""


def restore(vector_env: gym.vector.VectorEnv, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> bool:
    """Put back a state from :func:`capture` into a freshly made (and reset) env of the same id; True if done.

    Only what :func:`capture` would save from this env is written back: each entry must name an
    object by index and one of its plain attributes that holds a value of the same kind (or
    ``None``), with the same dtype and shape for arrays; the MuJoCo arrays must fit the model.
    Anything else raises :class:`StateMismatch` before the env is changed, so a checkpoint cannot
    set arbitrary attributes on the env.
    """
    objects = _objects(vector_env)
    if objects is None:
        return False
    if not isinstance(values, dict):
        raise StateMismatch("env_values is not a mapping")
    expected = capture(vector_env)
    assert expected is not None
    writes = [_planned_write(objects, expected, key, value) for key, value in {**arrays, **values}.items()]
    for write in writes:
        write()
    for i, obj in enumerate(objects):
        if f"{i}.mujoco.qpos" in arrays:
            import mujoco

            mujoco.mj_forward(obj.model, obj.data)
    return True


def _planned_write(objects: list[Any], expected: tuple[dict, dict], key: Any, value: Any):
    """A function that writes ``value`` into the env, after checking that ``key`` fits (else StateMismatch)."""
    expected_arrays, expected_values = expected
    index, _, name = str(key).partition(".")
    if not (index.isdigit() and int(index) < len(objects)) or not name:
        raise StateMismatch(f"entry {key!r} names no object of this env")
    obj = objects[int(index)]
    if name.startswith("mujoco."):
        return _mujoco_write(obj, key, name[len("mujoco."):], value, expected_arrays, expected_values)
    attributes = _attributes(obj)
    if name not in attributes:
        raise StateMismatch(f"entry {key!r}: the env has no attribute {name!r} to restore")
    current = attributes[name]
    kind = _captured(current)
    if isinstance(value, np.ndarray):
        if kind == "array":
            if value.shape != current.shape or value.dtype != current.dtype:
                raise StateMismatch(f"entry {key!r}: {value.dtype}{list(value.shape)} does not fit the env's "
                                    f"{current.dtype}{list(current.shape)}")
            return lambda: np.copyto(current, value)
        if current is None and value.dtype != object:
            return lambda: setattr(obj, name, value.copy())
    elif isinstance(value, dict) and set(value) == {"generator"}:
        if kind == "generator":
            return lambda: _set_generator(current, key, value["generator"])
    elif isinstance(value, (bool, int, float)) and (kind == "scalar" or current is None):
        if current is None:
            return lambda: setattr(obj, name, value)
        if isinstance(current, (bool, np.bool_)) != isinstance(value, bool) or (
                isinstance(current, (int, np.integer)) and not isinstance(value, int)):
            raise StateMismatch(f"entry {key!r}: {type(value).__name__} does not fit the env's "
                                f"{type(current).__name__}")
        return lambda: setattr(obj, name, type(current)(value))
    raise StateMismatch(f"entry {key!r}: a {type(value).__name__} does not fit the env's "
                        f"{type(current).__name__} attribute")


def _set_generator(generator: np.random.Generator, key: str, state: Any) -> None:
    try:
        generator.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise StateMismatch(f"entry {key!r}: not a random generator state ({type(error).__name__})") from None


def _mujoco_write(obj: Any, key: str, field: str, value: Any, expected_arrays: dict, expected_values: dict):
    if key in expected_arrays and field in MUJOCO_ARRAYS and isinstance(value, np.ndarray):
        target = getattr(obj.data, field)
        if value.shape == expected_arrays[key].shape:
            def write() -> None:
                if target.size:
                    target[:] = value
            return write
    if key in expected_values and field == "time" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return lambda: setattr(obj.data, "time", float(value))
    raise StateMismatch(f"entry {key!r} does not fit this MuJoCo env")
