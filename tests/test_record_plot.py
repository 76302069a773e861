"""record() writes every frame of the agent's episodes; plot() draws the runs' curves."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import imageio.v3 as iio
import pytest

from ppokit.config import ConfigError
from ppokit.evaluate import evaluate
from ppokit.plot import plot_runs, read_curve
from ppokit.record import record
from ppokit.run import train
from tests.helpers import COUNTER_ID, small_config


@pytest.fixture(scope="module")
def counter_run(tmp_path_factory):
    cfg = small_config(COUNTER_ID, env={"vector": "sync"})
    return train(cfg, run_dir=tmp_path_factory.mktemp("rec") / "run", quiet=True).run_dir


def test_record_gif_has_every_frame(counter_run, tmp_path):
    out = tmp_path / "episodes.gif"
    frames = record(counter_run, out, episodes=2)
    assert frames == 2 * (5 + 1)  # reset frame + one per step, 5-step episodes
    images = iio.imread(out)
    assert images.shape[0] == frames
    # The counter env renders its step count as the pixel value: 0..5 twice.
    assert [int(image[0, 0, 0]) for image in images] == [0, 1, 2, 3, 4, 5] * 2


def test_record_cartpole_after_a_plain_install(tmp_path, capfd, monkeypatch):
    """Classic-control envs render with pygame, which the video extra brings; no display is needed."""
    for variable in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(variable, raising=False)
    run = train(small_config("CartPole-v1"), run_dir=tmp_path / "run", quiet=True)
    capfd.readouterr()
    frames = record(run.run_dir, tmp_path / "cartpole.gif")
    assert frames == evaluate(run.agent, "CartPole-v1", episodes=1)["lengths"][0] + 1  # reset frame + one per step
    images = iio.imread(tmp_path / "cartpole.gif")  # (the GIF writer merges identical consecutive frames)
    assert images.shape[1:3] == (400, 600) and 1 < len(images) <= frames
    assert capfd.readouterr().err == ""  # SDL probed for no display (it complains on a headless machine)
    assert "SDL_VIDEODRIVER" not in os.environ


def test_pygame_comes_with_the_video_extra():
    """``pip install 'ppokit[video]'`` is all ``record`` needs for the classic-control envs."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    video = pyproject["project"]["optional-dependencies"]["video"]
    assert any(re.match(r"pygame\b", requirement) for requirement in video)
    assert any(re.match(r"imageio\b", requirement) for requirement in video)


def test_record_rejects_bad_output(counter_run, tmp_path):
    with pytest.raises(ConfigError, match=".gif or .mp4"):
        record(counter_run, tmp_path / "x.avi")
    with pytest.raises(ConfigError, match="does not exist"):
        record(counter_run, tmp_path / "missing" / "x.gif")


def test_plot_reads_the_metrics(counter_run, tmp_path):
    steps, returns = read_curve(counter_run)
    with open(counter_run / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["episodic_return_mean"]]
    assert steps == [float(r["global_step"]) for r in rows] and len(steps) > 0
    assert returns == pytest.approx([15.0] * len(rows))
    out = tmp_path / "curve.png"
    plot_runs([counter_run, counter_run], out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match=".png"):
        plot_runs([counter_run], tmp_path / "curve.jpg")
    with pytest.raises(ConfigError, match="no metrics.csv"):
        plot_runs([tmp_path], out)
    (tmp_path / "metrics.csv").write_text("global_step,episodic_return_mean\nabc,1.0\n")
    with pytest.raises(ConfigError, match="not a number"):
        read_curve(tmp_path)


def test_plot_refuses_a_run_without_a_finished_episode(counter_run, tmp_path):
    from tests.errors_support import TOY

    cfg = small_config(TOY, env={"kwargs": {"length": 1000}})  # 1000-step episodes
    cfg.total_steps = 32  # one iteration of 2 x 16 steps: no episode ends
    run = train(cfg, run_dir=tmp_path / "run", quiet=True).run_dir
    assert read_curve(run) == ([], [])
    out = tmp_path / "curve.png"
    with pytest.raises(ConfigError, match="has no finished episode yet"):
        plot_runs([counter_run, run], out)
    assert not out.exists()  # no empty axes
