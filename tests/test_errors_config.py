"""Config validation: every field's type and range, unknown names, YAML files, ``--set`` parsing.

Every bad value must raise :class:`ConfigError` (one line naming the field and what is accepted),
never another exception; property tests check that with random input.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppokit.config import (
    ACTIVATIONS,
    Config,
    ConfigError,
    from_dict,
    load_yaml,
    parse_override,
    save_yaml,
    to_dict,
    validate,
)
from ppokit.presets import build_config

# Base overrides that make every valid value below acceptable on CartPole's preset (batch 8 x 32).
BASE = ["ppo.minibatch_size=1"]


def build(*sets: str, config_file: Path | None = None) -> Config:
    return validate(build_config("CartPole-v1", sets=[*BASE, *sets], config_file=config_file))


def leaf_fields(cls: type = Config, prefix: str = "") -> dict[str, typing.Any]:
    """``dotted name -> annotation`` of every non-section field."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            out.update(leaf_fields(hint, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = hint
    return out


def get(cfg: Config, dotted: str) -> typing.Any:
    value: typing.Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


# ---------------------------------------------------------------------------- ranges, field by field

# (field, bad value as typed after --set, text the one-line message must contain)
BAD_VALUES = [
    ("algo", "ppx", "unknown algo 'ppx'"),
    ("seed", "-1", "seed: expected an integer in [0, 2**32)"),
    ("seed", str(2**32), "seed: expected an integer in [0, 2**32)"),
    ("total_steps", "0", "total_steps: expected a positive integer"),
    ("total_steps", "1.5", "total_steps: expected an integer"),
    ("total_steps", str(2**70), "total_steps: expected an integer below 2**63"),
    ("device", "tpu", "device: expected one of auto, cpu, cuda, cuda:N, got 'tpu'"),
    ("device", "cuda:x", "device: expected one of auto, cpu, cuda, cuda:N"),
    ("device", "CPU", "did you mean 'cpu'?"),
    ("torch_threads", "0", "torch_threads: expected a positive integer"),
    ("torch_threads", str(2**40), "torch_threads: expected a positive integer up to 1024"),
    ("update_path", "maybe", "update_path: expected one of auto, eager, fast, autograd, compile"),
    ("compile", "maybe", "compile: expected one of auto, on, off (now update_path"),
    ("checkpoint_every", "0", "checkpoint_every: expected a positive integer"),
    ("checkpoint_interval_s", "-1", "checkpoint_interval_s: expected a number >= 0"),
    ("checkpoint_interval_s", ".nan", "checkpoint_interval_s: expected a finite number"),
    ("dist_timeout_s", "0", "dist_timeout_s: expected a positive number"),
    ("eval_episodes", "-1", "eval_episodes: expected an integer >= 0"),
    ("eval.every_steps", "-1", "eval.every_steps: expected an integer >= 0"),
    ("eval.episodes", "0", "eval.episodes: expected a positive integer"),
    ("eval_max_episode_steps", "0", "eval_max_episode_steps: expected a positive integer"),
    ("solved_threshold", ".inf", "solved_threshold: expected a finite number or null"),
    ("rollout.num_envs", "0", "rollout.num_envs: expected a positive integer"),
    ("rollout.num_steps", "-3", "rollout.num_steps: expected a positive integer"),
    ("rollout.gamma", "1.5", "rollout.gamma: expected a number in [0, 1]"),
    ("rollout.gamma", "-0.1", "rollout.gamma: expected a number in [0, 1]"),
    ("rollout.gamma", "nan", "rollout.gamma: expected a finite number"),
    ("rollout.gae_lambda", "1.01", "rollout.gae_lambda: expected a number in [0, 1]"),
    ("env.vector", "asnc", "did you mean 'async'?"),
    ("env.clip_obs", "0", "env.clip_obs: expected a positive number"),
    ("env.clip_reward", "-1", "env.clip_reward: expected a positive number"),
    ("env.reward_shift", ".nan", "env.reward_shift: expected a finite number"),
    ("env.reward_scale", "0", "env.reward_scale: expected a number > 0"),
    ("env.reward_scale", "-0.125", "env.reward_scale: expected a number > 0"),
    ("env.kwargs", "[1]", "env.kwargs: expected a mapping"),
    ("env.kwargs", "{1: 2}", "env.kwargs: expected keyword names"),
    ("model.hidden_sizes", "[64, 0]", "model.hidden_sizes: expected a list of positive integers ([] for image"),
    ("model.hidden_sizes", "[64, true]", "model.hidden_sizes: expected a list of positive integers ([] for image"),
    ("pixels.size", "-1", "pixels.size: expected an integer in [0, 1024]"),
    ("pixels.frame_stack", "0", "pixels.frame_stack: expected an integer in [1, 64]"),
    ("pixels.frame_skip", "65", "pixels.frame_skip: expected an integer in [1, 64]"),
    ("pixels.noop_max", "-1", "pixels.noop_max: expected an integer in [0, 1000]"),
    ("pixels.preprocess", "rgb", "pixels.preprocess: expected one of auto, atari, image, pong, none"),
    ("model.encoder", "impala", "model.encoder: expected one of auto, nature, small"),
    ("model.hidden_sizes", "64", "model.hidden_sizes: expected a list"),
    ("model.activation", "rel", "did you mean 'relu'?"),
    ("model.log_std_init", "-.inf", "model.log_std_init: expected a finite number"),
    ("model.log_std_init", "1e300", "model.log_std_init: expected a number in [-20.0, 20.0]"),
    ("model.log_std_min", "-21", "model.log_std_min: expected a number in [-20.0, 20.0] or null"),
    ("model.log_std_max", ".inf", "model.log_std_max: expected a finite number or null"),
    ("ppo.learning_rate", "0", "ppo.learning_rate: expected a positive number"),
    ("ppo.learning_rate", "-3e-4", "ppo.learning_rate: expected a positive number"),
    ("ppo.learning_rate", "inf", "ppo.learning_rate: expected a finite number"),
    ("ppo.learning_rate", "1" + "0" * 400, "ppo.learning_rate: expected a finite number"),
    ("ppo.update_epochs", "0", "ppo.update_epochs: expected a positive integer"),
    ("ppo.minibatch_size", "0", "ppo.minibatch_size: expected a positive integer"),
    ("ppo.minibatch_size", "100000", "ppo.minibatch_size: 100000 is larger than the batch of 256 steps"),
    ("ppo.clip_coef", "0", "ppo.clip_coef: expected a positive number or null"),
    ("ppo.ent_coef", "-0.01", "ppo.ent_coef: expected a number >= 0"),
    ("ppo.vf_coef", "-1", "ppo.vf_coef: expected a number >= 0"),
    ("ppo.max_grad_norm", "0", "ppo.max_grad_norm: expected a positive number or null"),
    ("ppo.target_kl", "-0.01", "ppo.target_kl: expected a positive number or null"),
    ("ppo.adam_eps", "0", "ppo.adam_eps: expected a positive number"),
    ("ppo.kl_stop", "before", "ppo.kl_stop: expected one of epoch, step, got 'before'"),
    ("ppo.value_loss", "hubre", "did you mean 'huber'?"),
    ("ppo.value_fit", "split", "ppo.value_fit: expected one of joint, separate"),
    ("ppo.value_lr", "0", "ppo.value_lr: expected a positive number"),
    ("ppo.value_epochs", "0", "ppo.value_epochs: expected a positive integer"),
    ("ppo.value_minibatch_size", "0", "ppo.value_minibatch_size: expected a positive integer"),
    ("ppo_kl.learning_rate", "0", "ppo_kl.learning_rate: expected a positive number"),
    ("ppo_kl.update_epochs", "0", "ppo_kl.update_epochs: expected a positive integer"),
    ("ppo_kl.minibatch_size", "-1", "ppo_kl.minibatch_size: expected a positive integer"),
    ("ppo_kl.ent_coef", "-1", "ppo_kl.ent_coef: expected a number >= 0"),
    ("ppo_kl.vf_coef", "-1", "ppo_kl.vf_coef: expected a number >= 0"),
    ("ppo_kl.max_grad_norm", "-1", "ppo_kl.max_grad_norm: expected a positive number or null"),
    ("ppo_kl.adam_eps", "-1", "ppo_kl.adam_eps: expected a positive number"),
    ("ppo_kl.kl_target", "0", "ppo_kl.kl_target: expected a positive number"),
    ("ppo_kl.beta_init", "0", "ppo_kl.beta_init: expected a positive number"),
    ("ppo_kl.value_fit", "split", "ppo_kl.value_fit: expected one of joint, separate"),
    ("ppo_kl.value_lr", "0", "ppo_kl.value_lr: expected a positive number"),
    ("ppo_kl.value_epochs", "0", "ppo_kl.value_epochs: expected a positive integer"),
    ("ppo_kl.value_minibatch_size", "0", "ppo_kl.value_minibatch_size: expected a positive integer"),
    ("trpo.max_kl", "0", "trpo.max_kl: expected a positive number"),
    ("trpo.cg_iters", "0", "trpo.cg_iters: expected a positive integer"),
    ("trpo.damping", "-0.1", "trpo.damping: expected a number >= 0"),
    ("trpo.backtrack_iters", "0", "trpo.backtrack_iters: expected a positive integer"),
    ("trpo.backtrack_coef", "0", "trpo.backtrack_coef: expected a number in (0, 1]"),
    ("trpo.backtrack_coef", "1.5", "trpo.backtrack_coef: expected a number in (0, 1]"),
    ("trpo.value_lr", "0", "trpo.value_lr: expected a positive number"),
    ("trpo.value_epochs", "0", "trpo.value_epochs: expected a positive integer"),
    ("trpo.value_minibatch_size", "0", "trpo.value_minibatch_size: expected a positive integer"),
    ("trpo.value_optimizer", "lbgfs", "trpo.value_optimizer: expected one of adam, lbfgs"),
    ("trpo.value_lbfgs_iters", "0", "trpo.value_lbfgs_iters: expected a positive integer"),
    ("vpg.reset_return_on_reward", "true", "vpg.reset_return_on_reward: resets the Monte-Carlo return of REINFORCE"),
    ("vpg.learning_rate", "0", "vpg.learning_rate: expected a positive number"),
    ("vpg.value_lr", "-1", "vpg.value_lr: expected a positive number"),
    ("vpg.value_epochs", "0", "vpg.value_epochs: expected a positive integer"),
    ("vpg.value_minibatch_size", "0", "vpg.value_minibatch_size: expected a positive integer"),
    ("vpg.baseline", "valu", "did you mean 'value'?"),
    ("vpg.max_grad_norm", "0", "vpg.max_grad_norm: expected a positive number or null"),
]


