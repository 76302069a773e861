"""Shipped presets and how a run's config is put together.

Order, later wins: dataclass defaults -> preset -> ``--config`` file -> ``--set`` overrides ->
the CLI shorthands (``--total-steps``, ``--seed``, ``--num-envs``, ``--device``).

A preset is ``presets/NAME.yaml``. ``ENV`` (with ``/`` written as ``-``) is the env's PPO
preset; ``ENV__ALGO`` is the preset for another algorithm on that env. With no ``--preset``,
the one matching the env and algorithm is used when it ships.

A preset whose name is not an env id (``ppo-paper``: the PPO paper's MuJoCo hyperparameters) is
made for any env of the right kind and has no ``solved_threshold``; name it with ``--preset``.
Unless it names its env in an ``env_id`` field: ``spinningup-ppo`` (a tutorial's setup on
CartPole-v1) is made for that env, threshold included (``ppokit train CartPole-v1 --preset
spinningup-ppo``); on another env it gives its hyperparameters only.

A ``solved_threshold`` belongs to its env: a preset or ``--config`` file made for another env
than the run's gives its hyperparameters but not its threshold (``--set solved_threshold=...``
sets one for any env).

A shipped preset may start from another with ``extends: NAME`` (its own fields win, section by
section): ``Hopper-v5``, ``Walker2d-v5`` and ``Ant-v5`` are ``ppo-cleanrl`` with their env's
threshold (and, for Ant, one env field). Only shipped presets are read this way (one level, no
chains); a ``--config`` file is one self-contained file and may not name another.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ppokit.config import (
    ALGO_NAMES,
    Config,
    ConfigError,
    did_you_mean,
    from_dict,
    load_yaml,
    merge,
    parse_override,
    parse_yaml,
    to_dict,
)

PRESET_DIR = Path(__file__).parent / "presets"


def available() -> dict[str, dict[str, Any]]:
    """``name -> preset dict`` for every shipped preset, ``extends`` resolved."""
    files = {path.stem: parse_yaml(path.read_text()) for path in sorted(PRESET_DIR.glob("*.yaml"))}
    return {name: _extended(name, files) for name in files}


def _extended(name: str, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Preset ``name`` of ``files`` (the shipped files as read) merged over the one it ``extends``."""
    data = files[name]
    base = data.get("extends")
    if base is None:
        return data
    if base not in files or "extends" in files[base]:  # a broken shipped file: tests/test_config.py
        raise ConfigError(f"preset {name}: extends '{base}', which is not a shipped preset without an extends")
    return merge(files[base], {key: value for key, value in data.items() if key != "extends"})


def _file_name(env_id: str) -> str:
    return env_id.replace("/", "-")


def default_preset(env_id: str, algo: str | None, presets: dict[str, dict[str, Any]] | None = None) -> str | None:
    """The preset used when none is named: ``ENV__ALGO`` or ``ENV`` (if its algo matches).

    ``presets`` is :func:`available`'s result when the caller has already read it."""
    presets = available() if presets is None else presets
    base = _file_name(env_id)
    if algo is not None and algo != "ppo" and f"{base}__{algo}" in presets:
        return f"{base}__{algo}"
    if base in presets and (algo is None or presets[base].get("algo", "ppo") == algo):
        return base
    return None


def build_config(
    env_id: str,
    *,
    algo: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    sets: list[str] | tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> Config:
    """The resolved :class:`Config` for a run (see the module docstring for the order)."""
    data = to_dict(Config())
    presets = available()
    if algo is not None and algo not in ALGO_NAMES:
        raise ConfigError(f"unknown algo '{algo}'{did_you_mean(algo, ALGO_NAMES)} (accepted: {', '.join(ALGO_NAMES)})")
    name = preset if preset is not None else default_preset(env_id, algo, presets)
    if name is not None:
        if name not in presets:
            raise ConfigError(
                f"unknown preset '{name}'{did_you_mean(name, presets)} (list them with: ppokit presets)"
            )
        same_env = preset_env(name, presets[name]) == _file_name(env_id)
        data = merge(data, _threshold_only_if(presets[name], same_env=same_env))
        data["preset"] = name
    if config_file is not None:
        from_file = load_yaml(config_file)
        data = merge(data, _threshold_only_if(from_file, same_env=from_file.get("env_id", env_id) == env_id))
    for text in sets:
        override = parse_override(text)
        if "env_id" in override and override["env_id"] != env_id:
            raise ConfigError(f"--set env_id: the env is the ENV_ID argument ({env_id}); give it there instead")
        data = merge(data, override)
    data["env_id"] = env_id
    if algo is not None:
        data["algo"] = algo
    for key, value in (overrides or {}).items():
        if value is not None:
            data = _set_path(data, key, value)
    return from_dict(data)


def preset_env(name: str, data: dict[str, Any] | None = None) -> str:
    """The env a preset was made for, as spelled in file names: its ``env_id`` field when
    ``data`` (the preset) has one, else its name's (``ENV`` or ``ENV__ALGO``)."""
    if data is not None and isinstance(data.get("env_id"), str):
        return _file_name(data["env_id"])
    return name.split("__")[0]


def is_generic(name: str, data: dict[str, Any] | None = None) -> bool:
    """Whether a preset is made for any env: its name is not a versioned env id like ``Hopper-v5``
    and ``data`` (the preset), when given, names no ``env_id``."""
    return re.search(r"-v\d+$", preset_env(name, data)) is None


def _threshold_only_if(data: dict[str, Any], same_env: bool) -> dict[str, Any]:
    """``data`` (a preset or config file), without its ``solved_threshold`` unless made for the run's env."""
    if same_env:
        return data
    return {key: value for key, value in data.items() if key != "solved_threshold"}


def _set_path(data: dict, dotted: str, value: Any) -> dict:
    nested: Any = value
    for part in reversed(dotted.split(".")):
        nested = {part: nested}
    return merge(data, nested)
