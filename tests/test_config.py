"""Config: YAML round trip, typed --set overrides (never eval), validation, presets."""

from __future__ import annotations

import pytest

from ppokit.config import Config, ConfigError, from_dict, load_yaml, parse_override, save_yaml, to_dict, validate
from ppokit.presets import available, build_config, default_preset, is_generic, preset_env


def test_yaml_round_trip(tmp_path):
    cfg = Config(env_id="Pendulum-v1", seed=3)
    cfg.ppo.clip_coef = None
    cfg.model.hidden_sizes = [32, 16]
    save_yaml(cfg, tmp_path / "c.yaml")
    assert from_dict(load_yaml(tmp_path / "c.yaml")) == cfg


def test_override_is_typed_by_field():
    cfg = build_config("CartPole-v1", sets=["ppo.clip_coef=0.1", "rollout.num_envs=4", "ppo.learning_rate=1e-3",
                                            "model.hidden_sizes=[8, 8]", "ppo.target_kl=null"])
    assert cfg.ppo.clip_coef == 0.1 and isinstance(cfg.rollout.num_envs, int)
    assert cfg.ppo.learning_rate == pytest.approx(1e-3) and isinstance(cfg.ppo.learning_rate, float)
    assert cfg.model.hidden_sizes == [8, 8] and cfg.ppo.target_kl is None


