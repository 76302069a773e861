"""Training over 2 processes (torchrun, gloo on loopback) takes the steps one process would."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ppokit.algos import ALGOS


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "ppokit", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("algo", ["ppo", "ppo-kl"])
def test_minibatch_size_is_global_over_processes(tmp_path: Path, algo: str) -> None:
    """ppo.minibatch_size / ppo_kl.minibatch_size count samples over all processes: two processes
    with 2 envs each take as many (half as large) steps per epoch as one process with 4 envs."""
    section = ALGOS[algo].section
    epochs, minibatch, batch = 2, 16, 4 * 16
    run = tmp_path / "run"
    result = torchrun(["train", "CartPole-v1", "--algo", algo, "--num-envs", "4", "--total-steps", str(2 * batch),
                       "--run-dir", str(run), "--quiet", "--set", "rollout.num_steps=16",
                       "--set", f"{section}.minibatch_size={minibatch}", "--set", f"{section}.update_epochs={epochs}",
                       "--set", "eval_episodes=0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert [float(row["grad_steps"]) for row in rows] == [epochs * batch / minibatch] * 2
