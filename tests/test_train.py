"""The training loop: exact resume (2 x 8 iterations == 16), run folder, interruption, failure."""

from __future__ import annotations

import csv
import importlib
import json
import math

import numpy as np
import pytest
import safetensors.torch
import torch

from ppokit.cli import main
from ppokit.config import ConfigError, from_dict, load_yaml
from ppokit.metrics import CSV_COLUMNS
from ppokit.run import Interrupted, TrainingFailed, train
from tests.helpers import COUNTER_ID, GLOBAL_RANDOM_ID, small_config

loop_module = importlib.import_module("ppokit.loop")

SMALL = ["--set", "rollout.num_envs=2", "--set", "rollout.num_steps=32", "--set", "ppo.minibatch_size=32",
         "--set", "ppo.update_epochs=2", "--set", "model.hidden_sizes=[16, 16]", "--set", "eval_episodes=0",
         "--set", "ppo.anneal_lr=false", "--set", "ppo.anneal_clip=false", "--device", "cpu", "--quiet"]
BATCH = 64
SKIPPED_COLUMNS = {"wall_time_s", "sps"}


def read_metrics(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def compared_columns(rows):
    # eval_*: the split run also evaluates at the end of its first session (its last iteration then)
    return [c for c in rows[0] if c not in SKIPPED_COLUMNS and not c.startswith(("time_", "eval_"))]


def all_tensors(run_dir) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run_dir / "checkpoints" / "latest" / "model.safetensors"))