@pytest.mark.parametrize(("field", "value", "expected"), BAD_VALUES, ids=[f"{f}={v[:12]}" for f, v, _ in BAD_VALUES])
def test_bad_value_is_one_line_config_error(field: str, value: str, expected: str) -> None:
    sets = [f"{field}={value}"] if field != "ppo.minibatch_size" else [f"{field}={value}"]
    with pytest.raises(ConfigError) as info:
        validate(build_config("CartPole-v1", sets=sets))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def wrong_type_value(annotation: typing.Any) -> str:
    """A --set value of the wrong type for a field (as YAML text)."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = typing.get_origin(options[0]) or options[0]
    return {bool: "maybe", int: "'twelve'", float: "abc", str: "[1, 2]", list: "5", dict: "[1]"}[kind]


@pytest.mark.parametrize("field", sorted(set(leaf_fields()) - {"env_id"}))  # env_id: see test_errors_cli
def test_every_field_rejects_a_wrong_type(field: str) -> None:
    annotation = leaf_fields()[field]
    with pytest.raises(ConfigError) as info:
        validate(build_config("CartPole-v1", sets=[f"{field}={wrong_type_value(annotation)}"]))
    assert field in str(info.value) or field.split(".")[-1] in str(info.value)


def test_every_range_rule_has_a_case() -> None:
    """Each numeric field (int/float) has at least one out-of-range case in BAD_VALUES."""
    covered = {field for field, _, _ in BAD_VALUES}
    numeric = [f for f, a in leaf_fields().items()
               if {int, float} & set(typing.get_args(a) or (a,)) and not f.endswith("solved_threshold")]
    missing = [f for f in numeric if f not in covered]
    assert not missing, f"add an out-of-range case to BAD_VALUES for: {missing}"


@pytest.mark.parametrize(("sets", "expected"), [
    (["ppo.value_fit=separate", "ppo.value_minibatch_size=100000"],
     "ppo.value_minibatch_size: 100000 is larger than the batch of 256 steps"),
    (["ppo.value_fit=separate", "ppo.recompute_advantages=true"], "there is nothing to recompute"),
    (["ppo.value_fit=separate", "ppo.value_loss=huber"], "belong to the joint loss"),
    (["ppo.value_fit=separate", "ppo.clip_vloss=true"], "belong to the joint loss"),
])
def test_ppo_options_that_do_not_go_together(sets: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(*sets)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_value_fit_fields_are_not_read_by_a_joint_fit() -> None:
    assert build("ppo.value_minibatch_size=100000").ppo.value_fit == "joint"


def test_set_env_id_must_match_the_argument() -> None:
    with pytest.raises(ConfigError, match="--set env_id: the env is the ENV_ID argument"):
        build("env_id=Pendulum-v1")
    assert build("env_id=CartPole-v1").env_id == "CartPole-v1"


def test_num_envs_must_split_over_processes() -> None:
    cfg = build("rollout.num_envs=8", "ppo.minibatch_size=8")
    validate(cfg, world_size=4)
    with pytest.raises(ConfigError, match="8 envs cannot be split evenly over 3 processes"):
        validate(cfg, world_size=3)


def test_minibatch_is_global_and_must_split_over_processes() -> None:
    cfg = build("rollout.num_envs=8", "rollout.num_steps=32", "ppo.minibatch_size=128")
    validate(cfg, world_size=4)  # 32 samples per process
    with pytest.raises(ConfigError, match="512 is larger than the batch of 256 steps"):
        validate(build("rollout.num_envs=8", "rollout.num_steps=32", "ppo.minibatch_size=512"))
    with pytest.raises(ConfigError, match="130 cannot be split evenly over 4 processes"):
        validate(build("rollout.num_envs=8", "rollout.num_steps=32", "ppo.minibatch_size=130"), world_size=4)


def test_minibatch_of_another_algorithm_does_not_matter() -> None:
    """A small batch must not be refused because of an unused section's minibatch size."""
    cfg = build("rollout.num_envs=1", "rollout.num_steps=8", "ppo.minibatch_size=8")
    assert cfg.ppo_kl.minibatch_size > 8 and cfg.trpo.value_minibatch_size > 8
    with pytest.raises(ConfigError, match="ppo_kl.minibatch_size"):
        validate(build("algo=ppo-kl", "rollout.num_envs=1", "rollout.num_steps=8"))
    with pytest.raises(ConfigError, match="trpo.value_minibatch_size"):
        validate(build("algo=trpo", "rollout.num_envs=1", "rollout.num_steps=8"))
    with pytest.raises(ConfigError, match="vpg.value_minibatch_size"):
        validate(build("algo=vpg", "rollout.num_envs=1", "rollout.num_steps=8"))


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize(("text", "expected"), [
    ("pp.clip_coef=0.1", "unknown config section or field 'pp'; did you mean 'ppo'?"),
    ("ppo.clip_cof=0.1", "unknown config field 'ppo.clip_cof'; did you mean 'ppo.clip_coef'?"),
    ("rollout.gama=0.9", "did you mean 'rollout.gamma'?"),
    ("totl_steps=10", "did you mean 'total_steps'?"),
    ("zzz=1", "unknown config section or field 'zzz' (fields of config: env_id"),
    ("ppo=3", "ppo: expected a mapping of fields, got int"),
    ("rollout.num_envs.x=3", "rollout.num_envs: expected an integer"),
])
def test_unknown_names_and_shapes(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config("CartPole-v1", sets=[text])
    assert expected in str(info.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("ppo.clip_coef", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("ppo..clip_coef=3", "expected KEY=VALUE"),
    ("ppo.clip_coef=[0.1", "cannot parse value '[0.1'"),
    ("ppo.clip_coef={a: 1", "cannot parse value"),
    ("key\nname=1", "unknown config section or field 'key\\nname'"),
])
def test_malformed_set(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config("CartPole-v1", sets=[text])
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- YAML files


@pytest.mark.parametrize(("content", "expected"), [
    (b"rollout: [1, 2\n", "is not valid YAML at line"),
    (b"- 1\n- 2\n", "must hold a mapping of fields, not a list"),
    (b"42\n", "must hold a mapping of fields, not a int"),
    (b"rollout: 3\n", "rollout: expected a mapping of fields, got int"),
    (b"rollout: {num_env: 4}\n", "did you mean 'rollout.num_envs'?"),
    (b"rolout: {num_envs: 4}\n", "did you mean 'rollout'?"),
    (b"ppo: {learning_rate: fast}\n", "ppo.learning_rate: expected a number, got 'fast'"),
    (b"!!python/object/apply:os.system ['touch /tmp/ppokit-yaml-pwned']\n", "is not valid YAML"),
    (b"\xff\xfe\x00garbage", "cannot be read"),
    (b"a: &x [*x]\n", "anchors and aliases (&name, *name) are not accepted"),
])
def test_config_file_errors(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        build(config_file=path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)
    assert not Path("/tmp/ppokit-yaml-pwned").exists()


def test_config_file_missing_or_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_yaml(tmp_path)


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert build(config_file=path) == build()


# ---------------------------------------------------------------------------- property tests

names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
scalars = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False),
                    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12))

