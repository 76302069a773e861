"""The runs of a reproduction: one ordinary run folder each, run by ``ppokit train`` in a subprocess,
``jobs`` at a time; a second call skips finished runs and resumes interrupted ones.

Layout inside the reproduction folder ``OUT``::

    OUT/runs/{env}/{setting}/seed{S}/        an ordinary run folder (ppokit eval/plot/train --resume work)
    OUT/runs/{env}/{setting}/seed{S}.log     what that run's ppokit train printed
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppokit.reproduce.table1 import PRESET, Setting


@dataclass(frozen=True)
class Run:
    """One (env, setting, seed) of the table."""

    env_id: str
    setting: Setting
    seed: int
    folder: Path  # its run folder

    @property
    def log(self) -> Path:
        return self.folder.with_name(self.folder.name + ".log")

    @property
    def name(self) -> str:
        return f"{self.env_id} {self.setting.name} seed {self.seed}"


def plan(out: Path, envs: list[str], settings: list[Setting], seeds: int) -> list[Run]:
    """Every run of ``envs x settings x seeds 0..seeds-1``, env by env."""
    return [Run(env_id, setting, seed, out / "runs" / env_id.replace("/", "-") / setting.name / f"seed{seed}")
            for env_id in envs for setting in settings for seed in range(seeds)]


def state(run: Run) -> str:
    """``done`` (summary says completed), ``failed`` (summary says failed: not retried), ``resume``
    (a checkpoint to continue from) or ``fresh`` (nothing usable yet)."""
    try:
        status = json.loads((run.folder / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status in ("completed", "failed"):
        return "done" if status == "completed" else "failed"
    if (run.folder / "checkpoints" / "latest" / "meta.json").is_file():
        return "resume"
    return "fresh"


# Every run of a reproduction: the score is the training return, so no evaluation during training
# (5 episodes every 20,000 steps would add a quarter to a MuJoCo run's env steps). --set may override.
RUN_SETS = ("eval.every_steps=0",)


def command(run: Run, steps: int, sets: list[str]) -> list[str]:
    """The ``ppokit train`` command line that starts or resumes ``run``."""
    train = [sys.executable, "-m", "ppokit", "train"]
    if state(run) == "resume":
        return [*train, "--resume", str(run.folder), "--quiet"]
    overrides = [arg for text in (*RUN_SETS, *run.setting.sets, *sets) for arg in ("--set", text)]
    return [*train, run.env_id, "--preset", PRESET, "--algo", run.setting.algo, *overrides,
            "--seed", str(run.seed), "--total-steps", str(steps), "--run-dir", str(run.folder), "--quiet"]


@dataclass
class Outcome:
    run: Run
    status: str  # done | failed | interrupted
    wall_s: float


def execute(runs: list[Run], steps: int, sets: list[str], jobs: int, say=print) -> list[Outcome]:
    """Start or resume every run that is not finished, ``jobs`` at a time; returns their outcomes.

    A run that left a folder without a checkpoint (stopped in its first seconds) starts again from
    nothing. Ctrl-C or SIGTERM: every running ``ppokit train`` gets one SIGINT, saves its
    checkpoint and stops; then KeyboardInterrupt propagates (the next call resumes them). The runs
    are in sessions of their own, so a Ctrl-C in the terminal reaches them only this way, once (a
    second SIGINT would make them stop without finishing the iteration)."""
    todo = [run for run in runs if state(run) in ("fresh", "resume")]
    running: list[tuple[Run, subprocess.Popen, float]] = []
    outcomes: list[Outcome] = []
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core per run; --jobs decides how many
    previous = _sigterm_interrupts()
    try:
        while todo or running:
            while todo and len(running) < jobs:
                run = todo.pop(0)
                resuming = state(run) == "resume"
                if not resuming and run.folder.exists():
                    shutil.rmtree(run.folder)  # a start that never saved a checkpoint
                run.folder.parent.mkdir(parents=True, exist_ok=True)
                with open(run.log, "a") as log:
                    process = subprocess.Popen(command(run, steps, sets), stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, env=environment, start_new_session=True)
                running.append((run, process, time.monotonic()))
                say(f"{'resumed' if resuming else 'started'} {run.name}")
            for entry in list(running):
                run, process, started = entry
                if process.poll() is None:
                    continue
                running.remove(entry)
                status = {0: "done", 130: "interrupted"}.get(process.returncode, "failed")
                outcomes.append(Outcome(run, status, time.monotonic() - started))
                say(f"[{len(outcomes)}/{len(outcomes) + len(running) + len(todo)}] {run.name}: {status} in "
                    f"{outcomes[-1].wall_s:.0f} s" + ("" if status == "done" else f" (see {run.log})"))
            time.sleep(0.1)
    except KeyboardInterrupt:
        for _, process, _ in running:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # ppokit train saves a checkpoint, then exits
        for _, process, _ in running:
            process.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return outcomes


def _sigterm_interrupts() -> Any:
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does; returns the previous handler (None when
    not on the main thread, where signals cannot be handled)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None