@pytest.mark.parametrize("env_id, extra", [
    ("CartPole-v1", []),  # gymnasium's vector CartPole: NEXT_STEP autoreset
    ("Pendulum-v1", ["--set", "env.normalize_obs=true", "--set", "env.normalize_reward=true"]),  # sync, SAME_STEP
])
def test_resume_equals_one_long_run(tmp_path, env_id, extra):
    split, whole = tmp_path / "split", tmp_path / "whole"
    assert main(["train", env_id, "--run-dir", str(split), "--total-steps", str(8 * BATCH), *SMALL, *extra]) == 0
    first_half = all_tensors(split)
    assert main(["train", env_id, "--resume", str(split), "--total-steps", str(16 * BATCH), "--quiet"]) == 0
    assert main(["train", env_id, "--run-dir", str(whole), "--total-steps", str(16 * BATCH), *SMALL, *extra]) == 0

    rows_split, rows_whole = read_metrics(split), read_metrics(whole)
    assert len(rows_split) == len(rows_whole) == 16
    columns = compared_columns(rows_whole)
    assert {"policy_loss", "value_loss", "episodic_return_mean", "approx_kl"} <= set(columns)
    for i, (a, b) in enumerate(zip(rows_split, rows_whole)):
        for column in columns:
            assert a[column] == b[column], f"iteration {i + 1}, {column}: {a[column]} != {b[column]}"
    assert any(row["episodes"] not in ("", "0") for row in rows_whole)

    tensors_split, tensors_whole = all_tensors(split), all_tensors(whole)
    assert tensors_split.keys() == tensors_whole.keys()
    for key in tensors_whole:
        assert torch.equal(tensors_split[key], tensors_whole[key]), key
    assert not torch.equal(first_half["agent.value_head.weight"], tensors_whole["agent.value_head.weight"])
    if "normalize_obs=true" in extra:
        assert float(tensors_whole["agent.obs_normalizer.count"]) == 16 * BATCH
    summary = json.loads((split / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 16 * BATCH
    # The resumed run's speed and time split agree with its own step count and wall time (both
    # sessions): not the second session's steps over the whole run's time, or the reverse.
    assert summary["sps"] == pytest.approx(summary["total_steps"] / summary["wall_time_s"])
    split_sum = sum(summary[f"time_{part}_s"] for part in ("env", "inference", "update", "other"))
    assert split_sum == pytest.approx(summary["wall_time_s"])
    assert summary["time_env_s"] > float(rows_split[7]["time_env_s"]) > 0, "the first session's time is kept"
    for row in rows_split:
        assert float(row["sps"]) == pytest.approx(int(row["global_step"]) / float(row["wall_time_s"]), rel=1e-6)


def test_resume_continues_numpy_global_rng(tmp_path):
    """An env drawing from numpy's global RNG sees the same numbers after a resume."""
    cfg = small_config(GLOBAL_RANDOM_ID, env={"vector": "sync"}, ppo={"anneal_lr": False})
    cfg.total_steps = 2 * cfg.batch_size
    train(cfg, run_dir=tmp_path / "split", quiet=True)
    np.random.seed(12345)  # whatever happens in between must not matter
    cfg.total_steps = 4 * cfg.batch_size
    train(cfg, resume=tmp_path / "split", quiet=True)
    train(cfg, run_dir=tmp_path / "whole", quiet=True)
    returns = [[row["episodic_return_mean"] for row in read_metrics(tmp_path / name)] for name in ("split", "whole")]
    assert returns[0] == returns[1]


def test_run_folder_contents(tmp_path):
    cfg = small_config(COUNTER_ID, env={"vector": "sync"})
    cfg.eval_episodes = 3
    cfg.solved_threshold = 15.0  # every 5-step counter episode returns 15: solved once 20 have finished
    cfg.total_steps = 6 * cfg.batch_size
    result = train(cfg, run_dir=tmp_path / "run", quiet=True)
    run = result.run_dir
    rows = read_metrics(run)
    assert list(rows[0])[: len(CSV_COLUMNS)] == CSV_COLUMNS
    assert [int(r["global_step"]) for r in rows] == [32 * i for i in range(1, 7)]
    assert float(rows[-1]["learning_rate"]) < float(rows[0]["learning_rate"])  # annealed
    assert list(run.glob("events.out.tfevents.*"))
    assert from_dict(load_yaml(run / "config.yaml")) == cfg
    summary = json.loads((run / "summary.json").read_text())
    for key in ("status", "env_id", "algo", "seed", "total_steps", "wall_time_s", "sps", "train_return_last20",
                "eval_return_mean", "eval_return_std", "eval_episodes", "solved_threshold", "solved_at_step",
                "solved_at_time_s", "versions"):
        assert key in summary, key
    assert summary["status"] == "completed" and summary["total_steps"] == 6 * 32
    assert summary["eval_episodes"] == 3 and summary["eval_return_mean"] == 15.0 and summary["eval_return_std"] == 0
    # 2 envs finish 2 * floor(16 t / 5) episodes in t iterations: 18 after 3, 24 after 4.
    assert summary["solved_at_step"] == 4 * 32
    assert [int(r["episodes"]) for r in rows] == [6, 6, 6, 6, 8, 6]
    assert summary["train_return_last20"] == 15.0 and rows[-1]["episodic_length_mean"] == "5.0"
    assert summary["train_return_last100"] == 15.0  # 38 episodes so far: all of them
    assert set(summary["versions"]) >= {"ppokit", "torch", "gymnasium", "python"}
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, run_dir=run, quiet=True)


def test_interrupt_saves_and_resumes(tmp_path, monkeypatch):
    cfg = small_config(COUNTER_ID, env={"vector": "sync"})
    cfg.total_steps = 5 * cfg.batch_size
    cfg.checkpoint_every = 1  # an exception inside collect abandons that iteration: resume from the last save
    calls = {"n": 0}
    original = loop_module.collect

    def interrupt_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(loop_module, "collect", interrupt_on_third)
    with pytest.raises(Interrupted):
        train(cfg, run_dir=tmp_path / "run", quiet=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["total_steps"] == 2 * cfg.batch_size
    meta = json.loads((tmp_path / "run" / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["training"]["iteration"] == 2
    monkeypatch.setattr(loop_module, "collect", original)
    result = train(cfg, resume=tmp_path / "run", quiet=True)
    assert result.summary["status"] == "completed" and result.summary["total_steps"] == 5 * cfg.batch_size
    assert len(read_metrics(tmp_path / "run")) == 5
    # The counter env pays 1 + 2 + ... + 5 per 5-step episode, across the interruption too.
    assert result.summary["train_return_last20"] == pytest.approx(15.0)


def test_non_finite_reward_fails_with_summary(tmp_path):
    cfg = small_config(COUNTER_ID, env={"vector": "sync", "kwargs": {"reward": math.nan}})
    with pytest.raises(TrainingFailed, match="non-finite reward"):
        train(cfg, run_dir=tmp_path / "run", quiet=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite" in summary["error"]


def test_seeds_make_runs_reproducible_and_distinct(tmp_path):
    def final_weights(seed, name):
        cfg = small_config("CartPole-v1")
        cfg.seed = seed
        agent = train(cfg, run_dir=tmp_path / name, quiet=True).agent
        return torch.cat([p.detach().reshape(-1) for p in agent.parameters()])

    a, b, c = final_weights(0, "a"), final_weights(0, "b"), final_weights(1, "c")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert np.isfinite(a.numpy()).all()


@pytest.mark.parametrize("quiet", [True, False])
def test_device_line_only_without_quiet(tmp_path, capsys, quiet):
    args = ["train", "CartPole-v1", "--run-dir", str(tmp_path / "run"), "--total-steps", str(BATCH), *SMALL]
    if not quiet:
        args.remove("--quiet")
    assert main(args) == 0  # the CLI prints the ppokit logger's records itself (it does not propagate)
    assert any(line.startswith("ppokit: device cpu") for line in capsys.readouterr().err.splitlines()) is not quiet