VALID = {
    "seed": st.integers(0, 2**32 - 1),
    "total_steps": st.integers(1, 2**62),
    "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:7"]),
    "torch_threads": st.integers(1, 64),
    "update_path": st.sampled_from(["auto", "eager", "fast", "autograd", "compile"]),
    "checkpoint_every": st.none() | st.integers(1, 10**6),
    "checkpoint_interval_s": st.floats(0, 1e6),
    "eval_episodes": st.integers(0, 1000),
    "eval.every_steps": st.integers(0, 10**9),
    "eval.episodes": st.integers(1, 1000),
    "eval.deterministic": st.booleans(),
    "solved_threshold": st.none() | st.floats(-1e9, 1e9),
    "rollout.num_envs": st.integers(1, 256),
    "rollout.num_steps": st.integers(1, 4096),
    "rollout.gamma": st.floats(0, 1),
    "rollout.gae_lambda": st.floats(0, 1),
    "env.vector": st.sampled_from(["auto", "sync", "async"]),
    "env.normalize_obs": st.booleans(),
    "env.clip_obs": st.floats(1e-6, 1e6),
    "env.kwargs": st.dictionaries(names, scalars, max_size=3),
    "model.hidden_sizes": st.lists(st.integers(1, 1024), min_size=1, max_size=4),
    "model.activation": st.sampled_from(ACTIVATIONS),
    "model.log_std_init": st.floats(-20, 20),
    "ppo.learning_rate": st.floats(1e-10, 10),
    "ppo.anneal_lr": st.booleans(),
    "ppo.update_epochs": st.integers(1, 100),
    "ppo.clip_coef": st.none() | st.floats(1e-6, 10),
    "ppo.ent_coef": st.floats(0, 10),
    "ppo.max_grad_norm": st.none() | st.floats(1e-6, 1e6),
    "ppo.target_kl": st.none() | st.floats(1e-9, 10),
    "ppo.kl_stop": st.sampled_from(["epoch", "step"]),
    "ppo.value_loss": st.sampled_from(["mse", "huber"]),
    "ppo.recompute_advantages": st.booleans(),
    "ppo.value_fit": st.sampled_from(["joint", "separate"]),
    "ppo.value_lr": st.floats(1e-9, 1),
    "ppo.value_epochs": st.integers(1, 100),
    "ppo_kl.kl_target": st.floats(1e-9, 10),
    "ppo_kl.beta_init": st.floats(1e-9, 1e3),
    "trpo.max_kl": st.floats(1e-9, 10),
    "trpo.backtrack_coef": st.floats(1e-6, 1),
    "trpo.damping": st.floats(0, 10),
    "vpg.baseline": st.sampled_from(["value", "none"]),
}


