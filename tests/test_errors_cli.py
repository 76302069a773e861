"""Every command validates its input first: a bad one is one stderr line, exit code 2, no traceback.

In-process through ``ppokit.cli.main`` (see errors_support.run_cli), plus one real subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import ppokit
from ppokit.algos import ALGOS
from ppokit.errors import first_line
from tests.errors_support import DICT_OBS, PYTHON, TINY, TOY, bad_input, run_cli, subprocess_env


def edit_meta(checkpoint: Path, change) -> None:
    meta_file = checkpoint / "meta.json"
    meta = json.loads(meta_file.read_text())
    change(meta)
    meta_file.write_text(json.dumps(meta))


# ---------------------------------------------------------------------------- train: env and algo


def test_unknown_env_with_close_match(capsys) -> None:
    bad_input(capsys, ["train", "CartPol-v1"], "unknown env 'CartPol-v1'; did you mean 'CartPole-v1'?",
              "any registered Gymnasium id is accepted")


def test_env_id_with_a_newline_stays_on_one_line(capsys) -> None:
    bad_input(capsys, ["train", "CartPole-v1\nrm -rf /"], "unknown env 'CartPole-v1\\nrm -rf /'")


def test_module_env_id_whose_module_is_missing(capsys) -> None:
    bad_input(capsys, ["train", "no_such_module:Thing-v0"], "cannot import module 'no_such_module'")


def test_unknown_algo(capsys) -> None:
    bad_input(capsys, ["train", "CartPole-v1", "--algo", "ppx"], "invalid choice: 'ppx'", "'ppo'")


def test_algo_not_in_this_build(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delitem(ALGOS, "ppo")
    bad_input(capsys, ["train", "CartPole-v1", "--run-dir", tmp_path / "r", *TINY],
              "unknown algo 'ppo'", "accepted: ppo-kl, trpo, vpg")
    assert not (tmp_path / "r").exists()


def test_missing_mujoco_extra(capsys, monkeypatch, tmp_path: Path) -> None:
    def make(env_id, *args, **kwargs):
        raise gym.error.DependencyNotInstalled('MuJoCo is not installed, run `pip install "gymnasium[mujoco]"`')

    monkeypatch.setattr(gym, "make", make)
    bad_input(capsys, ["train", "HalfCheetah-v5", "--run-dir", tmp_path / "r", *TINY],
              "env 'HalfCheetah-v5' needs mujoco", "pip install 'ppokit[mujoco]'")
    assert not (tmp_path / "r").exists(), "a run that never started leaves no folder"


def test_missing_mujoco_extra_in_eval(capsys, monkeypatch, run: Path) -> None:
    monkeypatch.setattr(gym, "make", lambda *a, **k: (_ for _ in ()).throw(
        gym.error.DependencyNotInstalled("No module named 'mujoco'")))
    bad_input(capsys, ["eval", run], "needs mujoco", "ppokit[mujoco]")


def test_missing_atari_extra(capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ale_py", None)  # import ale_py -> ImportError
    bad_input(capsys, ["train", "ALE/Pong-v5"], "env 'ALE/Pong-v5' needs the Atari extra: pip install 'ppokit[atari]'")


def test_unsupported_observation_space(capsys, tmp_path: Path) -> None:
    bad_input(capsys, ["train", DICT_OBS, "--run-dir", tmp_path / "r", *TINY],
              "observation space Dict(", "is not supported", "accepted: Box, Discrete")


def test_env_that_cannot_be_created(capsys, tmp_path: Path) -> None:
    bad_input(capsys, ["train", TOY, "--run-dir", tmp_path / "r", *TINY, "--set", "env.kwargs={fault: init_raise}"],
              f"env '{TOY}' cannot be created: ValueError: toy env refuses to start")


def test_env_kwargs_the_env_does_not_take(capsys, tmp_path: Path) -> None:
    bad_input(capsys, ["train", "CartPole-v1", "--run-dir", tmp_path / "r", *TINY, "--set", "env.kwargs={foo: 1}"],
              "env.kwargs: 'CartPole-v1' does not accept them", "foo")


def test_unknown_preset(capsys) -> None:
    bad_input(capsys, ["train", "CartPole-v1", "--preset", "Pendulm-v1"],
              "unknown preset 'Pendulm-v1'; did you mean 'Pendulum-v1'?")


# ---------------------------------------------------------------------------- train: values and files


@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "ppo.learning_rate=nan"], "ppo.learning_rate: expected a finite number, got 'nan'"),
    (["--set", "ppo.learning_rate=.inf"], "ppo.learning_rate: expected a finite number"),
    (["--set", "ppo.learning_rate=-1"], "ppo.learning_rate: expected a positive number"),
    (["--set", "ppo.clip_coef=0"], "ppo.clip_coef: expected a positive number or null"),
    (["--set", "ppo.target_kl=-1"], "ppo.target_kl: expected a positive number or null"),
    (["--set", "rollout.gamma=1.5"], "rollout.gamma: expected a number in [0, 1], got 1.5"),
    (["--set", "rollout.gae_lambda=-0.5"], "rollout.gae_lambda: expected a number in [0, 1]"),
    (["--set", "ppo.update_epochs=0"], "ppo.update_epochs: expected a positive integer"),
    (["--set", "ppo.minibatch_size=4096"], "ppo.minibatch_size: 4096 is larger than the batch of 256 steps"),
    (["--set", "seed=-1"], "seed: expected an integer in [0, 2**32)"),
    (["--seed", "-1"], "argument --seed: expected a non-negative integer, got '-1'"),
    (["--seed", "x"], "argument --seed: expected a non-negative integer, got 'x'"),
    (["--total-steps", "0"], "argument --total-steps: expected a positive integer, got '0'"),
    (["--num-envs", "many"], "argument --num-envs: expected a positive integer"),
    (["--device", "tpu"], "device: expected one of auto, cpu, cuda, cuda:N, got 'tpu'"),
    (["--device", "cuda:one"], "device: expected one of auto, cpu, cuda, cuda:N, got 'cuda:one'"),
    (["--set", "ppo.clip_cof=0.1"], "unknown config field 'ppo.clip_cof'; did you mean 'ppo.clip_coef'?"),
    (["--set", "rolout.num_envs=4"], "unknown config section or field 'rolout'; did you mean 'rollout'?"),
    (["--set", "ppo.learning_rate"], "--set 'ppo.learning_rate': expected KEY=VALUE"),
    (["--set", "model.hidden_sizes=[64, 64"], "--set 'model.hidden_sizes': cannot parse value"),
    (["--set", "env.vector=asnc"],
     "env.vector: expected one of auto, sync, async, envpool, got 'asnc'; did you mean 'async'?"),
    (["--set", "checkpoint_interval_s=-5"], "checkpoint_interval_s: expected a number >= 0"),
    (["--set", "ppo.value_loss=l1"], "ppo.value_loss: expected one of mse, huber, got 'l1'"),
    (["--preset", "spinningup-ppo", "--set", "ppo.recompute_advantages=true"],
     "ppo.recompute_advantages: with ppo.value_fit=separate the critic does not change"),
    (["--preset", "minimal-ppo", "--set", "ppo.value_fit=separate", "--set", "ppo.recompute_advantages=false",
      "--set", "model.shared_trunk=false"],
     "ppo.value_fit: separate fits the critic on 0.5 (V - R)^2; ppo.value_loss=huber"),
    (["--preset", "minimal-ppo", "--set", "ppo.value_fit=separate", "--set", "ppo.recompute_advantages=false",
      "--set", "ppo.value_loss=mse"], "model.shared_trunk: ppo.value_fit=separate fits the value function separately"),
    (["--set", "env_id=Pendulum-v1"], "--set env_id: the env is the ENV_ID argument"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_train_values(capsys, args: list[str], expected: str) -> None:
    bad_input(capsys, ["train", "CartPole-v1", *args], expected)


def test_cuda_device_that_is_not_there(capsys, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    bad_input(capsys, ["train", "CartPole-v1", "--device", "cuda", *TINY], "no CUDA GPU is available")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    bad_input(capsys, ["train", "CartPole-v1", "--device", "cuda:3", *TINY], "'cuda:3' does not exist")


@pytest.mark.parametrize(("content", "expected"), [
    ("ppo: {learning_rate: 0.1\n", "is not valid YAML at line"),
    ("- ppo\n- rollout\n", "must hold a mapping of fields, not a list"),
    ("ppo: 3\n", "ppo: expected a mapping of fields, got int"),
    ("ppo: {clip_coeff: 0.1}\n", "did you mean 'ppo.clip_coef'?"),
    ("rollout: {gamma: 2}\n", "rollout.gamma: expected a number in [0, 1]"),
])
def test_bad_config_file(capsys, tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content)
    bad_input(capsys, ["train", "CartPole-v1", "--config", path], f"config file '{path}'" if "YAML" in expected
              or "mapping of fields, not" in expected else "", expected)


def test_missing_config_file(capsys, tmp_path: Path) -> None:
    bad_input(capsys, ["train", "CartPole-v1", "--config", tmp_path / "nope.yaml"], "nope.yaml' does not exist")


def test_run_dir_under_a_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    bad_input(capsys, ["train", "CartPole-v1", "--run-dir", tmp_path / "file" / "run", *TINY], "is not writable")
    bad_input(capsys, ["train", "CartPole-v1", "--run-dir", tmp_path / "file", *TINY], "is a file, not a folder")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_run_dir(capsys, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        bad_input(capsys, ["train", "CartPole-v1", "--run-dir", locked / "run", *TINY], "is not writable")
    finally:
        locked.chmod(0o700)


def test_run_dir_that_already_holds_a_run(capsys, run: Path) -> None:
    before = (run / "metrics.csv").read_text()
    bad_input(capsys, ["train", "CartPole-v1", "--run-dir", run, *TINY], "already holds a run", f"--resume {run}")
    assert (run / "metrics.csv").read_text() == before


# ---------------------------------------------------------------------------- train --resume


def test_resume_missing_folder(capsys, tmp_path: Path) -> None:
    bad_input(capsys, ["train", "CartPole-v1", "--resume", tmp_path / "nope"], "does not exist")


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "Acrobot-v1"], "that run trains ppo on CartPole-v1, not ppo on Acrobot-v1"),
    (["train", "CartPole-v1", "--algo", "vpg"], "that run trains ppo on CartPole-v1, not vpg on CartPole-v1"),
    (["train", "CartPole-v1", "--num-envs", "4"], "rollout.num_envs cannot change when resuming (the run has 2"),
    (["train", "CartPole-v1", "--seed", "7"], "seed cannot change when resuming"),
    (["train", "CartPole-v1", "--set", "model.hidden_sizes=[8]"], "model cannot change when resuming"),
    (["train", "CartPole-v1", "--set", "env.normalize_obs=true"], "env cannot change when resuming"),
    (["train", "CartPole-v1", "--set", "ppo.clip_cof=0.3"], "did you mean 'ppo.clip_coef'?"),
    (["train", "CartPole-v1", "--set", "ppo.learning_rate=-1"], "ppo.learning_rate: expected a positive number"),
    (["train", "CartPole-v1", "--preset", "CartPole-v1"], "--preset cannot be combined with --resume"),
    (["train", "CartPole-v1", "--run-dir", "elsewhere"], "--run-dir cannot be combined with --resume"),
])
def test_resume_refuses_changes(capsys, run: Path, args: list[str], expected: str) -> None:
    before = (run / "metrics.csv").read_text(), (run / "summary.json").read_text()
    bad_input(capsys, [*args, "--resume", run, "--quiet"], expected)
    assert ((run / "metrics.csv").read_text(), (run / "summary.json").read_text()) == before


def test_resume_with_different_spaces(capsys, run: Path) -> None:
    def widen(meta: dict) -> None:
        meta["observation_space"]["high"] = 99.0
    edit_meta(run / "checkpoints" / "latest", widen)
    bad_input(capsys, ["train", "CartPole-v1", "--resume", run, "--quiet"],
              "the env's spaces differ from the checkpoint's")


def test_resume_of_an_agent_only_checkpoint(capsys, trained: Path, tmp_path: Path) -> None:
    ppokit.load(trained).save(str(tmp_path / "agent"))
    bad_input(capsys, ["train", "CartPole-v1", "--resume", tmp_path / "agent", "--quiet"],
              "the checkpoint holds an agent only")


def test_resume_of_a_run_without_checkpoint(capsys, run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    bad_input(capsys, ["train", "CartPole-v1", "--resume", run, "--quiet"], "has no checkpoint yet")


def test_resume_of_a_truncated_checkpoint(capsys, run: Path) -> None:
    model = run / "checkpoints" / "latest" / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    bad_input(capsys, ["train", "CartPole-v1", "--resume", run, "--quiet"], "model.safetensors")


# ---------------------------------------------------------------------------- eval, record, plot


def test_eval_paths(capsys, tmp_path: Path) -> None:
    bad_input(capsys, ["eval", tmp_path / "nope"], "does not exist (expected a run folder or a checkpoint folder)")
    (tmp_path / "file").write_text("x")
    bad_input(capsys, ["eval", tmp_path / "file"], "is not a folder")
    (tmp_path / "empty").mkdir()
    bad_input(capsys, ["eval", tmp_path / "empty"], "holds no checkpoint")


def test_eval_of_a_run_without_checkpoint(capsys, run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    bad_input(capsys, ["eval", run], f"run folder '{run}' has no checkpoint yet")
    bad_input(capsys, ["record", run, "--out", run / "x.gif"], "has no checkpoint yet")


@pytest.mark.parametrize(("damage", "expected"), [
    ("empty model", "model.safetensors is empty or truncated (0 bytes)"),
    ("truncated model", "model.safetensors"),
    ("truncated model, no checksum", "model.safetensors is corrupted or truncated"),
    ("flipped byte", "does not match the checksum"),
    ("model missing", "is incomplete: model.safetensors is missing"),
    ("meta missing", "is incomplete: meta.json is missing"),
    ("meta empty", "meta.json is not valid JSON"),
    ("meta truncated", "meta.json is not valid JSON"),
    ("meta a list", "is not a ppokit checkpoint of format 1"),
    ("meta future format", "is not a ppokit checkpoint of format 1 (it says format 99)"),
    ("meta without env", "lacks a valid 'env_id'"),
    ("meta bad config", "its config is unusable (ppo.learning_rate: expected a positive number"),
    ("meta other env", "the agent was trained on observation space Box("),
    ("meta other model", "weights do not match its config"),
    ("meta absurd space", "bad space description"),
    ("meta env mismatch", "names env 'Acrobot-v1' but its config trains 'CartPole-v1'"),
])
def test_eval_of_a_damaged_checkpoint(capsys, run: Path, damage: str, expected: str) -> None:
    latest = run / "checkpoints" / "latest"
    model, meta_file = latest / "model.safetensors", latest / "meta.json"
    data = model.read_bytes()
    if damage == "empty model":
        model.write_bytes(b"")
    elif damage.startswith("truncated model"):
        model.write_bytes(data[: len(data) - 100])
        if "no checksum" in damage:
            edit_meta(latest, lambda m: m.pop("model_sha256"))
    elif damage == "flipped byte":
        model.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    elif damage == "model missing":
        model.unlink()
    elif damage == "meta missing":
        meta_file.unlink()
    elif damage == "meta empty":
        meta_file.write_text("")
    elif damage == "meta truncated":
        meta_file.write_text(meta_file.read_text()[:50])
    elif damage == "meta a list":
        meta_file.write_text("[1, 2]")
    elif damage == "meta future format":
        edit_meta(latest, lambda m: m.update(format_version=99))
    elif damage == "meta without env":
        edit_meta(latest, lambda m: m.pop("env_id"))
    elif damage == "meta bad config":
        edit_meta(latest, lambda m: m["config"]["ppo"].update(learning_rate=-1))
    elif damage == "meta other env":  # relabelled as Acrobot (6 observations, CartPole has 4)
        edit_meta(latest, lambda m: (m.update(env_id="Acrobot-v1"), m["config"].update(env_id="Acrobot-v1")))
    elif damage == "meta other model":
        edit_meta(latest, lambda m: m["config"]["model"].update(hidden_sizes=[16]))
    elif damage == "meta absurd space":
        edit_meta(latest, lambda m: m["observation_space"].update(shape=[10**9, 10**9]))
    elif damage == "meta env mismatch":
        edit_meta(latest, lambda m: m.update(env_id="Acrobot-v1"))
    bad_input(capsys, ["eval", run, "--episodes", "1"], expected)
    if damage != "meta other env":  # that agent loads; it only does not fit the env it names
        with pytest.raises(ppokit.ConfigError):
            ppokit.load(run)


def test_eval_works_on_the_intact_run(capsys, run: Path) -> None:
    code, out, _ = run_cli(capsys, ["eval", run, "--episodes", "1", "--json"])
    assert code == 0 and json.loads(out)["env_id"] == "CartPole-v1"


def test_eval_falls_back_to_the_old_latest(capsys, run: Path) -> None:
    """A kill between the two renames of a checkpoint write leaves only .latest.old: still usable."""
    checkpoints = run / "checkpoints"
    os.replace(checkpoints / "latest", checkpoints / ".latest.old")
    code, _, _ = run_cli(capsys, ["eval", run, "--episodes", "1"])
    assert code == 0


def test_eval_bad_episodes(capsys, run: Path) -> None:
    bad_input(capsys, ["eval", run, "--episodes", "0"], "argument --episodes: expected a positive integer")


def test_record_out_paths(capsys, run: Path, tmp_path: Path) -> None:
    bad_input(capsys, ["record", run, "--out", tmp_path / "x.avi"], "expected a .gif or .mp4 file name")
    bad_input(capsys, ["record", run, "--out", tmp_path / "nope" / "x.gif"], "folder", "does not exist")
    (tmp_path / "dir.gif").mkdir()
    bad_input(capsys, ["record", run, "--out", tmp_path / "dir.gif"], "is a folder; expected a file name")
    bad_input(capsys, ["record", run], "the following arguments are required: --out")


def test_record_mp4_without_ffmpeg(capsys, monkeypatch, run: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    bad_input(capsys, ["record", run, "--out", tmp_path / "x.mp4"], "MP4 needs imageio-ffmpeg", ".gif")


def render_raises(monkeypatch, error: Exception) -> None:
    """``record`` gets an env whose render() raises ``error`` (it makes its env as every command does,
    through ``ppokit.envs.make_env``)."""
    import ppokit.envs

    def make_env(env_id, kwargs=None, render_mode=None, max_episode_steps=None):
        env = gym.make(env_id)
        env.render = lambda: (_ for _ in ()).throw(error)
        return env

    monkeypatch.setattr(ppokit.envs, "make_env", make_env)


def test_record_env_that_cannot_render(capsys, monkeypatch, run: Path, tmp_path: Path) -> None:
    render_raises(monkeypatch, gym.error.DependencyNotInstalled(
        'pygame is not installed, run `pip install "gymnasium[classic-control]"`'))
    bad_input(capsys, ["record", run, "--out", tmp_path / "x.gif"], "needs pygame", "pip install 'ppokit[video]'")
    assert not (tmp_path / "x.gif").exists()


# mujoco.FatalError (mujoco is not installed here: a class of the same name and module stands in).
MujocoFatalError = type("FatalError", (Exception,), {"__module__": "mujoco"})


@pytest.mark.parametrize(("error", "backend"), [
    (MujocoFatalError("gladLoadGL error"), None),  # glfw "worked" without a display
    (MujocoFatalError("an OpenGL platform library has not been loaded into this process, this most likely means "
                      "that a valid OpenGL context has not been created before mjr_makeContext was called"), None),
    (RuntimeError("No OpenGL backend could be imported. Attempting to create a rendering context will result in a "
                  "RuntimeError."), None),  # gymnasium's MujocoRenderer, every backend failed
    (ImportError("Cannot initialize a headless EGL display."), "egl"),  # MUJOCO_GL=egl without a GPU
])
def test_record_mujoco_without_an_opengl_context(capsys, monkeypatch, run: Path, tmp_path: Path,
                                                 error: Exception, backend: str | None) -> None:
    render_raises(monkeypatch, error)
    if backend is None:
        monkeypatch.delenv("MUJOCO_GL", raising=False)
    else:
        monkeypatch.setenv("MUJOCO_GL", backend)
    tried = "MUJOCO_GL is not set" if backend is None else f"MUJOCO_GL={backend} did not work"
    bad_input(capsys, ["record", run, "--out", tmp_path / "x.gif"], "cannot render without an OpenGL context",
              tried, "MUJOCO_GL=egl", "MUJOCO_GL=osmesa", first_line(error))


def test_record_env_whose_render_raises(capsys, monkeypatch, run: Path, tmp_path: Path) -> None:
    render_raises(monkeypatch, ValueError("broken renderer"))
    code, _, lines = run_cli(capsys, ["record", run, "--out", tmp_path / "x.gif"])
    assert code == 1
    assert lines == ["ppokit: failed: env 'CartPole-v1' raised in render: ValueError: broken renderer"]


def test_plot_errors(capsys, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "curve.png"
    bad_input(capsys, ["plot", run, "--out", tmp_path / "curve.jpg"], "expected a .png, .pdf or .svg file name")
    bad_input(capsys, ["plot", run, "--out", tmp_path / "nope" / "c.png"], "does not exist")
    bad_input(capsys, ["plot", tmp_path / "missing", "--out", out], "run folder", "does not exist")
    (tmp_path / "empty").mkdir()
    bad_input(capsys, ["plot", tmp_path / "empty", "--out", out], "is not a run folder (it has no metrics.csv)")
    bad_input(capsys, ["plot", run, tmp_path / "empty", "--out", out], "is not a run folder")
    assert not out.exists(), "nothing is plotted when one input is bad"
    (run / "metrics.csv").write_text("just,some\ntext,here\n")
    bad_input(capsys, ["plot", run, "--out", out], "is not a ppokit metrics.csv")
    (run / "metrics.csv").write_text("global_step,episodic_return_mean\n10,abc\n")
    bad_input(capsys, ["plot", run, "--out", out], "line 2: not a number")


def test_plot_works_on_the_intact_run(capsys, run: Path, tmp_path: Path) -> None:
    code, _, _ = run_cli(capsys, ["plot", run, "--out", tmp_path / "c.png"])
    assert code == 0 and (tmp_path / "c.png").stat().st_size > 0


@pytest.mark.parametrize(("args", "expected"), [
    ([], "the following arguments are required: command"),
    (["fly"], "invalid choice: 'fly'"),
    (["train"], "the following arguments are required: ENV_ID"),
    (["eval"], "the following arguments are required: RUN_DIR_OR_CHECKPOINT"),
])
def test_usage_errors(capsys, args: list[str], expected: str) -> None:
    bad_input(capsys, args, expected)


def test_real_entry_point_prints_one_line(tmp_path: Path) -> None:
    """``python -m ppokit``: the exit code and the single line reach the shell."""
    result = subprocess.run([PYTHON, "-m", "ppokit", "train", "CartPol-v1"], env=subprocess_env(),
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ppokit: error: unknown env 'CartPol-v1'; did you mean 'CartPole-v1'? (any registered Gymnasium id is "
        "accepted; list them with: python -c 'import gymnasium; gymnasium.pprint_registry()')"]
