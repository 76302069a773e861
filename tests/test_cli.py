"""The command line, in process: exit codes, one-line errors, train/eval/record/plot/presets."""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ppokit.cli
from ppokit.cli import build_parser, main
from ppokit.version import __version__
from tests.errors_support import TOY, one_error_line
from tests.helpers import COUNTER_ID

SMALL = ["--set", "rollout.num_envs=2", "--set", "rollout.num_steps=16", "--set", "ppo.minibatch_size=16",
         "--set", "ppo_kl.minibatch_size=16", "--set", "ppo.update_epochs=1", "--set", "model.hidden_sizes=[8]",
         "--set", "eval_episodes=2", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "CartPole-v1", "--run-dir", str(path), "--total-steps", "64", "--seed", "3", *SMALL]) == 0
    return path


def test_train_writes_a_run(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["total_steps"] == 64 and summary["eval_episodes"] == 2
    assert summary["env_id"] == "CartPole-v1" and summary["status"] == "completed"
    assert (run_dir / "checkpoints" / "latest" / "model.safetensors").exists()
    assert (run_dir / "config.yaml").read_text().count("num_envs: 2") == 1  # --set reached the config


def test_train_output(tmp_path, capsys):
    assert main(["train", COUNTER_ID, "--run-dir", str(tmp_path / "r"), "--total-steps", "32", *SMALL]) == 0
    out = capsys.readouterr().out
    assert f"{COUNTER_ID} ppo: 32 steps" in out and f"run folder: {tmp_path / 'r'}" in out
    assert "eval 15.0 +/- 0.0 over 2 episodes" in out  # the counter env pays 15 per 5-step episode


def test_config_yaml_repeats_the_run(run_dir, tmp_path):
    again = tmp_path / "again"
    assert main(["train", "CartPole-v1", "--config", str(run_dir / "config.yaml"), "--run-dir", str(again),
                 "--quiet"]) == 0
    assert (again / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()

    def rows(path):
        with open(path / "metrics.csv", newline="") as handle:
            return [{k: v for k, v in row.items() if k not in ("wall_time_s", "sps") and not k.startswith("time_")}
                    for row in csv.DictReader(handle)]

    assert rows(again) == rows(run_dir)


def test_eval_json(run_dir, capsys):
    assert main(["eval", str(run_dir), "--episodes", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env_id"] == "CartPole-v1" and result["episodes"] == 3 and result["deterministic"]
    assert len(result["returns"]) == 3 and result["mean"] == pytest.approx(sum(result["returns"]) / 3)
    assert result["global_step"] == 64
    assert main(["eval", str(run_dir / "checkpoints" / "latest"), "--episodes", "2", "--stochastic"]) == 0
    assert "over 2 episodes (stochastic" in capsys.readouterr().out


def test_presets_lists_shipped_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1" in out and "Pendulum-v1" in out and "solved at" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines()}
    for name in ("spinningup-ppo", "montecarlo-ppo", "minimal-ppo"):  # docs/tutorials.md
        assert lines[name][1:4] == ["env", "CartPole-v1", "algo"] and lines[name][-1] == "475.0", lines[name]
    assert lines["ppo-paper"][2] == "any" and lines["ppo-cleanrl"][2] == "any"
    # The id `ppokit train` takes, not the file name's spelling (ALE-Pong-v5).
    assert lines["ALE-Pong-v5"][2] == "ALE/Pong-v5" and lines["pong-vpg"][2] == "ALE/Pong-v5"
    assert lines["ppokit-demo-Catch-v0"][2] == "ppokit-demo/Catch-v0"
    assert lines["Ant-v5"][2] == "Ant-v5" and lines["Ant-v5"][-1] == "6000.0"


def test_record_and_plot(run_dir, tmp_path, capsys):
    counter_run = tmp_path / "counter"
    assert main(["train", COUNTER_ID, "--run-dir", str(counter_run), "--total-steps", "32", *SMALL]) == 0
    assert main(["record", str(counter_run), "--out", str(tmp_path / "a.gif"), "--episodes", "2"]) == 0
    assert "(12 frames)" in capsys.readouterr().out  # two 5-step episodes plus their reset frames
    assert (tmp_path / "a.gif").stat().st_size > 0
    assert main(["record", str(run_dir), "--out", str(tmp_path / "b.gif")]) == 0  # CartPole: pygame renders it
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, words", [
    (["train", "CartPol-v1"], ["CartPol-v1", "did you mean 'CartPole-v1'"]),
    (["train", "CartPole-v1", "--set", "ppo.clip_coef=abc"], ["ppo.clip_coef"]),
    (["train", "CartPole-v1", "--set", "ppo.nope=1"], ["ppo.nope"]),
    (["train", "CartPole-v1", "--set", "novalue"], ["KEY=VALUE"]),
    (["train", "CartPole-v1", "--algo", "ppx"], ["ppx"]),
    (["train", "CartPole-v1", "--total-steps", "-5"], ["positive integer"]),
    (["train", "CartPole-v1", "--preset", "nope"], ["unknown preset 'nope'"]),
    (["train", "CartPole-v1", "--config", "/nonexistent/c.yaml"], ["does not exist"]),
    (["train", "CartPole-v1", "--resume", "/nonexistent/run"], ["/nonexistent/run"]),
    (["eval", "/nonexistent/run"], ["does not exist"]),
    (["record", "/nonexistent/run", "--out", "x.avi"], [".gif or .mp4"]),
    (["plot", "/nonexistent/run", "--out", "x.png"], ["/nonexistent/run", "does not exist"]),
    (["frobnicate"], ["frobnicate"]),
    (["train"], ["arguments are required: ENV_ID", "CartPole-v1", "--resume RUN_DIR"]),
    (["train", "--quiet", "--seed", "1"], ["arguments are required: ENV_ID"]),
])
def test_bad_input_is_one_line_and_exit_2(argv, words, capsys):
    assert main(argv) == 2
    one_error_line(capsys, *words)


def test_resume_of_another_env_is_bad_input(run_dir, capsys):
    assert main(["train", "Pendulum-v1", "--resume", str(run_dir), "--quiet"]) == 2
    one_error_line(capsys, "CartPole-v1")


def test_resume_from_an_agent_only_checkpoint_is_bad_input(run_dir, tmp_path, capsys):
    import ppokit

    ppokit.load(run_dir).save(str(tmp_path / "agent"))
    assert main(["train", "CartPole-v1", "--resume", str(tmp_path / "agent"), "--quiet"]) == 2
    one_error_line(capsys, "agent only")


def test_existing_run_folder_is_bad_input(run_dir, capsys):
    assert main(["train", "CartPole-v1", "--run-dir", str(run_dir), *SMALL]) == 2
    one_error_line(capsys, "--resume")


def test_failure_during_training_exits_1(tmp_path, capsys):
    argv = ["train", COUNTER_ID, "--run-dir", str(tmp_path / "r"), "--set", "env.vector=sync",
            "--set", "env.kwargs={reward: .nan}", *SMALL]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "training failed" in err and "Traceback" not in err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "failed"


def test_max_episode_steps_in_env_kwargs(tmp_path, capsys):
    """env.kwargs={max_episode_steps: N} reaches the final evaluation, eval and record."""
    run = tmp_path / "run"
    assert main(["train", COUNTER_ID, "--run-dir", str(run), "--total-steps", "32", *SMALL,
                 "--set", "env.kwargs={max_episode_steps: 3}"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert "eval_error" not in summary and summary["eval_return_mean"] == 1 + 2 + 3  # 3-step episodes
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lengths"] == [3, 3]
    assert main(["record", str(run), "--out", str(tmp_path / "r.gif")]) == 0
    assert "(4 frames)" in capsys.readouterr().out


def test_console_script_finds_an_env_module_in_the_current_folder(tmp_path):
    """``ppokit train module:Env-v0`` imports ``module`` from the current folder, as ``python -m ppokit`` does."""
    script = Path(sys.executable).with_name("ppokit")
    if not script.exists():
        pytest.skip("the ppokit console script is not installed beside this Python")
    (tmp_path / "my_cwd_envs.py").write_text(
        "import gymnasium\n"
        "gymnasium.register('MyCwdCartPole-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv',"
        " max_episode_steps=20)\n")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([str(script), "train", "my_cwd_envs:MyCwdCartPole-v0", "--run-dir", "run",
                             "--total-steps", "32", *SMALL], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["env_id"] == "my_cwd_envs:MyCwdCartPole-v0"


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"ppokit {__version__}\n"
    assert importlib.metadata.version("ppokit") == __version__  # pyproject reads ppokit.version


def test_resume_without_env_id_continues_the_runs_env(run_dir, tmp_path, capsys):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    assert json.loads((run / "summary.json").read_text())["total_steps"] == 64
    assert main(["train", "--resume", str(run), "--total-steps", "128", "--quiet"]) == 0
    assert "CartPole-v1 ppo: 128 steps" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_id"] == "CartPole-v1" and summary["total_steps"] == 128
    with open(run / "metrics.csv", newline="") as handle:
        assert [int(float(row["global_step"])) for row in csv.DictReader(handle)] == [32, 64, 96, 128]


def test_plot_of_a_run_without_a_finished_episode_is_bad_input(tmp_path, capsys):
    run = tmp_path / "run"  # one iteration of 2 x 16 steps in 1000-step episodes: no episode ends
    assert main(["train", TOY, "--run-dir", str(run), "--total-steps", "32", *SMALL,
                 "--set", "env.kwargs={length: 1000}", "--set", "eval_episodes=0"]) == 0
    capsys.readouterr()
    assert main(["plot", str(run), "--out", str(tmp_path / "p.png")]) == 2
    one_error_line(capsys, str(run), "no finished episode")
    assert not (tmp_path / "p.png").exists()


def test_other_libraries_log_records_are_not_prefixed(monkeypatch, capsys):
    """Only the ppokit logger prints as ``ppokit: ...``; e.g. gymnasium's or torch's records keep their format."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a plain process (pytest adds its own)

    def command(args):
        logging.getLogger("someotherlib").warning("a warning of another library")
        logging.getLogger("ppokit").info("a message of ppokit")
        return 0

    monkeypatch.setitem(ppokit.cli.COMMANDS, "presets", command)
    assert main(["presets"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "ppokit: a message of ppokit" in err
    assert "a warning of another library" in err and "ppokit: a warning of another library" not in err
    assert logging.getLogger().handlers == []  # the root logger is left alone
    assert logging.getLogger("ppokit").propagate  # and the ppokit logger is put back after main()


def test_every_argument_has_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == set(ppokit.cli.COMMANDS)
    for name, command in [("ppokit", parser), *commands.choices.items()]:
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert isinstance(action.help, str) and action.help.strip() and action.help != argparse.SUPPRESS, \
                (name, action.option_strings or action.dest)