def as_yaml(value: typing.Any) -> str:
    """How a user would type ``value`` after ``--set KEY=`` (a YAML flow scalar or collection)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


@st.composite
def field_and_value(draw: st.DrawFn) -> tuple[str, typing.Any]:
    field = draw(st.sampled_from(sorted(VALID)))
    return field, draw(VALID[field])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=field_and_value())
def test_valid_values_round_trip_through_set_and_config_yaml(tmp_path: Path, pair: tuple[str, typing.Any]) -> None:
    field, value = pair
    cfg = build(f"{field}={as_yaml(value)}")
    got = get(cfg, field)
    assert got == value and type(got) is type(value) or (isinstance(value, int) and got == float(value))
    path = tmp_path / "config.yaml"
    save_yaml(cfg, path)
    again = validate(build_config("CartPole-v1", config_file=path))
    assert to_dict(again) == to_dict(cfg)


@settings(max_examples=120, deadline=None)
@given(field=st.sampled_from(sorted(f for f, a in leaf_fields().items() if float in (typing.get_args(a) or (a,)))),
       text=st.text(max_size=30))
def test_any_text_for_a_float_field_gives_a_number_or_config_error(field: str, text: str) -> None:
    try:
        cfg = build(f"{field}={text}")
    except ConfigError as error:
        assert "\n" not in str(error).strip() or "\n" in text
        return
    value = get(cfg, field)
    assert value is None or (isinstance(value, float) and math.isfinite(value))


@settings(max_examples=120, deadline=None)
@given(field=st.sampled_from(sorted(leaf_fields())), text=st.text(max_size=30))
def test_any_text_for_any_field_gives_a_valid_config_or_config_error(field: str, text: str) -> None:
    try:
        build(f"{field}={text}")
    except ConfigError:
        pass


@settings(max_examples=120, deadline=None)
@given(text=st.text(max_size=40))
def test_parse_override_never_crashes(text: str) -> None:
    try:
        result = parse_override(text)
    except ConfigError:
        return
    assert isinstance(result, dict)


json_like = st.recursive(
    st.none() | scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(names | scalars, children, max_size=3),
    max_leaves=12,
)
config_like = st.dictionaries(st.sampled_from(["rollout", "ppo", "model", "env", "seed", "algo", "bogus"]) | names,
                              json_like, max_size=4)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.one_of(json_like, config_like))
def test_any_yaml_document_gives_a_valid_config_or_config_error(tmp_path: Path, document: typing.Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        build(config_file=path)
    except ConfigError as error:
        assert "\n" not in str(error)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_file_content_gives_a_valid_config_or_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    try:
        build(config_file=path)
    except ConfigError:
        pass


def test_from_dict_rejects_non_mappings() -> None:
    for data in (None, [], "x", 3):
        with pytest.raises(ConfigError, match="expected a mapping of fields"):
            from_dict(data)
