"""ppokit info describes a saved agent; ppokit watch plays it in a window, or says to record."""

from __future__ import annotations

import json

import pytest

import ppokit
from ppokit.cli import main
from ppokit.evaluations import read_evaluations
from ppokit.run import train
from tests.helpers import small_config


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    cfg = small_config("Pendulum-v1", env={"normalize_obs": True, "normalize_reward": True},
                       eval={"every_steps": 64, "episodes": 2})
    cfg.total_steps = 4 * 32
    return train(cfg, run_dir=tmp_path_factory.mktemp("info") / "run", quiet=True).run_dir


def test_info_lists_env_spaces_layers_statistics_and_evaluations(pendulum_run, capsys):
    assert main(["info", str(pendulum_run)]) == 0
    text = capsys.readouterr().out
    agent = ppokit.load(pendulum_run)
    total = sum(p.numel() for p in agent.parameters())
    assert "env          Pendulum-v1" in text
    assert "action       Box(-2.0, 2.0, (1,), float32)" in text
    assert "algorithm    ppo" in text and "steps        128" in text
    assert f"parameters   {total:,} (actor " in text
    assert "policy_head              Linear 16 -> 1" in text and "log_std" in text
    assert "over 128 observations, clip 10.0" in text and "reward norm  return std" in text
    best = max(read_evaluations(pendulum_run), key=lambda row: row["eval_return_mean"])
    assert f"evaluations  best {best['eval_return_mean']:.1f}" in text and "(2 during training)" in text

    assert main(["info", str(pendulum_run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["total"] == total == sum(row["parameters"] for row in info["layers"])
    assert info["parameters"]["actor"] + info["parameters"]["critic"] == total
    assert info["normalizer"]["count"] == 128 and len(info["normalizer"]["mean"]) == 3
    assert info["evaluations"]["latest"]["global_step"] == 128


def test_info_on_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_watch_without_a_display_points_to_record(pendulum_run, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert main(["watch", str(pendulum_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no display to watch on" in err and f"ppokit record '{pendulum_run}' --out agent.gif" in err


def test_watch_plays_in_a_window_where_there_is_a_display(tmp_path, capsys, monkeypatch):
    """pygame's dummy video driver stands in for a display: the human-mode window opens and closes."""
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    run = train(small_config("CartPole-v1"), run_dir=tmp_path / "run", quiet=True).run_dir
    assert main(["watch", str(run), "--episodes", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["episode 1", "episode 2"]