@pytest.mark.parametrize("text, message", [
    ("rollout.num_envs=abc", "rollout.num_envs"),
    ("rollout.num_envs=2.5", "rollout.num_envs"),
    ("ppo.anneal_lr=3", "ppo.anneal_lr"),
    ("ppo.clip_cof=0.1", "did you mean 'ppo.clip_coef'"),
    ("nosuchsection.x=1", "nosuchsection"),
    ("ppo.learning_rate=__import__('os')", "ppo.learning_rate"),
])
def test_bad_overrides_name_the_field(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_config("CartPole-v1", sets=[text])


def test_parse_override():
    assert parse_override("a.b=1") == {"a": {"b": 1}}
    assert parse_override("a=[1, 2]") == {"a": [1, 2]}
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(ConfigError):
            parse_override(bad)


@pytest.mark.parametrize("path, value, name", [
    ("rollout.gamma", 1.5, "rollout.gamma"),
    ("rollout.num_envs", 0, "rollout.num_envs"),
    ("ppo.minibatch_size", 10**6, "ppo.minibatch_size"),
    ("algo", "ppx", "did you mean 'ppo'"),
    ("model.activation", "tanhh", "model.activation"),
    ("env.vector", "threads", "env.vector"),
    ("device", "tpu", "device"),
    ("ppo.clip_coef", -0.1, "ppo.clip_coef"),
])
def test_validate_rejects_bad_values(path, value, name):
    cfg = Config()
    section, _, key = path.rpartition(".")
    setattr(getattr(cfg, section) if section else cfg, key, value)
    with pytest.raises(ConfigError, match=name):
        validate(cfg)


def test_validate_accepts_defaults_and_world_size():
    assert validate(Config()) is not None
    cfg = Config()
    cfg.rollout.num_envs = 6
    with pytest.raises(ConfigError, match="num_envs"):
        validate(cfg, world_size=4)


def test_iterations_round_up():
    cfg = Config(total_steps=1000)
    cfg.rollout.num_envs, cfg.rollout.num_steps = 4, 100
    assert cfg.batch_size == 400 and cfg.iterations == 3


def test_bad_yaml_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("ppo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_presets_load_and_validate():
    presets = available()
    assert {"CartPole-v1", "Pendulum-v1"} <= set(presets)
    for name, data in presets.items():
        env_id = "Pendulum-v1" if is_generic(name, data) else data.get("env_id", name.split("__")[0])
        cfg = validate(build_config(env_id, preset=name))
        assert cfg.preset == name and cfg.algo == data.get("algo", "ppo")
        assert (cfg.solved_threshold is None) == is_generic(name, data)


def test_tutorial_presets_name_their_env_and_hold_their_setups():
    """docs/tutorials.md: each preset is made for CartPole-v1 (its threshold only there)."""
    presets = available()
    for name in ("spinningup-ppo", "montecarlo-ppo", "minimal-ppo"):
        assert preset_env(name, presets[name]) == "CartPole-v1" and not is_generic(name, presets[name])
        assert validate(build_config("CartPole-v1", preset=name)).solved_threshold == 475.0
        assert build_config("Acrobot-v1", preset=name).solved_threshold is None  # its fields, not its threshold
        assert build_config("Acrobot-v1", preset=name).env_id == "Acrobot-v1"
    spinup = build_config("CartPole-v1", preset="spinningup-ppo")
    p = spinup.ppo
    assert spinup.batch_size == 4000 and (spinup.rollout.gamma, spinup.rollout.gae_lambda) == (0.99, 0.97)
    assert (p.learning_rate, p.value_lr, p.update_epochs, p.value_epochs) == (3e-4, 1e-3, 80, 80)
    assert p.minibatch_size == p.value_minibatch_size == 4000 and p.value_fit == "separate"
    assert (p.target_kl, p.kl_stop, p.norm_adv_scope, p.clip_coef) == (0.01, "step", "batch", 0.2)
    assert spinup.log_parameter_counts and not spinup.model.shared_trunk
    mc = build_config("CartPole-v1", preset="montecarlo-ppo")
    assert mc.rollout.gae_lambda == 1.0 and (mc.ppo.minibatch_size, mc.ppo.update_epochs) == (32, 10)
    assert mc.ppo.max_grad_norm == 0.5
    minimal = build_config("CartPole-v1", preset="minimal-ppo")
    p = minimal.ppo
    assert minimal.model.shared_trunk and minimal.model.hidden_sizes == [256] and minimal.rollout.num_steps == 20
    assert (p.update_epochs, p.clip_coef, p.learning_rate) == (3, 0.1, 5e-4) and p.minibatch_size == minimal.batch_size
    assert (minimal.rollout.gamma, minimal.rollout.gae_lambda) == (0.98, 0.95)
    assert p.value_loss == "huber" and p.recompute_advantages and p.value_fit == "joint"


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Breakout-v5"])
def test_atari_presets_hold_the_papers_atari_hyperparameters(env_id: str):
    """Table 5 of the PPO paper (3 epochs, the paper's; its code and CleanRL use 4)."""
    cfg = validate(build_config(env_id))
    assert cfg.preset == env_id.replace("/", "-")
    assert (cfg.rollout.num_envs, cfg.rollout.num_steps, cfg.rollout.gamma, cfg.rollout.gae_lambda) == (8, 128, 0.99,
                                                                                                        0.95)
    ppo = cfg.ppo
    assert (ppo.learning_rate, ppo.anneal_lr, ppo.update_epochs, ppo.minibatch_size) == (2.5e-4, True, 3, 256)
    assert (ppo.clip_coef, ppo.anneal_clip, ppo.vf_coef, ppo.ent_coef) == (0.1, True, 1.0, 0.01)
    assert (cfg.pixels.preprocess, cfg.pixels.frame_stack, cfg.pixels.size, cfg.model.encoder) == ("atari", 4, 84,
                                                                                                   "nature")
    assert cfg.pixels.episodic_life and cfg.pixels.clip_reward and cfg.model.hidden_sizes == []


def test_ppo_paper_preset_holds_the_papers_mujoco_hyperparameters():
    """Table 3 of the PPO paper, and what its code (baselines ppo1) chose where the paper is silent."""
    for algo, section in (("ppo", "ppo"), ("ppo-kl", "ppo_kl")):
        cfg = validate(build_config("Pendulum-v1", algo=algo, preset="ppo-paper"))
        hyper = getattr(cfg, section)
        assert (cfg.rollout.num_envs, cfg.rollout.num_steps, cfg.rollout.gamma, cfg.rollout.gae_lambda) == (
            1, 2048, 0.99, 0.95)
        assert (hyper.learning_rate, hyper.update_epochs, hyper.minibatch_size, hyper.ent_coef) == (3e-4, 10, 64, 0.0)
        assert not hyper.anneal_lr and hyper.max_grad_norm is None and hyper.norm_adv_scope == "batch"
        assert cfg.model.hidden_sizes == [64, 64] and cfg.model.activation == "tanh" and not cfg.model.shared_trunk
        assert cfg.env.normalize_obs and cfg.env.clip_obs == 5.0 and not cfg.env.normalize_reward
        assert cfg.total_steps == 1_000_000 and cfg.solved_threshold is None
    assert not build_config("Pendulum-v1", preset="ppo-paper").ppo.clip_vloss
    assert is_generic("ppo-paper") and not is_generic("Pendulum-v1__trpo")


def test_mujoco_presets_extend_ppo_cleanrl(tmp_path, monkeypatch):
    """Hopper-v5, Walker2d-v5 and Ant-v5 are ppo-cleanrl with their own thresholds (HalfCheetah-v5
    adds its searched fields); ``extends`` is read in shipped presets only, one level."""
    presets = available()
    base = presets["ppo-cleanrl"]
    assert is_generic("ppo-cleanrl", base) and "solved_threshold" not in base
    assert base["ppo"]["anneal_lr"] and base["ppo"]["clip_vloss"] and base["env"]["normalize_reward"]
    for env_id, threshold in (("Hopper-v5", 3800.0), ("Walker2d-v5", 3500.0)):
        assert presets[env_id] == {**base, "solved_threshold": threshold}, env_id
        cfg = build_config(env_id)
        assert cfg.preset == env_id and cfg.solved_threshold == threshold and cfg.ppo.vf_coef == 0.5
    # Ant-v5 adds one env field (v4's observation) and keeps the base's other env fields.
    assert presets["Ant-v5"] == {**base, "solved_threshold": 6000.0,
                                 "env": {**base["env"], "kwargs": {"include_cfrc_ext_in_observation": False}}}
    ant = build_config("Ant-v5")
    assert ant.env.kwargs == {"include_cfrc_ext_in_observation": False} and ant.env.normalize_reward
    # HalfCheetah-v5: ppo-cleanrl with the Tianshou choices and the lambda and clipping of
    # Andrychowicz et al. that docs/presets.md chose (candidate F).
    cheetah = build_config("HalfCheetah-v5")
    assert (cheetah.rollout.num_envs, cheetah.rollout.num_steps, cheetah.model.log_std_init) == (8, 256, -1.0)
    assert (cheetah.rollout.gae_lambda, cheetah.ppo.clip_coef, cheetah.rollout.gamma) == (0.9, 0.25, 0.99)
    assert cheetah.ppo.recompute_advantages and not cheetah.ppo.norm_adv and not cheetah.ppo.clip_vloss
    assert cheetah.ppo.vf_coef == 0.25 and cheetah.ppo.anneal_lr and cheetah.env.normalize_reward
    # A section of the extending preset merges field by field over the base's.
    (tmp_path / "base.yaml").write_text("algo: ppo\nppo: {clip_coef: 0.3, ent_coef: 0.01}\n")
    (tmp_path / "child.yaml").write_text("extends: base\nppo: {clip_coef: 0.1}\n")
    (tmp_path / "grandchild.yaml").write_text("extends: child\n")
    monkeypatch.setattr("ppokit.presets.PRESET_DIR", tmp_path)
    with pytest.raises(ConfigError, match="preset grandchild: extends 'child'"):
        available()
    (tmp_path / "grandchild.yaml").unlink()
    assert available()["child"] == {"algo": "ppo", "ppo": {"clip_coef": 0.1, "ent_coef": 0.01}}
    # A --config file is self-contained.
    (tmp_path / "user.yaml").write_text("extends: ppo-cleanrl\n")
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="unknown config section or field 'extends'"):
        build_config("Hopper-v5", config_file=tmp_path / "user.yaml")


def test_preset_order_later_wins(tmp_path):
    assert default_preset("CartPole-v1", None) == "CartPole-v1"
    assert default_preset("Acrobot-v1", None) is None
    (tmp_path / "c.yaml").write_text("seed: 5\nrollout: {num_steps: 64}\n")
    cfg = build_config("CartPole-v1", config_file=tmp_path / "c.yaml", sets=["seed=6"], overrides={"seed": 7})
    assert cfg.rollout.num_steps == 64  # config file beats the preset
    assert cfg.rollout.gamma == available()["CartPole-v1"]["rollout"]["gamma"]  # preset field kept
    assert cfg.seed == 7  # shorthand beats --set beats the file
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("CartPole-v1", preset="CartPol-v1")


def test_to_dict_is_plain():
    data = to_dict(Config())
    assert isinstance(data["ppo"], dict) and data["ppo"]["clip_coef"] == 0.2


def test_a_threshold_belongs_to_its_env(tmp_path):
    """A preset or config file made for another env gives its fields, not its solved_threshold."""
    pendulum_run = tmp_path / "pendulum.yaml"
    save_yaml(build_config("Pendulum-v1"), pendulum_run)  # as a Pendulum run's config.yaml
    cartpole_threshold = available()["CartPole-v1"]["solved_threshold"]
    from_pendulum_file = build_config("CartPole-v1", config_file=pendulum_run)
    assert from_pendulum_file.rollout.num_steps == available()["Pendulum-v1"]["rollout"]["num_steps"]
    assert from_pendulum_file.solved_threshold == cartpole_threshold  # CartPole's own preset's, not -200
    assert build_config("CartPole-v1", preset="Pendulum-v1").solved_threshold is None
    assert build_config("Acrobot-v1", preset="Pendulum-v1__trpo").solved_threshold is None
    # An explicit --set, or a file or preset for the same env, keeps its threshold.
    assert build_config("CartPole-v1", preset="Pendulum-v1", sets=["solved_threshold=-100"]).solved_threshold == -100
    assert build_config("Pendulum-v1", config_file=pendulum_run).solved_threshold == -200
    assert build_config("Pendulum-v1", preset="Pendulum-v1__trpo").solved_threshold == -200
    (tmp_path / "no_env.yaml").write_text("solved_threshold: 7\n")  # names no env: made for this run
    assert build_config("CartPole-v1", config_file=tmp_path / "no_env.yaml").solved_threshold == 7
