"""Typed configuration: nested dataclasses, YAML in and out, ``--set`` overrides, validation.

Every field is typed; overrides are parsed as YAML scalars/lists and then checked against the
field's type (never ``eval``). Bad input raises :class:`ConfigError` with one line naming the bad
field and what is accepted; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ppokit.algos import ALGOS
from ppokit.algos.registry import AlgoSpec, SectionCheck
from ppokit.errors import ConfigError, did_you_mean, quote
from ppokit.files import read_regular, write_atomic
from ppokit.validation import check, in_unit_interval, non_negative, one_of, positive, positive_int

# yaml.safe_load's loader, in libyaml's C version when installed (same rules, ~10x faster): it
# builds only plain scalars, lists and mappings, never Python objects.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


MAX_CONFIG_BYTES = 1 << 20  # a config file larger than 1 MB is not a config
MAX_YAML_DEPTH = 32  # nesting of lists and mappings; a config needs 3


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` (see :data:`SAFE_LOADER`), refusing anchors and aliases.

    An alias repeats a node without repeating its text, so a few hundred bytes of ``&a [*b, *b,
    ...]`` expand to billions of nodes (a "billion laughs" bomb); a config never needs them. The
    document is first read as a stream of events (linear in its length, nothing expanded), which
    also bounds its nesting; only then is it built."""
    depth = 0
    for event in yaml.parse(text, Loader=SAFE_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.MarkedYAMLError(problem="anchors and aliases (&name, *name) are not accepted",
                                       problem_mark=event.start_mark)
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise yaml.MarkedYAMLError(problem=f"nested more than {MAX_YAML_DEPTH} levels deep",
                                           problem_mark=event.start_mark)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
    return yaml.load(text, Loader=SAFE_LOADER)


@dataclass
class RolloutConfig:
    num_envs: int = 8
    num_steps: int = 128
    gamma: float = 0.99
    gae_lambda: float = 0.95


@dataclass
class EnvConfig:
    vector: str = "auto"  # auto | sync | async | envpool (the envpool extra)
    normalize_obs: bool = False
    normalize_reward: bool = False
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    # The learner sees (r + reward_shift) * reward_scale (before normalize_reward); the returns
    # reported in metrics, evaluations and summary.json stay the env's. (r + 8) / 8: shift 8, scale 0.125.
    reward_shift: float = 0.0
    reward_scale: float = 1.0
    kwargs: dict = field(default_factory=dict)  # passed to gymnasium.make


@dataclass
class PixelsConfig:
    """Preprocessing of image observations (:mod:`ppokit.pixels`), applied to every env a run makes:
    training, the evaluations, ``ppokit eval``, ``record`` and ``export`` (it is saved with the config).

    ``preprocess``: ``auto`` (``atari`` for ``ALE/`` ids, else ``none``), ``atari`` (gymnasium's
    AtariPreprocessing, then FrameStackObservation), ``image`` (ResizeObservation,
    GrayscaleObservation, FrameStackObservation, for any env of image observations), ``pong``
    (Karpathy's "Pong from pixels": 80x80 difference frames of the cropped, binarized field of ALE
    Pong, float32 in {-1, 0, 1}, for an MLP; frames stacked only if frame_stack > 1) or ``none``.
    The fields marked *training only* change the training envs alone: evaluations play full games
    and report raw scores."""

    preprocess: str = "auto"  # auto | atari | image | pong | none
    size: int = 84  # frames are resized to size x size (atari, image; 0: kept as they are in image mode)
    grayscale: bool = True  # atari, image
    frame_stack: int = 4  # the last k frames make one observation (1: no stacking)
    frame_skip: int = 4  # atari: each action repeated k frames (max-pooled over the last two)
    noop_max: int = 30  # atari: up to this many no-op actions after each reset (0: none)
    fire_reset: bool = True  # atari: press FIRE after a reset in games that need it (Breakout)
    episodic_life: bool = True  # atari, training only: a lost life ends the episode for the learner
    clip_reward: bool = True  # atari, image; training only: rewards clipped to [-1, 1]


@dataclass
class ModelConfig:
    hidden_sizes: list = field(default_factory=lambda: [64, 64])
    actor_hidden_sizes: list | None = None  # the actor's own layers (null: hidden_sizes)
    critic_hidden_sizes: list | None = None  # the critic's own layers (null: hidden_sizes)
    activation: str = "tanh"  # tanh | relu | elu | gelu
    encoder: str = "auto"  # image observations: auto | nature | small (ppokit.networks.encoder_for)
    # image observations: the dtype the CNN computes in, float32 | bfloat16 (autocast: its weights,
    # the heads and the loss stay float32; ppokit.networks.ImageEncoder)
    cnn_dtype: str = "float32"
    shared_trunk: bool = False
    ortho_init: bool = True
    log_std_init: float = 0.0
    # Gaussian policies (Box actions): the log-std is clamped to [log_std_min, log_std_max] (null:
    # no bound on that side); state_dependent_std: the log-std is a linear head on the actor's
    # features (its bias starts at log_std_init) instead of one free parameter per action dimension.
    log_std_min: float | None = None
    log_std_max: float | None = None
    state_dependent_std: bool = False


@dataclass
class EvalConfig:
    """Evaluation during training (:mod:`ppokit.evaluations`); ``eval_episodes`` is the one after it."""

    every_steps: int = 20_000  # evaluate every this many env steps and at the end; 0: never
    episodes: int = 5  # episodes per evaluation, on separate envs, the same seeds every time
    deterministic: bool = True  # act with the policy's mode (false: sample)


@dataclass
class BaseConfig:
    """The fields every run has; :data:`Config` adds one section per registered algorithm."""

    env_id: str = "CartPole-v1"
    algo: str = "ppo"
    seed: int = 0
    total_steps: int = 100_000
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    preset: str | None = None
    solved_threshold: float | None = None
    stop_when_solved: bool = False  # end the run (completed) once the last-20 mean reaches solved_threshold
    torch_threads: int = 1
    update_path: str = "auto"  # auto | eager | fast | autograd | compile: how gradient steps get gradients
    checkpoint_every: int | None = None  # also save checkpoints/latest every N iterations
    checkpoint_interval_s: float = 30.0  # save checkpoints/latest at most this often (seconds)
    dist_timeout_s: float = 600.0  # torchrun: give up on a process that died or hangs after this (seconds)
    eval_episodes: int = 20  # deterministic evaluation after training
    eval: EvalConfig = field(default_factory=EvalConfig)  # evaluation during training; picks checkpoints/best
    eval_max_episode_steps: int = 27_000  # an evaluation episode the env has not ended by then is stopped
    log_parameter_counts: bool = False  # say the policy's and the critic's parameter counts at the start
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    pixels: PixelsConfig = field(default_factory=PixelsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    @property
    def batch_size(self) -> int:
        """Environment steps per iteration on this process: num_steps * num_envs."""
        return self.rollout.num_steps * self.rollout.num_envs

    @property
    def iterations(self) -> int:
        """Number of collect/update iterations, rounding ``total_steps`` up to whole iterations."""
        return max(1, math.ceil(self.total_steps / self.batch_size))

    def algo_section(self, algo: str | None = None) -> Any:
        """The config section of ``algo`` (default: this run's), e.g. ``cfg.ppo_kl`` for ppo-kl."""
        return getattr(self, ALGOS[algo or self.algo].section)

    def fits_critic_apart(self) -> bool:
        """Whether this run's algorithm fits the value function apart from the policy (TRPO, VPG with a
        value baseline, ``value_fit=separate`` of ppo or ppo-kl): its agent needs separate actor and critic networks,
        and an image agent then gets two CNNs instead of one shared trunk."""
        section = self.algo_section()
        return ALGOS[self.algo].separate_critic(section) or getattr(section, "value_fit", "joint") == "separate"


def config_class(algos: dict[str, AlgoSpec]) -> type:
    """``BaseConfig`` plus one section per algorithm of the registry ``algos`` (``ppo``, ``ppo_kl``,
    ...), in registry order: an algorithm's module declares its section, nothing here names it."""
    sections = [(spec.section, spec.config, field(default_factory=spec.config)) for spec in algos.values()]
    return dataclasses.make_dataclass("Config", sections, bases=(BaseConfig,), namespace={"__module__": __name__})


if TYPE_CHECKING:
    Config = BaseConfig
else:
    Config = config_class(ALGOS)


# --------------------------------------------------------------------------- dict <-> dataclass


def to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_annotation(dotted: str, cls: type = None) -> Any:  # type: ignore[assignment]
    """The declared type of a config field by dotted name (``"ppo.clip_coef"`` -> ``float``), or
    None when there is no such field."""
    cls = cls or Config
    head, _, rest = dotted.partition(".")
    hints = _field_types(cls) if dataclasses.is_dataclass(cls) else {}
    if head not in hints:
        return None
    annotation = hints[head]
    if not rest:
        return annotation
    return field_annotation(rest, annotation) if dataclasses.is_dataclass(annotation) else None


INT_LIMIT = 2**63  # every integer field must fit in an int64 (torch, numpy)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check ``value`` against a field annotation, converting int -> float where harmless."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [a for a in options if a is not type(None)][0]
        try:
            return _coerce(value, inner, name)
        except ConfigError as error:
            raise ConfigError(str(error).replace(", got ", " or null, got ", 1)) from None
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {_show(value)}")
    if annotation is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT_LIMIT < value < INT_LIMIT:
                raise ConfigError(f"{name}: expected an integer below 2**63 in size, got {_show(value)}")
            return value
        raise ConfigError(f"{name}: expected an integer, got {_show(value)}")
    if annotation is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                number = math.inf
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None:
            raise ConfigError(f"{name}: expected a number, got {_show(value)}")
        if not math.isfinite(number):
            raise ConfigError(f"{name}: expected a finite number, got {_show(value)}")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: expected a string, got {_show(value)}")
    if annotation is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{name}: expected a list like [64, 64], got {_show(value)}")
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{name}: expected a mapping, got {_show(value)}")
    raise ConfigError(f"{name}: unsupported field type")  # pragma: no cover


UPDATE_PATHS = ("auto", "eager", "fast", "autograd", "compile")
# ppokit 0.1's ``compile: auto | on | off`` (config files, checkpoints, --set), read as update_path.
LEGACY_COMPILE = {"auto": "auto", "on": "compile", True: "compile", "off": "eager", False: "eager"}


def _upgrade_legacy_fields(data: dict) -> dict:
    """Rename the fields of older config files to today's (the run folder contract stays readable)."""
    if "compile" not in data:
        return data
    data = dict(data)
    old = data.pop("compile")
    if not isinstance(old, (str, bool)) or old not in LEGACY_COMPILE:
        raise ConfigError(f"compile: expected one of auto, on, off (now update_path: {', '.join(UPDATE_PATHS)}), "
                          f"got {_show(old)}")
    data.setdefault("update_path", LEGACY_COMPILE[old])
    return data


def from_dict(data: Any, cls: type = Config, prefix: str = "") -> Any:
    """Build a (nested) config dataclass from a dict, rejecting unknown keys with did-you-mean."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    if not prefix:
        data = _upgrade_legacy_fields(data)
    hints = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in hints:
            kind = "section or field" if not prefix else "field"
            raise ConfigError(
                f"unknown config {kind} {quote(f'{prefix}{key}')}{did_you_mean(str(key), hints, prefix)}"
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
    """Read a config YAML file (a regular file of at most :data:`MAX_CONFIG_BYTES`) as a dict; any
    problem is a :class:`ConfigError`."""
    path = Path(path)
    data = read_regular(path, MAX_CONFIG_BYTES, "config file")  # not /dev/zero, a FIFO or a huge file
    try:
        text = data.decode()
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file '{path}' cannot be read: {error}") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file '{path}' is not valid YAML{_yaml_problem(error)}") from None
    except RecursionError:
        raise ConfigError(f"config file '{path}' is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{path}' must hold a mapping of fields, not a {type(data).__name__}"
        )
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None)
    return f"{where}: {problem}" if problem else where


def parse_override(text: str) -> dict:
    """``"ppo.clip_coef=0.1"`` -> ``{"ppo": {"clip_coef": 0.1}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {quote(text)}: expected KEY=VALUE, e.g. ppo.clip_coef=0.1")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"--set {quote(text)}: expected KEY=VALUE, e.g. ppo.clip_coef=0.1")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {quote(key)}: cannot parse value {quote(raw)}{_yaml_problem(error)}") from None
    except RecursionError:
        raise ConfigError(f"--set {quote(key)}: value is nested too deeply") from None
    nested: dict = value
    for part in reversed(key.split(".")):
        nested = {part.strip(): nested}
    return nested


def save_yaml(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (what ``--config`` reads back), atomically and never through a link."""
    write_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


ALGO_NAMES = tuple(ALGOS)
ACTIVATIONS = ("tanh", "relu", "elu", "gelu")
VECTOR_MODES = ("auto", "sync", "async", "envpool")  # envpool: the envpool extra (ppokit.envs)
PREPROCESS_MODES = ("auto", "atari", "image", "pong", "none")
ENCODERS = ("auto", "nature", "small")
CNN_DTYPES = ("float32", "bfloat16")
DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N")
SEED_LIMIT = 2**32  # numpy's legacy seeding and most envs take 32-bit seeds
MAX_THREADS = 1024  # torch.set_num_threads overflows or tries to start millions of threads beyond
MAX_LOG_STD = 20.0  # exp(log_std) must stay far from float32's overflow (3.4e38 = exp(88.7))


def check_device(device: str) -> None:
    """ConfigError unless ``device`` is auto, cpu, cuda or cuda:N."""
    ok = device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", device) is not None
    check(
        ok,
        f"device: expected one of {', '.join(DEVICE_FORMS)}, got {quote(device)}"
        f"{did_you_mean(device, ('auto', 'cpu', 'cuda'))}",
    )


def _check_layer_sizes(sizes: list | None, name: str, *, optional: bool, empty: bool = False) -> None:
    """``empty``: ``[]`` is accepted (no layers after an image encoder: the heads read its features)."""
    if sizes is None and optional:
        return
    check(
        sizes is not None and (len(sizes) > 0 or empty)
        and all(isinstance(h, int) and not isinstance(h, bool) and 0 < h < INT_LIMIT for h in sizes),
        f"{name}: expected a {'' if empty else 'non-empty '}list of positive integers{' or null' if optional else ''}"
        f"{' ([] for image observations only)' if empty else ''}, got {_show(sizes)}",
    )


def validate(cfg: Config, world_size: int = 1) -> Config:
    """Check every field's range; raise :class:`ConfigError` naming the first bad one.

    Types (and finiteness of floats) are checked by :func:`from_dict`; this checks ranges and
    the relations between fields. Each algorithm's section is checked by its own
    :attr:`~ppokit.algos.registry.AlgoSpec.check`; sizes tied to the batch only for the algorithm
    that will run (``ppo.minibatch_size`` does not matter to a TRPO run).
    """
    check(
        cfg.algo in ALGOS,
        f"unknown algo {quote(cfg.algo)}{did_you_mean(cfg.algo, ALGOS)} (accepted: {', '.join(ALGOS)})",
    )
    check(0 <= cfg.seed < SEED_LIMIT, f"seed: expected an integer in [0, 2**32), got {cfg.seed}")
    positive_int(cfg.total_steps, "total_steps")
    check_device(cfg.device)
    check(1 <= cfg.torch_threads <= MAX_THREADS,
          f"torch_threads: expected a positive integer up to {MAX_THREADS}, got {cfg.torch_threads}")
    one_of(cfg.update_path, UPDATE_PATHS, "update_path")
    if cfg.checkpoint_every is not None:
        check(cfg.checkpoint_every >= 1,
              f"checkpoint_every: expected a positive integer (iterations) or null, got {cfg.checkpoint_every}")
    non_negative(cfg.checkpoint_interval_s, "checkpoint_interval_s")
    positive(cfg.dist_timeout_s, "dist_timeout_s")
    check(not cfg.stop_when_solved or cfg.solved_threshold is not None,
          "stop_when_solved: true needs a solved_threshold (this env's preset has none): add --set solved_threshold=X")
    check(cfg.eval_episodes >= 0, f"eval_episodes: expected an integer >= 0, got {cfg.eval_episodes}")
    check(cfg.eval.every_steps >= 0,
          f"eval.every_steps: expected an integer >= 0 (0: no evaluation during training), got {cfg.eval.every_steps}")
    positive_int(cfg.eval.episodes, "eval.episodes")
    positive_int(cfg.eval_max_episode_steps, "eval_max_episode_steps")

    r = cfg.rollout
    positive_int(r.num_envs, "rollout.num_envs")
    positive_int(r.num_steps, "rollout.num_steps")
    in_unit_interval(r.gamma, "rollout.gamma")
    in_unit_interval(r.gae_lambda, "rollout.gae_lambda")
    check(
        world_size >= 1 and r.num_envs % world_size == 0,
        f"rollout.num_envs: {r.num_envs} envs cannot be split evenly over {world_size} processes "
        f"(use a multiple of {world_size})",
    )

    e = cfg.env
    one_of(e.vector, VECTOR_MODES, "env.vector")
    positive(e.clip_obs, "env.clip_obs")
    positive(e.clip_reward, "env.clip_reward")
    check(e.reward_scale > 0, f"env.reward_scale: expected a number > 0 (the learner sees (r + env.reward_shift) "
                              f"* env.reward_scale), got {e.reward_scale}")
    check(all(isinstance(k, str) for k in e.kwargs),
          f"env.kwargs: expected keyword names (strings), got {list(e.kwargs)}")

    p = cfg.pixels
    one_of(p.preprocess, PREPROCESS_MODES, "pixels.preprocess")
    check(0 <= p.size <= 1024, f"pixels.size: expected an integer in [0, 1024] (0: keep the size), got {p.size}")
    for name in ("frame_stack", "frame_skip"):
        check(1 <= getattr(p, name) <= 64, f"pixels.{name}: expected an integer in [1, 64], got {getattr(p, name)}")
    check(0 <= p.noop_max <= 1000, f"pixels.noop_max: expected an integer in [0, 1000], got {p.noop_max}")

    m = cfg.model
    one_of(m.encoder, ENCODERS, "model.encoder")
    one_of(m.cnn_dtype, CNN_DTYPES, "model.cnn_dtype")
    _check_layer_sizes(m.hidden_sizes, "model.hidden_sizes", optional=False, empty=True)
    _check_layer_sizes(m.actor_hidden_sizes, "model.actor_hidden_sizes", optional=True)
    _check_layer_sizes(m.critic_hidden_sizes, "model.critic_hidden_sizes", optional=True)
    check(
        not (m.shared_trunk and (m.actor_hidden_sizes is not None or m.critic_hidden_sizes is not None)),
        "model.shared_trunk: a shared trunk has one set of layers (model.hidden_sizes); "
        "unset model.actor_hidden_sizes and model.critic_hidden_sizes, or use model.shared_trunk=false",
    )
    one_of(m.activation, ACTIVATIONS, "model.activation")
    check(abs(m.log_std_init) <= MAX_LOG_STD,
          f"model.log_std_init: expected a number in [-{MAX_LOG_STD}, {MAX_LOG_STD}] (the log of the initial action "
          f"standard deviation; exp(20) is already 5e8), got {m.log_std_init}")
    for name in ("log_std_min", "log_std_max"):
        bound = getattr(m, name)
        check(bound is None or abs(bound) <= MAX_LOG_STD,
              f"model.{name}: expected a number in [-{MAX_LOG_STD}, {MAX_LOG_STD}] or null (a bound on the log of the "
              f"action standard deviation), got {bound}")
    check(m.log_std_min is None or m.log_std_max is None or m.log_std_min < m.log_std_max,
          f"model.log_std_min: expected a number below model.log_std_max ({m.log_std_max}), got {m.log_std_min}")
    check(
        not (m.shared_trunk and ALGOS[cfg.algo].separate_critic(cfg.algo_section())),
        f"model.shared_trunk: algo {cfg.algo} fits the value function separately from the policy and needs "
        "separate actor and critic networks; use model.shared_trunk=false (or --algo ppo / ppo-kl"
        + (", or vpg.baseline=none: REINFORCE without a value fit)" if cfg.algo == "vpg" else ")"),
    )
    section = ALGOS[cfg.algo].section
    check(
        not (m.shared_trunk and getattr(cfg.algo_section(), "value_fit", "joint") == "separate"),
        f"model.shared_trunk: {section}.value_fit=separate fits the value function separately from the policy and "
        f"needs separate actor and critic networks; use model.shared_trunk=false or {section}.value_fit=joint",
    )

    for spec in ALGOS.values():
        where = SectionCheck(spec.section, cfg.batch_size, world_size, active=spec.name == cfg.algo)
        spec.check(getattr(cfg, spec.section), where)
    return cfg


def check_output_file(path: str | Path, suffixes: tuple[str, ...], flag: str = "--out") -> Path:
    """An output file path that can be written: a known suffix, an existing writable folder, not a folder."""
    import os

    out = Path(path)
    if out.suffix.lower() not in suffixes:
        accepted = ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]
        raise ConfigError(f"{flag} {quote(out)}: expected a {accepted} file name")
    if out.is_dir():
        raise ConfigError(f"{flag} {quote(out)}: is a folder; expected a file name")
    folder = out.parent
    if not folder.exists():
        raise ConfigError(f"{flag} {quote(out)}: folder {quote(folder)} does not exist")
    if not folder.is_dir():
        raise ConfigError(f"{flag} {quote(out)}: {quote(folder)} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ConfigError(f"{flag} {quote(out)}: not writable (permission denied)")
    return out
