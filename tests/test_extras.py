"""Optional packages: training needs none of them, and a feature whose extra is missing says the
pip command in one line (CLI: exit 2; Python: ConfigError). W&B tracking, tested offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ppokit
from ppokit.errors import ConfigError
from ppokit.extras import require
from tests.errors_support import PYTHON, TINY, bad_input, subprocess_env, train_tiny

OPTIONAL = ("matplotlib", "imageio", "imageio_ffmpeg", "pygame", "wandb", "optuna", "onnx", "rliable")


def test_training_needs_no_optional_package(tmp_path: Path) -> None:
    """``import ppokit`` and a tiny ``ppokit.train`` with every optional package unimportable."""
    code = (
        "import sys\n"
        f"for name in {OPTIONAL!r}:\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "import ppokit\n"
        f"agent = ppokit.train('CartPole-v1', total_steps=64, run_dir={str(tmp_path / 'run')!r}, "
        "rollout__num_envs=2, rollout__num_steps=16, ppo__minibatch_size=16, eval_episodes=1)\n"
        "print(agent.summary['status'])\n"
    )
    result = subprocess.run([PYTHON, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "completed"
    assert (tmp_path / "run" / "metrics.csv").exists()
    assert list((tmp_path / "run").glob("events.out.tfevents.*")), "TensorBoard events are written by default"


def test_require_names_the_pip_command() -> None:
    assert require("json", "plot", "x").__name__ == "json"
    with pytest.raises(ConfigError, match=r"^ppokit plot needs the no_such_module package: "
                                          r"pip install 'ppokit\[plot\]'$"):
        require("no_such_module", "plot", "ppokit plot")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("extras") / "run"
    assert train_tiny(folder) == 0
    return folder


def test_plot_without_matplotlib(capsys, monkeypatch, run: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    bad_input(capsys, ["plot", run, "--out", tmp_path / "a.png"], "ppokit plot needs the matplotlib package",
              "pip install 'ppokit[plot]'")
    from ppokit.plot import plot_runs

    with pytest.raises(ConfigError, match=r"ppokit\[plot\]"):
        plot_runs([run], tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_record_without_imageio(capsys, monkeypatch, run: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "imageio", None)
    bad_input(capsys, ["record", run, "--out", tmp_path / "a.gif"], "ppokit record needs the imageio package",
              "pip install 'ppokit[video]'")


def test_record_and_watch_without_pygame(capsys, monkeypatch, run: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pygame", None)
    bad_input(capsys, ["record", run, "--out", tmp_path / "a.gif"], "needs pygame", "pip install 'ppokit[video]'")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    bad_input(capsys, ["watch", run], "needs pygame", "pip install 'ppokit[video]'")


def test_reproduce_without_matplotlib(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    bad_input(capsys, ["reproduce", "ppo-table1", "--out", tmp_path / "out"], "needs the matplotlib package",
              "pip install 'ppokit[repro]'")
    assert not (tmp_path / "out").exists()  # refused before any run


def test_track_without_wandb(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    bad_input(capsys, ["train", "CartPole-v1", "--run-dir", tmp_path / "run", *TINY, "--track"],
              "--track (Weights & Biases) needs the wandb package", "pip install 'ppokit[wandb]'")
    assert not (tmp_path / "run").exists()  # refused before any work
    with pytest.raises(ConfigError, match=r"ppokit\[wandb\]"):
        ppokit.train("CartPole-v1", total_steps=64, run_dir=tmp_path / "run", track=True)


def test_track_project_name_is_checked(capsys, tmp_path: Path) -> None:
    bad_input(capsys, ["train", "CartPole-v1", "--run-dir", tmp_path / "run", *TINY, "--track", "a/b"],
              "--track 'a/b': expected a W&B project name")


# ---------------------------------------------------------------------------- W&B, offline


class FakeWandb:
    """Stands in for the ``wandb`` module: records what ppokit hands to W&B's public API."""

    def __init__(self) -> None:
        self.init_kwargs: dict = {}
        self.rows: list[tuple[int, dict]] = []
        self.summary: dict = {}
        self.exit_code: int | None = None
        self.url, self.dir = None, "."

    def Settings(self, **kwargs):  # noqa: N802  (wandb's name)
        return kwargs

    def init(self, **kwargs):
        self.init_kwargs = kwargs
        return self

    def log(self, scalars: dict, step: int) -> None:
        self.rows.append((step, dict(scalars)))

    def finish(self, exit_code: int) -> None:
        self.exit_code = exit_code


def test_track_logs_config_rows_evaluations_and_summary(monkeypatch, tmp_path: Path) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert train_tiny(tmp_path / "run", "--track", "ppokit-test", "--set", "eval.every_steps=64",
                      "--set", "eval.episodes=1", total_steps=96) == 0
    init = fake.init_kwargs
    assert (init["project"], init["name"], init["group"]) == ("ppokit-test", "run", "CartPole-v1")
    assert init["config"]["env_id"] == "CartPole-v1" and init["dir"] == str(tmp_path / "run")
    assert [step for step, _ in fake.rows] == [32, 64, 96]  # keyed by global_step, one row per iteration
    assert all("train/policy_loss" in row and "rollout/episodic_return_mean" in row for _, row in fake.rows)
    assert [("eval/return_mean" in row) for _, row in fake.rows] == [False, True, True]  # every 64 steps, and the last
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert fake.summary == summary and fake.exit_code == 0


def test_track_offline_with_the_real_wandb(monkeypatch, tmp_path: Path) -> None:
    """The same run through the installed wandb, offline: it accepts what ppokit sends and writes
    one run file that holds the project and the logged keys."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    assert train_tiny(tmp_path / "run", "--track", "ppokit-test", "--set", "eval.every_steps=64",
                      "--set", "eval.episodes=1", total_steps=96) == 0
    files = list((tmp_path / "wandb_dir").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, "one offline run folder"
    data = files[0].read_bytes()
    for text in (b"ppokit-test", b"CartPole-v1", b"train/policy_loss", b"eval/return_mean", b"total_steps"):
        assert text in data, text
