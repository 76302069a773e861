"""Evaluation during training: when, how, and where the results go.

Every ``eval.every_steps`` environment steps (and after the last iteration) the agent plays
``eval.episodes`` episodes on its own envs, separate from the training envs, deterministically
by default. The episodes start from the same seeds every time, so the curve follows the policy,
not the draw of start states. All episodes are stepped in lockstep: one batched forward pass per
step for all of them, which is what keeps the cost small (docs/evaluation.md has the numbers).

Results go to ``evaluations.csv`` in the run folder, to the iteration's metrics row (so to
metrics.csv and TensorBoard), and to :class:`ppokit.run.Checkpoints`, which keeps the best
agent by them in ``checkpoints/best``. Evaluation draws no random number from the training
streams (the global generators are put back afterwards), so it never changes training.
"""

from __future__ import annotations

import contextlib
import csv
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ppokit.evaluate import DEFAULT_STEP_CAP, play_episodes, report_capped

if TYPE_CHECKING:
    import gymnasium as gym

    from ppokit.agent import Agent
    from ppokit.config import EvalConfig

FILE = "evaluations.csv"
COLUMNS = ["global_step", "wall_time_s", "eval_return_mean", "eval_return_std", "eval_length_mean",
           "eval_episodes", "eval_time_s"]
SEED_OFFSET = 2_000_000  # evaluation env seeds: run seed + this + episode (the final evaluation uses + 1e6)


def is_due(step_before: int, step: int, every_steps: int, last: bool) -> bool:
    """Whether to evaluate after an iteration that went from ``step_before`` to ``step`` env steps:
    when it crossed a multiple of ``every_steps``, or it was the run's ``last`` (0: never).

    A function of the steps alone, so a resumed run keeps the same schedule."""
    if every_steps <= 0:
        return False
    return last or step // every_steps > step_before // every_steps


@dataclass
class Evaluation:
    """One evaluation's result, at ``step`` env steps into the run."""

    step: int
    wall_time_s: float
    returns: list[float]
    lengths: list[int]
    seconds: float  # what the evaluation itself took

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    def row(self) -> dict[str, Any]:
        """The fields an evaluation adds to the metrics row (and its evaluations.csv row)."""
        return {"global_step": self.step, "wall_time_s": self.wall_time_s, "eval_return_mean": self.mean,
                "eval_return_std": float(np.std(self.returns)), "eval_length_mean": float(np.mean(self.lengths)),
                "eval_episodes": len(self.returns), "eval_time_s": self.seconds}


class PeriodicEvaluation:
    """Evaluates an agent on its own envs when :func:`is_due`; appends each result to ``path``.

    ``make_env()`` returns one new env (made like the training envs); the envs are made at the
    first evaluation and kept until :meth:`close`."""

    def __init__(self, settings: EvalConfig, make_env: Callable[[], gym.Env], seed: int, path: Path | None,
                 step_cap: int = DEFAULT_STEP_CAP):
        self.settings, self.make_env, self.path, self.step_cap = settings, make_env, path, step_cap
        self.seeds = [seed + SEED_OFFSET + episode for episode in range(settings.episodes)]
        self.envs: list[gym.Env] = []

    def due(self, step_before: int, step: int, last: bool) -> bool:
        return is_due(step_before, step, self.settings.every_steps, last)

    def run(self, agent: Agent, step: int, wall_time_s: float) -> Evaluation:
        """Evaluate ``agent`` now (``step`` and ``wall_time_s`` say where the run stands)."""
        start = time.perf_counter()
        if not self.envs:
            self.envs = [self.make_env() for _ in self.seeds]
        with global_rngs_kept(next(agent.parameters()).device):
            returns, lengths = play_episodes(agent, self.envs, self.seeds, self.settings.deterministic,
                                             self.step_cap)
        report_capped(sum(length >= self.step_cap for length in lengths), len(lengths), "the evaluation envs",
                      self.step_cap)
        result = Evaluation(step, wall_time_s, returns, lengths, time.perf_counter() - start)
        if self.path is not None:
            append_row(self.path, result.row())
        return result

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


@contextlib.contextmanager
def global_rngs_kept(device: torch.device) -> Iterator[None]:
    """Put torch's, numpy's and Python's global generators back as they were afterwards: sampled
    actions draw from torch's, and some envs draw from numpy's or ``random``'s (training's streams)."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the evaluations file ``path`` (writing the header first if it is new)."""
    new_file = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow(row)


def read_evaluations(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run's evaluations.csv as numbers (``[]`` when it has none)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                rows.append({key: float(value) for key, value in row.items()
                             if key in COLUMNS and value not in ("", None)})
            except ValueError:
                continue  # a row cut short by a kill
    return [row for row in rows
            if "global_step" in row and math.isfinite(row.get("eval_return_mean", math.nan))]
