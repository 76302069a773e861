"""Evaluation during training: its schedule, lockstep episodes, the files it writes, and the
choice of checkpoints/best by it (and by training return when it is off)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import ppokit.evaluations
from ppokit.cli import main
from ppokit.evaluations import is_due, play_episodes, read_evaluations
from ppokit.run import train
from tests.helpers import COUNTER_ID, small_config


def test_schedule_every_multiple_crossed_and_the_last_iteration():
    batch, every = 256, 1000
    steps = [batch * i for i in range(1, 13)]  # 256 ... 3072
    due = [step for step in steps if is_due(step - batch, step, every, last=step == steps[-1])]
    assert due == [1024, 2048, 3072]  # crossed 1000, 2000, 3000 (3072 is also the last)
    assert [s for s in steps if is_due(s - batch, s, every, last=s == 2560)] == [1024, 2048, 2560, 3072]
    assert not any(is_due(s - batch, s, 0, last=True) for s in steps)  # 0: never, not even at the end
    assert all(is_due(s - batch, s, 1, last=False) for s in steps)  # every step: every iteration


class _Countdown:
    """An env whose episode lasts ``length`` steps, reward = the action received."""

    def __init__(self, length: int):
        self.length, self.t, self.seeds = length, 0, []

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.t = 0
        return np.array([float(self.length)], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.length - self.t)], np.float32), float(action), self.t >= self.length, False, {}


class _BatchAgent:
    """Acts 1 on every observation; records the batch sizes it was called with."""

    def __init__(self):
        self.batches = []

    def act(self, obs, deterministic=True):
        self.batches.append(len(obs))
        return np.ones(len(obs), np.int64)


def test_play_episodes_steps_all_envs_together_until_each_ends():
    envs, agent = [_Countdown(3), _Countdown(1), _Countdown(2)], _BatchAgent()
    returns, lengths = play_episodes(agent, envs, seeds=[7, 8, 9])
    assert (returns, lengths) == ([3.0, 1.0, 2.0], [3, 1, 2])
    assert agent.batches == [3, 2, 1]  # one call per step for the episodes still going
    assert [env.seeds for env in envs] == [[7], [8], [9]]


def test_play_episodes_stops_an_episode_at_the_step_cap(caplog):
    """An env that never ends its episode (CliffWalking walking into a wall) is stopped at the cap."""
    envs, agent = [_Countdown(10**9), _Countdown(2)], _BatchAgent()
    returns, lengths = play_episodes(agent, envs, seeds=[0, 1], step_cap=5)
    assert (returns, lengths) == ([5.0, 2.0], [5, 2])


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _best_step(run_dir: Path) -> int:
    return json.loads((run_dir / "checkpoints" / "best" / "meta.json").read_text())["global_step"]


def test_best_is_the_first_agent_with_the_highest_evaluation(tmp_path, monkeypatch):
    """Scripted evaluations (means 10, 30, 20, 30, 5): best is the agent evaluated second."""
    scripted = iter([10.0, 30.0, 20.0, 30.0, 5.0])

    def fake_play(agent, envs, seeds, deterministic=True, step_cap=None):
        value = next(scripted)
        return [value - 1, value + 1], [4, 6]

    monkeypatch.setattr(ppokit.evaluations, "play_episodes", fake_play)
    cfg = small_config(COUNTER_ID, eval={"every_steps": 64, "episodes": 2})
    cfg.total_steps = 5 * 64  # batch 32: an evaluation every second iteration, 5 in all
    cfg.checkpoint_interval_s = 1e9  # latest only at the end: best must not wait for it
    run = train(cfg, run_dir=tmp_path / "run", quiet=True).run_dir

    evaluations = read_evaluations(run)
    assert [row["global_step"] for row in evaluations] == [64, 128, 192, 256, 320]
    assert [row["eval_return_mean"] for row in evaluations] == [10, 30, 20, 30, 5]
    assert [row["eval_return_std"] for row in evaluations] == [1, 1, 1, 1, 1]
    assert [row["eval_length_mean"] for row in evaluations] == [5] * 5
    assert _best_step(run) == 128
    logged = {int(row["global_step"]): row["eval_return_mean"] for row in _metrics(run)}
    assert logged == {32: "", 64: "10.0", 96: "", 128: "30.0", 160: "", 192: "20.0", 224: "", 256: "30.0",
                      288: "", 320: "5.0"}


def test_without_evaluation_best_is_the_best_training_return_at_any_iteration(tmp_path):
    cfg = small_config("CartPole-v1", eval={"every_steps": 0})
    cfg.total_steps = 40 * 32
    cfg.checkpoint_interval_s = 1e9  # latest only at the end
    run = train(cfg, run_dir=tmp_path / "run", quiet=True).run_dir
    assert not (run / "evaluations.csv").exists()
    rows = [(int(r["global_step"]), float(r["episodic_return_mean"]))
            for r in _metrics(run) if r["episodic_return_mean"]]
    best = max(value for _, value in rows)
    assert _best_step(run) == next(step for step, value in rows if value == best)
    assert _best_step(run) != rows[-1][0] or rows[-1][1] == best  # the test can tell "best" from "latest"


@pytest.mark.parametrize("deterministic", [True, False])
def test_evaluation_does_not_change_training(tmp_path, deterministic):
    """Evaluating after every iteration (even sampling actions) leaves the training run bit for bit alike."""
    def run(name: str, every: int):
        cfg = small_config("CartPole-v1", eval={"every_steps": every, "deterministic": deterministic})
        cfg.total_steps = 6 * 32
        return train(cfg, run_dir=tmp_path / name, quiet=True).run_dir

    with_eval, without = run("with", 1), run("without", 0)
    assert len(read_evaluations(with_eval)) == 6
    columns = ("policy_loss", "value_loss", "approx_kl", "episodic_return_mean")
    assert [[r[c] for c in columns] for r in _metrics(with_eval)] == \
        [[r[c] for c in columns] for r in _metrics(without)]


def test_bad_eval_settings_are_one_line_errors(tmp_path, capsys):
    for setting, expected in (("eval.every_steps=-5", "eval.every_steps: expected an integer >= 0"),
                              ("eval.episodes=0", "eval.episodes: expected a positive integer"),
                              ("eval.every=5", "unknown config field 'eval.every'")):
        code = main(["train", "CartPole-v1", "--run-dir", str(tmp_path / "r"), "--set", setting, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
