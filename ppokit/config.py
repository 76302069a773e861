"""Typed configuration: nested dataclasses, YAML in and out, ``--set`` overrides, validation.

Every field is typed; overrides are parsed as YAML scalars/lists and then checked against the
field's type (never ``eval``). Bad input raises :class:`ConfigError` with one line naming the bad
field and what is accepted; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Bad user input (config value, file, env id, ...): reported as one line, exit code 2."""


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


@dataclass
class RolloutConfig:
    num_envs: int = 8
    num_steps: int = 128
    gamma: float = 0.99
    gae_lambda: float = 0.95


@dataclass
class EnvConfig:
    vector: str = "auto"  # auto | sync | async
    normalize_obs: bool = False
    normalize_reward: bool = False
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    kwargs: dict = field(default_factory=dict)  # passed to gymnasium.make


@dataclass
class ModelConfig:
    hidden_sizes: list = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"  # tanh | relu | elu | gelu
    shared_trunk: bool = False
    ortho_init: bool = True
    log_std_init: float = 0.0


@dataclass
class PPOConfig:
    learning_rate: float = 3e-4
    anneal_lr: bool = True
    update_epochs: int = 10
    minibatch_size: int = 64
    clip_coef: float | None = 0.2  # None: the unclipped surrogate
    anneal_clip: bool = False
    clip_vloss: bool = False
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float | None = 0.5
    target_kl: float | None = None
    norm_adv: bool = True
    adam_eps: float = 1e-5


@dataclass
class PPOKLConfig:
    learning_rate: float = 3e-4
    anneal_lr: bool = True
    update_epochs: int = 10
    minibatch_size: int = 64
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float | None = 0.5
    norm_adv: bool = True
    adam_eps: float = 1e-5
    kl_target: float = 0.01
    beta_init: float = 1.0
    adaptive: bool = True


@dataclass
class TRPOConfig:
    max_kl: float = 0.01
    cg_iters: int = 10
    damping: float = 0.1
    backtrack_iters: int = 10
    backtrack_coef: float = 0.8
    value_lr: float = 1e-3
    value_epochs: int = 5
    value_minibatch_size: int = 64
    norm_adv: bool = True


@dataclass
class VPGConfig:
    learning_rate: float = 1e-3
    anneal_lr: bool = False  # linearly to 0 over the run (the policy's learning rate only)
    value_lr: float = 1e-3
    value_epochs: int = 5
    value_minibatch_size: int = 64
    baseline: str = "value"  # value | none
    norm_adv: bool = True
    max_grad_norm: float | None = None


@dataclass
class Config:
    env_id: str = "CartPole-v1"
    algo: str = "ppo"
    seed: int = 0
    total_steps: int = 100_000
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    preset: str | None = None
    solved_threshold: float | None = None
    torch_threads: int = 1
    compile: str = "auto"  # auto | on | off: torch.compile of the update step
    checkpoint_every: int | None = None  # also save checkpoints/latest every N iterations
    checkpoint_interval_s: float = 30.0  # save checkpoints/latest at most this often (seconds)
    eval_episodes: int = 20  # deterministic evaluation after training
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    ppo_kl: PPOKLConfig = field(default_factory=PPOKLConfig)
    trpo: TRPOConfig = field(default_factory=TRPOConfig)
    vpg: VPGConfig = field(default_factory=VPGConfig)

    @property
    def batch_size(self) -> int:
        """Environment steps per iteration on this process: num_steps * num_envs."""
        return self.rollout.num_steps * self.rollout.num_envs

    @property
    def iterations(self) -> int:
        """Number of collect/update iterations, rounding ``total_steps`` up to whole iterations."""
        return max(1, math.ceil(self.total_steps / self.batch_size))


# --------------------------------------------------------------------------- dict <-> dataclass


def to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check ``value`` against a field annotation, converting int -> float where harmless."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [a for a in options if a is not type(None)][0]
        return _coerce(value, inner, name)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{name}: expected a finite number, got {value!r}")
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return _coerce(float(value), float, name)
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if annotation is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{name}: expected a list like [64, 64], got {value!r}")
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{name}: expected a mapping, got {value!r}")
    raise ConfigError(f"{name}: unsupported field type")  # pragma: no cover


