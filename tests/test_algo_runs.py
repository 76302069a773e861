"""PPO-KL, TRPO and VPG end to end: from the CLI, exact resume, and (slow) learning with the presets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ppokit.cli import main
from ppokit.presets import build_config
from ppokit.run import train

TIME_COLUMNS = ("wall_time_s", "sps")


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # eval_*: the split run also evaluates at the end of its first session (its last iteration then)
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS and not k.startswith(("time_", "eval_"))}
            for row in rows]


# Tiny runs: 2 envs x 64 steps per iteration, no evaluation.
TINY = ["--num-envs", "2", "--quiet", "--set", "rollout.num_steps=64", "--set", "eval_episodes=0"]
ALGO_SETTINGS = {
    "ppo-kl": ["--set", "ppo_kl.anneal_lr=false", "--set", "ppo_kl.update_epochs=2",
               "--set", "ppo_kl.minibatch_size=32", "--set", "ppo_kl.kl_target=0.001"],
    "trpo": ["--set", "trpo.value_epochs=2", "--set", "trpo.max_kl=0.05", "--set", "trpo.value_minibatch_size=64"],
    "vpg": ["--set", "vpg.value_epochs=2", "--set", "vpg.anneal_lr=false", "--set", "vpg.value_minibatch_size=64"],
}


@pytest.mark.parametrize("algo, env_id, extra", [
    ("ppo-kl", "CartPole-v1", []), ("ppo-kl", "Pendulum-v1", []),
    ("trpo", "CartPole-v1", []), ("trpo", "Pendulum-v1", []),
    ("vpg", "CartPole-v1", []), ("vpg", "CartPole-v1", ["--set", "vpg.baseline=none"]),
])
def test_cli_train_then_resume_equals_one_run(tmp_path, algo, env_id, extra):
    """2 runs of N iterations (the second resumed with a larger --total-steps) = 1 run of 2N,
    metric for metric: the algorithm's state (beta, optimizers) is all in the checkpoint."""
    per_iteration = 2 * 64
    args = ["train", env_id, "--algo", algo, "--seed", "3", *TINY, *ALGO_SETTINGS[algo], *extra]
    split, whole = tmp_path / "split", tmp_path / "whole"
    assert main([*args, "--total-steps", str(3 * per_iteration), "--run-dir", str(split)]) == 0
    assert main(["train", env_id, "--resume", str(split), "--total-steps", str(6 * per_iteration), "--quiet"]) == 0
    assert main([*args, "--total-steps", str(6 * per_iteration), "--run-dir", str(whole)]) == 0
    resumed, straight = metric_rows(split), metric_rows(whole)
    assert len(straight) == 6
    assert resumed == straight
    if algo == "ppo-kl":  # beta moved, so resuming it from the checkpoint mattered
        assert len({row["beta"] for row in straight}) > 1
    if algo == "trpo":
        assert all(row["line_search_accepted"] in ("0.0", "1.0") for row in straight)
    summary = json.loads((split / "summary.json").read_text())
    assert summary["algo"] == algo and summary["status"] == "completed"


# ---------------------------------------------------------------------------- learning (slow)


def run_preset(tmp_path: Path, env_id: str, algo: str, seed: int, total_steps: int | None = None) -> dict:
    cfg = build_config(env_id, algo=algo, overrides={"seed": seed, "total_steps": total_steps})
    assert cfg.preset == f"{env_id}__{algo}"
    return train(cfg, run_dir=tmp_path / f"{env_id}-{algo}-{seed}", quiet=True).summary


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("algo, budget", [("ppo-kl", 150_000), ("trpo", 300_000), ("vpg", 500_000)])
def test_solves_cartpole(tmp_path, algo, budget, seed):
    summary = run_preset(tmp_path, "CartPole-v1", algo, seed)
    assert summary["total_steps"] <= budget
    assert summary["eval_return_mean"] >= 475, summary


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo-kl", "trpo"])
def test_pendulum(tmp_path, algo):
    summary = run_preset(tmp_path, "Pendulum-v1", algo, seed=1)
    assert summary["total_steps"] <= 500_000
    assert summary["eval_return_mean"] >= -400, summary
