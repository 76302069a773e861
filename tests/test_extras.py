"""Optional packages: training needs none of them, and a feature whose extra is missing says the
pip command in one line (CLI: exit 2; Python: ConfigError). W&B tracking, tested offline."""

from __future__ import annotations

import struct
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


def wandb_records(path: Path):
    """The records of an offline W&B run file (LevelDB log format: 32 KiB blocks of chunks, each
    ``crc32 (4) | length (2) | type (1) | data``; types 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, position, pending, block = path.read_bytes(), 7, b"", 32768  # 7: the file's W&B header
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _items(updates) -> dict[str, str]:
    return {item.key or "/".join(item.nested_key): item.value_json for item in updates}


def test_track_offline_logs_config_rows_evaluations_and_summary(capsys, monkeypatch, tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    assert train_tiny(tmp_path / "run", "--track", "ppokit-test", "--set", "eval.every_steps=64",
                      "--set", "eval.episodes=1", total_steps=96) == 0
    files = list((tmp_path / "wandb_dir").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, "one offline run folder"
    records = list(wandb_records(files[0]))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "ppokit-test" and run.display_name == "run" and run.run_group == "CartPole-v1"
    assert _items(run.config.update)["env_id"] == '"CartPole-v1"'
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert [row["_step"] for row in history] == ["32", "64", "96"]  # keyed by global_step, one row per iteration
    assert all("train/policy_loss" in row and "rollout/episodic_return_mean" in row for row in history)
    assert [("eval/return_mean" in row) for row in history] == [False, True, True]  # every 64 steps, and the last
    summary: dict[str, str] = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    assert summary["status"] == '"completed"' and summary["total_steps"] == "96"
