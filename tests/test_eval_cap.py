"""Evaluations end: an episode the env does not end is stopped at a step cap, and that is reported.

CliffWalking-v1 has no time limit, and a deterministic policy that walks into a wall never ends an
episode: the final evaluation after training, ``ppokit eval`` and ``ppokit record`` must all end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppokit.evaluate import DEFAULT_STEP_CAP, evaluate
from tests.errors_support import PYTHON, TINY, run_cli, subprocess_env, summary

CLIFF = "CliffWalking-v1"


class Stuck:
    """An agent that always pushes into the top-left corner's wall (action 3: left)."""

    def __init__(self, agent):
        self.inner = agent

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def act(self, obs, deterministic=True):
        return np.full(len(obs), 3) if np.ndim(obs) else 3  # one action per observation (Discrete obs: ints)


@pytest.fixture(scope="module")
def cliff_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("cliff") / "run"
    # A real process with a hang guard: before the cap, its final evaluation never ended.
    result = subprocess.run([PYTHON, "-m", "ppokit", "train", CLIFF, "--run-dir", str(run), "--total-steps", "32",
                             *TINY[:-3], "--set", "eval_episodes=2", "--set", "eval_max_episode_steps=300",
                             "--quiet"], env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    return run


def test_the_final_evaluation_of_an_env_without_time_limit_ends(cliff_run: Path) -> None:
    data = summary(cliff_run)
    assert data["status"] == "completed" and data["eval_episodes"] == 2
    assert 0 <= data["eval_capped_episodes"] <= 2


def test_eval_is_capped_and_says_so(capsys, cliff_run: Path, monkeypatch) -> None:
    module = sys.modules["ppokit.evaluate"]  # (the attribute ppokit.evaluate is the API function)
    real = module.evaluate

    def stuck_evaluate(agent, *args, **kwargs):
        return real(Stuck(agent), *args, **kwargs)

    monkeypatch.setattr(module, "evaluate", stuck_evaluate)
    code, out, err = run_cli(capsys, ["eval", cliff_run, "--episodes", "2", "--max-episode-steps", "50", "--json"])
    assert code == 0
    result = json.loads(out)
    assert result["lengths"] == [50, 50] and result["capped_episodes"] == 2 and result["step_cap"] == 50
    assert len(err) == 1 and "2 of 2 evaluation episodes" in err[0] and "step cap of 50 steps" in err[0]


def test_evaluate_caps_by_default(cliff_run: Path) -> None:
    import ppokit

    agent = Stuck(ppokit.load(cliff_run))
    result = evaluate(agent, CLIFF, episodes=1, step_cap=200)
    assert result["lengths"] == [200] and result["capped_episodes"] == 1
    assert DEFAULT_STEP_CAP == 27_000


def test_record_is_capped(capsys, cliff_run: Path, tmp_path: Path, monkeypatch) -> None:
    import ppokit.agent

    real = ppokit.agent.load_agent
    monkeypatch.setattr(ppokit.agent, "load_agent", lambda *a, **k: (Stuck(real(*a, **k)[0]), *real(*a, **k)[1:]))
    code, out, err = run_cli(capsys, ["record", cliff_run, "--out", tmp_path / "r.gif", "--max-episode-steps", "20"])
    assert code == 0 and "(21 frames)" in out
    assert any("step cap of 20 steps" in line for line in err)
