"""ppokit plot on synthetic runs: settings grouped over seeds, mean and 95% band, eval curves,
threshold, title, and the time axis."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ppokit.cli import main
from ppokit.config import Config, save_yaml
from ppokit.evaluations import COLUMNS as EVAL_COLUMNS
from ppokit.plot import group_runs, mean_band, plot_runs


def synthetic_run(folder: Path, seed: int, clip: float, slope: float, seconds_per_step: float = 1e-3,
                  evaluations: bool = True) -> Path:
    """A run folder whose training return is ``slope * step`` (and evaluation ``slope * step + 10``)."""
    folder.mkdir(parents=True)
    cfg = Config(env_id="CartPole-v1", algo="ppo", seed=seed, solved_threshold=475.0)
    cfg.ppo.clip_coef = clip
    cfg.device = "cpu" if seed % 2 else "auto"  # not a setting: runs stay one group
    save_yaml(cfg, folder / "config.yaml")
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["global_step", "wall_time_s", "episodic_return_mean"])
        writer.writerow([100, 0.1, ""])  # no finished episode yet: skipped
        for step in range(200, 2001, 200):
            writer.writerow([step, step * seconds_per_step, slope * step])
    if evaluations:
        with open(folder / "evaluations.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=EVAL_COLUMNS)
            writer.writeheader()
            for step in (500, 1000, 1500, 2000):
                writer.writerow({"global_step": step, "wall_time_s": step * seconds_per_step,
                                 "eval_return_mean": slope * step + 10, "eval_return_std": 0, "eval_episodes": 5})
    return folder


@pytest.fixture
def runs(tmp_path):
    a = [synthetic_run(tmp_path / f"a{seed}", seed, 0.2, slope) for seed, slope in ((0, 0.1), (1, 0.2), (2, 0.3))]
    b = [synthetic_run(tmp_path / f"b{seed}", seed, 0.1, 0.05, seconds_per_step=2e-3, evaluations=False)
         for seed in (0, 1)]
    return a, b


def test_runs_are_grouped_by_setting_over_seeds(runs):
    a, b = runs
    settings = group_runs([a[0], b[0], a[1], a[2], b[1]])
    assert [s.runs for s in settings] == [a, b]
    assert [s.label for s in settings] == ["ppo.clip_coef=0.2 (3 runs)", "ppo.clip_coef=0.1 (2 runs)"]
    assert [s.label for s in group_runs(a)] == ["ppo (3 runs)"]


def test_mean_and_band_over_runs():
    x = [0.0, 10.0, 20.0]
    grid, mean, band = mean_band([(x, [0, 10, 20]), (x, [0, 20, 40]), ([0.0, 10.0, 20.0, 30.0], [0, 30, 60, 90])],
                                 points=3)
    np.testing.assert_allclose(grid, [0, 10, 20])  # the range all runs cover
    np.testing.assert_allclose(mean, [0, 20, 40])
    low, high = band
    assert low[0] == high[0] == 0  # every run agrees at 0
    assert 10 <= low[1] < 20 < high[1] <= 30  # within what the runs reached, around the mean
    assert mean_band([(x, [1, 2, 3])])[2] is None  # one run: no band


def test_plot_draws_one_line_per_setting_with_eval_threshold_and_title(runs, tmp_path):
    a, b = runs
    out = tmp_path / "curves.png"
    drawn = plot_runs([*a, *b], out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert drawn["title"] == "CartPole-v1: ppo" and drawn["threshold"] == 475.0
    assert [(line["label"], line["kind"]) for line in drawn["lines"]] == [
        ("ppo.clip_coef=0.2 (3 runs)", "train"), ("ppo.clip_coef=0.2 (3 runs)", "eval"),
        ("ppo.clip_coef=0.1 (2 runs)", "train")]  # b has no evaluations.csv
    train_a, eval_a, train_b = drawn["lines"]
    np.testing.assert_allclose(train_a["mean"], 0.2 * train_a["x"])
    assert train_a["x"][0] == 200 and train_a["x"][-1] == 2000
    np.testing.assert_allclose(eval_a["mean"], 0.2 * eval_a["x"] + 10)
    assert eval_a["x"][0] == 500
    assert np.all(train_b["band"][0] <= train_b["mean"] + 1e-9)


def test_plot_against_time(runs, tmp_path):
    a, b = runs
    drawn = plot_runs([*a, *b], tmp_path / "time.png", x="time")
    train_a, _, train_b = drawn["lines"]
    assert train_a["x"][-1] == pytest.approx(2.0) and train_b["x"][-1] == pytest.approx(4.0)  # seconds
    np.testing.assert_allclose(train_b["mean"], 0.05 * train_b["x"] / 2e-3)


def test_plot_cli(runs, tmp_path, capsys):
    a, b = runs
    assert main(["plot", *map(str, a + b), "--out", str(tmp_path / "c.png"), "--x", "time"]) == 0
    assert "(5 runs, 2 settings)" in capsys.readouterr().out
    assert main(["plot", str(a[0]), "--out", str(tmp_path / "c.png"), "--x", "episodes"]) == 2
    assert "invalid choice: 'episodes'" in capsys.readouterr().err
