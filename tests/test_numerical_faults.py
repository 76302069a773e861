"""NaN / infinity and failing envs stop training with a message naming where and when.

Exit code 1, summary.json status "failed" with the error, the last good checkpoint kept and
loadable (nothing written after the fault). Toy envs (errors_support.ToyEnv) misbehave in sub-env 1
once it has taken ``at`` steps: with 2 envs x 16 steps per iteration, step 40 falls in iteration 3.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ppokit
import ppokit.loop
import ppokit.training_state
from ppokit.algos import ALGOS
from tests.errors_support import BATCH, TOY, run_cli, summary


def train_toy(capsys, run: Path, fault: str, *extra: str, at: int = 40) -> str:
    """Train the toy env with ``fault``; assert the failure contract; return the one failure line."""
    code, _, lines = run_cli(capsys, [
        "train", TOY, "--run-dir", run, "--total-steps", 8 * BATCH, "--num-envs", "2",
        "--set", "rollout.num_steps=16", "--set", "ppo.minibatch_size=32", "--set", "ppo.update_epochs=1",
        "--set", "eval_episodes=0", "--set", "checkpoint_every=1", "--quiet",
        "--set", f"env.kwargs={{fault: {fault}, at: {at}, sub_env: 1}}", *extra])
    assert code == 1, lines
    failures = [line for line in lines if line.startswith("ppokit: training failed:")]
    assert len(failures) == 1, lines
    s = summary(run)
    assert s["status"] == "failed"
    assert s["error"] in failures[0]
    kept = ppokit.load(run)  # the last good checkpoint is complete and loadable
    assert kept.global_step == s["checkpoint_step"] == 2 * BATCH, "nothing was saved after the fault"
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    assert f"the last good checkpoint (step {2 * BATCH}) is kept" in failures[0]
    return failures[0]


@pytest.mark.parametrize(("fault", "at", "expected"), [
    ("inf_obs", 42, f"env '{TOY}' sub-env 1 returned a non-finite observation (inf) at rollout step 9 of iteration 3"),
    ("nan_obs", 40, f"env '{TOY}' sub-env 1 returned a non-finite final observation (at a time-limit truncation) "
                    "at rollout step 7 of iteration 3"),
    ("nan_obs", 48, f"env '{TOY}' sub-env 1 returned a non-finite observation at the last rollout step of "
                    "iteration 3"),
    ("inf_reward", 40, f"env '{TOY}' sub-env 1 returned a non-finite reward (inf) at rollout step 7 of iteration 3"),
    ("nan_reward", 41, f"env '{TOY}' sub-env 1 returned a non-finite reward (nan) at rollout step 8 of iteration 3"),
    ("huge_reward", 40, "non-finite value loss (value_loss = inf) in the update of iteration 3"),
])
def test_non_finite_observation_or_reward(capsys, tmp_path: Path, fault: str, at: int, expected: str) -> None:
    assert expected in train_toy(capsys, tmp_path / "run", fault, at=at)


def test_non_finite_reward_with_reward_normalization(capsys, tmp_path: Path) -> None:
    line = train_toy(capsys, tmp_path / "run", "inf_reward", "--set", "env.normalize_reward=true")
    assert f"env '{TOY}' sub-env 1 returned a non-finite reward during iteration 3" in line


def fault_in_update(monkeypatch, iteration: int, fault) -> None:
    """Make the update of ``iteration`` (1-based) misbehave: ``fault(agent, stats)``."""
    real = ALGOS["ppo"].make.update
    calls = {"n": 0}

    def update(self, batch, progress):
        stats = real(self, batch, progress)
        calls["n"] += 1
        if calls["n"] == iteration:
            fault(self, stats)
        return stats

    monkeypatch.setattr(ALGOS["ppo"].make, "update", update)


def test_non_finite_gradients(capsys, monkeypatch, tmp_path: Path) -> None:
    fault_in_update(monkeypatch, 3, lambda algo, stats: stats.update(grad_norm=float("nan")))
    line = train_toy(capsys, tmp_path / "run", "none")
    assert "non-finite gradient norm (the gradients) (grad_norm = nan) in the update of iteration 3" in line


def test_non_finite_loss(capsys, monkeypatch, tmp_path: Path) -> None:
    fault_in_update(monkeypatch, 3, lambda algo, stats: stats.update(policy_loss=float("nan")))
    assert "non-finite policy loss (policy_loss = nan) in the update of iteration 3" in train_toy(
        capsys, tmp_path / "run", "none")


def test_non_finite_parameters(capsys, monkeypatch, tmp_path: Path) -> None:
    def poison(algo, stats):
        with torch.no_grad():
            algo.gradient_step.agent.value_head.bias.fill_(float("inf"))

    fault_in_update(monkeypatch, 3, poison)
    line = train_toy(capsys, tmp_path / "run", "none")
    assert "parameter value_head.bias became non-finite in the update of iteration 3" in line


@pytest.mark.parametrize("vector", ["sync", "async"])
@pytest.mark.parametrize(("fault", "where", "message"), [("step_raise", "step", "toy env broke in step"),
                                                           ("reset_raise", "reset", "toy env broke in reset")])
def test_env_that_raises(capsys, tmp_path: Path, vector: str, fault: str, where: str, message: str) -> None:
    line = train_toy(capsys, tmp_path / "run", fault, "--set", f"env.vector={vector}")
    assert f"env '{TOY}' sub-env 1 raised in {where}: RuntimeError: {message} (iteration 3)" in line
    assert line.count("sub-env") == 1, "the message is not wrapped twice"


def test_failed_run_cannot_be_mistaken_for_a_finished_one(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_toy(capsys, run, "nan_obs")
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2, "no metrics row for the failed iteration"
    assert json.loads((run / "summary.json").read_text())["total_steps"] == 2 * BATCH


def test_env_that_raises_during_eval(capsys, tmp_path: Path) -> None:
    """ppokit eval: a failing env is exit code 1 and one line naming it (no traceback)."""
    run = tmp_path / "run"
    code, _, _ = run_cli(capsys, ["train", TOY, "--run-dir", run, "--total-steps", BATCH, "--num-envs", "2",
                                  "--set", "rollout.num_steps=16", "--set", "ppo.minibatch_size=32",
                                  "--set", "eval_episodes=0", "--quiet", "--set", "env.kwargs={fault: step_raise, "
                                  "at: 1000000, sub_env: null}"])
    assert code == 0
    meta_file = run / "checkpoints" / "latest" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["config"]["env"]["kwargs"]["at"] = 3
    meta_file.write_text(json.dumps(meta))
    code, _, lines = run_cli(capsys, ["eval", run, "--episodes", "1"])
    assert code == 1
    assert lines == [f"ppokit: failed: env '{TOY}' raised in step: RuntimeError: toy env broke in step"]