def from_dict(data: Any, cls: type = Config, prefix: str = "") -> Any:
    """Build a (nested) config dataclass from a dict, rejecting unknown keys with did-you-mean."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    hints = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in hints:
            raise ConfigError(
                f"unknown config field '{prefix}{key}'{did_you_mean(str(key), hints)}"
                f" (fields of {where}: {', '.join(hints)})"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(value, hint, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge: values of ``update`` win; nested sections merge field by field."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict:
    """Read a config YAML file as a dict; any problem is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file '{path}' cannot be read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{path}' must hold a mapping of fields, not a {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> dict:
    """``"ppo.clip_coef=0.1"`` -> ``{"ppo": {"clip_coef": 0.1}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected KEY=VALUE, e.g. ppo.clip_coef=0.1")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set '{text}': expected KEY=VALUE, e.g. ppo.clip_coef=0.1")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot parse value '{raw}'") from None
    nested: dict = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def save_yaml(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (what ``--config`` reads back)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


ALGO_NAMES = ("ppo", "ppo-kl", "trpo", "vpg")
ACTIVATIONS = ("tanh", "relu", "elu", "gelu")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive_int(value: int, name: str) -> None:
    _check(value >= 1, f"{name}: expected a positive integer, got {value}")


def _in_unit_interval(value: float, name: str, *, open_low: bool = False) -> None:
    low_ok = value > 0 if open_low else value >= 0
    interval = "(0, 1]" if open_low else "[0, 1]"
    _check(low_ok and value <= 1, f"{name}: expected a number in {interval}, got {value}")


def _positive(value: float | None, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    _check(value is not None and value > 0, f"{name}: expected a positive number, got {value}")


def validate(cfg: Config, world_size: int = 1) -> Config:
    """Check every field's range; raise :class:`ConfigError` naming the first bad one."""
    _check(
        cfg.algo in ALGO_NAMES,
        f"unknown algo '{cfg.algo}'{did_you_mean(cfg.algo, ALGO_NAMES)} "
        f"(accepted: {', '.join(ALGO_NAMES)})",
    )
    _check(cfg.seed >= 0, f"seed: expected a non-negative integer, got {cfg.seed}")
    _positive_int(cfg.total_steps, "total_steps")
    _check(
        cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
        f"device: expected auto, cpu, cuda or cuda:N, got '{cfg.device}'",
    )
    _positive_int(cfg.torch_threads, "torch_threads")
    _check(cfg.compile in ("auto", "on", "off"), f"compile: expected auto, on or off, got '{cfg.compile}'")
    if cfg.checkpoint_every is not None:
        _positive_int(cfg.checkpoint_every, "checkpoint_every")
    _check(cfg.checkpoint_interval_s >= 0, f"checkpoint_interval_s: expected >= 0, got {cfg.checkpoint_interval_s}")
    if cfg.solved_threshold is not None:
        _check(math.isfinite(cfg.solved_threshold), "solved_threshold: expected a finite number or null")
    _check(cfg.eval_episodes >= 0, f"eval_episodes: expected >= 0, got {cfg.eval_episodes}")

    r = cfg.rollout
    _positive_int(r.num_envs, "rollout.num_envs")
    _positive_int(r.num_steps, "rollout.num_steps")
    _in_unit_interval(r.gamma, "rollout.gamma")
    _in_unit_interval(r.gae_lambda, "rollout.gae_lambda")
    _check(
        r.num_envs % world_size == 0,
        f"rollout.num_envs: {r.num_envs} envs cannot be split evenly over {world_size} processes",
    )

    e = cfg.env
    _check(e.vector in ("auto", "sync", "async"), f"env.vector: expected auto, sync or async, got '{e.vector}'")
    _positive(e.clip_obs, "env.clip_obs")
    _positive(e.clip_reward, "env.clip_reward")

    m = cfg.model
    _check(
        len(m.hidden_sizes) > 0
        and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in m.hidden_sizes),
        f"model.hidden_sizes: expected a non-empty list of positive integers, got {m.hidden_sizes}",
    )
    _check(
        not (m.shared_trunk and cfg.algo in ("trpo", "vpg")),
        f"model.shared_trunk: algo {cfg.algo} fits the value function separately from the policy and needs "
        "separate actor and critic networks; use model.shared_trunk=false (or --algo ppo / ppo-kl)",
    )
    _check(
        m.activation in ACTIVATIONS,
        f"model.activation: expected one of {', '.join(ACTIVATIONS)}, got '{m.activation}'"
        f"{did_you_mean(m.activation, ACTIVATIONS)}",
    )

    per_process_batch = cfg.batch_size // world_size
    for name, section in (("ppo", cfg.ppo), ("ppo_kl", cfg.ppo_kl)):
        _positive(section.learning_rate, f"{name}.learning_rate")
        _positive_int(section.update_epochs, f"{name}.update_epochs")
        _positive_int(section.minibatch_size, f"{name}.minibatch_size")
        _check(
            section.minibatch_size <= per_process_batch,
            f"{name}.minibatch_size: {section.minibatch_size} is larger than the batch of "
            f"{per_process_batch} steps (rollout.num_steps * rollout.num_envs per process)",
        )
        _check(section.ent_coef >= 0, f"{name}.ent_coef: expected >= 0, got {section.ent_coef}")
        _check(section.vf_coef >= 0, f"{name}.vf_coef: expected >= 0, got {section.vf_coef}")
        _positive(section.max_grad_norm, f"{name}.max_grad_norm", optional=True)
        _positive(section.adam_eps, f"{name}.adam_eps")
    _positive(cfg.ppo.clip_coef, "ppo.clip_coef", optional=True)
    _positive(cfg.ppo.target_kl, "ppo.target_kl", optional=True)
    _positive(cfg.ppo_kl.kl_target, "ppo_kl.kl_target")
    _positive(cfg.ppo_kl.beta_init, "ppo_kl.beta_init")

    t = cfg.trpo
    _positive(t.max_kl, "trpo.max_kl")
    _positive_int(t.cg_iters, "trpo.cg_iters")
    _check(t.damping >= 0, f"trpo.damping: expected >= 0, got {t.damping}")
    _positive_int(t.backtrack_iters, "trpo.backtrack_iters")
    _in_unit_interval(t.backtrack_coef, "trpo.backtrack_coef", open_low=True)
    _positive(t.value_lr, "trpo.value_lr")
    _positive_int(t.value_epochs, "trpo.value_epochs")
    _positive_int(t.value_minibatch_size, "trpo.value_minibatch_size")

    v = cfg.vpg
    _positive(v.learning_rate, "vpg.learning_rate")
    _positive(v.value_lr, "vpg.value_lr")
    _positive_int(v.value_epochs, "vpg.value_epochs")
    _positive_int(v.value_minibatch_size, "vpg.value_minibatch_size")
    _check(v.baseline in ("value", "none"), f"vpg.baseline: expected value or none, got '{v.baseline}'")
    _positive(v.max_grad_norm, "vpg.max_grad_norm", optional=True)
    return cfg
