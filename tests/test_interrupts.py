"""Ctrl-C, SIGTERM and kill -9: the run is saved (or its last checkpoint is intact) and resumes.

- first Ctrl-C / SIGTERM: finish the iteration, save checkpoints/latest, summary "interrupted", exit 130;
- a second one: abandon the iteration at once, keep the last checkpoint;
- kill -9 at any moment: checkpoints/latest is complete (atomic write), ``--resume`` finishes the run.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

import ppokit
import ppokit.checkpoint as checkpoint
import ppokit.loop
import ppokit.training_state
from tests.errors_support import BATCH, PYTHON, TINY, run_cli, subprocess_env, summary, train_tiny


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def signal_during(monkeypatch, iteration: int, *signals: int) -> None:
    """Send ``signals`` to this process while collecting the rollout of ``iteration`` (1-based)."""
    real_collect = ppokit.loop.collect
    calls = {"n": 0}

    def collect(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == iteration:
            for signum in signals:
                os.kill(os.getpid(), signum)
        return real_collect(*args, **kwargs)

    monkeypatch.setattr(ppokit.loop, "collect", collect)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_iteration_saves_and_resumes(capsys, monkeypatch, tmp_path: Path, signum: int) -> None:
    run = tmp_path / "run"
    signal_during(monkeypatch, 3, signum)
    capsys.readouterr()
    assert train_tiny(run, total_steps=8 * BATCH) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "stopping after this iteration" in err and f"--resume {run}" in err
    assert summary(run)["status"] == "interrupted"
    assert summary(run)["checkpoint_step"] == 3 * BATCH
    assert ppokit.load(run).global_step == 3 * BATCH, "the interrupted iteration was finished and saved"
    assert [int(r["global_step"]) for r in rows(run)] == [BATCH, 2 * BATCH, 3 * BATCH]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handlers are restored"

    monkeypatch.undo()
    code, _, _ = run_cli(capsys, ["train", "CartPole-v1", "--resume", run, "--quiet"])
    assert code == 0
    assert summary(run)["status"] == "completed"
    assert [int(r["global_step"]) for r in rows(run)] == [BATCH * i for i in range(1, 9)]


def test_second_signal_abandons_the_iteration(capsys, monkeypatch, tmp_path: Path) -> None:
    run = tmp_path / "run"
    signal_during(monkeypatch, 3, signal.SIGINT, signal.SIGINT)
    assert train_tiny(run, "--set", "checkpoint_every=1", total_steps=8 * BATCH) == 130
    assert summary(run)["status"] == "interrupted"
    assert summary(run)["checkpoint_step"] == 2 * BATCH
    assert ppokit.load(run).global_step == 2 * BATCH, "the half-done iteration is not saved"
    monkeypatch.undo()
    code, _, _ = run_cli(capsys, ["train", "CartPole-v1", "--resume", run, "--quiet"])
    assert code == 0 and summary(run)["total_steps"] == 8 * BATCH


def test_signal_before_any_checkpoint_of_an_abandoned_first_iteration(capsys, monkeypatch, tmp_path: Path) -> None:
    run = tmp_path / "run"
    signal_during(monkeypatch, 1, signal.SIGTERM, signal.SIGTERM)
    capsys.readouterr()
    assert train_tiny(run) == 130
    assert "no checkpoint was saved" in capsys.readouterr().err
    assert summary(run)["status"] == "interrupted" and summary(run)["checkpoint_step"] is None


@pytest.mark.parametrize(("every", "interval", "expected"), [(2, 1e9, [2, 4, 6, 8]), (None, 0.0, list(range(1, 9))),
                                                              (None, 1e9, [8])])
def test_checkpoint_every_and_interval(monkeypatch, tmp_path: Path, every, interval, expected) -> None:
    saved_steps = []
    real_save = checkpoint.save_agent

    def save_agent(path, agent, cfg, global_step, *args, **kwargs):
        if Path(path).name == "latest":
            saved_steps.append(global_step // BATCH)
        return real_save(path, agent, cfg, global_step, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_agent", save_agent)
    extra = ["--set", f"checkpoint_interval_s={interval}"]
    if every is not None:
        extra += ["--set", f"checkpoint_every={every}"]
    assert train_tiny(tmp_path / "run", *extra, total_steps=8 * BATCH) == 0
    assert saved_steps == expected


# ---------------------------------------------------------------------------- real processes


def start(run: Path, total_iterations: int, *extra: str, env: str = "CartPole-v1") -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-m", "ppokit", "train", env, "--run-dir", str(run), "--total-steps", str(total_iterations * BATCH),
         *TINY, *extra],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_rows(process: subprocess.Popen, run: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if (run / "metrics.csv").exists() and len(rows(run)) >= count:
            return
        time.sleep(0.02)
    process.kill()
    raise AssertionError("the training did not get going")


def test_sigterm_subprocess_exits_130_with_summary(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = start(run, 1000)
    wait_for_rows(process, run, 2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert summary(run)["status"] == "interrupted"
    done = summary(run)["total_steps"]
    assert ppokit.load(run).global_step == done == int(rows(run)[-1]["global_step"])


def test_ctrl_c_to_the_process_group_with_async_envs(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the AsyncVectorEnv workers too: they must leave it to the parent."""
    run = tmp_path / "run"
    process = start(run, 1000, "--set", "env.vector=async")
    wait_for_rows(process, run, 2)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert summary(run)["status"] == "interrupted", summary(run).get("error")
    assert "Traceback" not in err


def test_kill_9_mid_run_then_resume_to_completion(tmp_path: Path) -> None:
    run = tmp_path / "run"
    total = 30
    process = start(run, total, "--set", "checkpoint_every=1")
    wait_for_rows(process, run, 4)
    time.sleep(0.013)  # somewhere inside an iteration, maybe inside a checkpoint write
    process.kill()
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()

    agent = ppokit.load(run)  # complete and loadable, whatever moment the kill hit
    assert agent.global_step >= 3 * BATCH

    assert ppokit.cli.main(["train", "CartPole-v1", "--resume", str(run), "--quiet"]) == 0  # in-process: faster
    assert summary(run)["status"] == "completed"
    assert summary(run)["total_steps"] == total * BATCH
    steps = [int(r["global_step"]) for r in rows(run)]
    assert steps == [BATCH * i for i in range(1, total + 1)], "no duplicate or missing metrics rows"
    assert not list((run / "checkpoints").glob(".*")), "no temporary or old checkpoint folder left behind"


# ---------------------------------------------------------------------------- atomic writes


class Crash(BaseException):
    """Stands for kill -9: once raised, every later file operation fails too (nothing cleans up)."""


def crash_after(monkeypatch, operations: int) -> None:
    """Make the ``operations``-th file operation of checkpoint.write (and all later ones) crash."""
    state = {"left": operations, "dead": False}

    def guarded(real):
        def wrapper(*args, **kwargs):
            state["left"] -= 1
            if state["dead"] or state["left"] < 0:
                state["dead"] = True
                raise Crash()
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(safetensors.torch, "save_file", guarded(safetensors.torch.save_file))
    for name in ("replace", "fsync"):
        monkeypatch.setattr(os, name, guarded(getattr(os, name)))
    monkeypatch.setattr(shutil, "rmtree", guarded(shutil.rmtree))
    monkeypatch.setattr(checkpoint, "_fsync_dir", guarded(checkpoint._fsync_dir))


@pytest.mark.parametrize("start_from", ["latest", "old only"])
def test_a_crash_at_any_point_of_a_write_leaves_a_complete_checkpoint(monkeypatch, tmp_path: Path,
                                                                      start_from: str) -> None:
    def tensors(value: float) -> dict[str, torch.Tensor]:
        return {"w": torch.full((64,), value)}

    def meta(step: int) -> dict:
        return {"env_id": "CartPole-v1", "config": {}, "observation_space": {}, "action_space": {}, "step": step}

    for operations in range(12):
        run = tmp_path / f"run{start_from[:3]}{operations}"
        latest = run / "checkpoints" / "latest"
        checkpoint.write(latest, tensors(1.0), meta(1))
        if start_from == "old only":  # a previous writer was killed between its two renames
            os.replace(latest, latest.with_name(".latest.old"))
        crash_after(monkeypatch, operations)
        try:
            checkpoint.write(latest, tensors(2.0), meta(2))
            crashed = False
        except Crash:
            crashed = True
        monkeypatch.undo()
        folder = checkpoint.resolve(run)
        loaded, saved, _ = checkpoint.read(folder) if (folder / "meta.json").exists() else (None, None, None)
        assert saved is not None, f"no complete checkpoint after a crash at operation {operations}"
        assert saved["step"] in (1, 2) and float(loaded["w"][0]) == saved["step"]
        if not crashed:
            assert saved["step"] == 2
        checkpoint.write(latest, tensors(3.0), meta(3))  # the next write recovers
        assert checkpoint.read(run)[1]["step"] == 3
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest"]


def test_metrics_rows_after_the_checkpoint_are_dropped_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("global_step,x\n32,a\n64,b\n96,c\n128,d")  # the last row was cut short by a kill
    ppokit.training_state.truncate_metrics(path, 64)
    assert path.read_text() == "global_step,x\n32,a\n64,b\n"
    ppokit.training_state.truncate_metrics(path, 1000)
    assert path.read_text() == "global_step,x\n32,a\n64,b\n"


def test_checkpoint_overhead_is_small(tmp_path: Path) -> None:
    """One checkpoint of a default CartPole agent costs far less than 2% of the default 30 s interval."""
    run = tmp_path / "run"
    assert train_tiny(run) == 0
    tensors, meta, _ = checkpoint.read(run)
    meta = {k: v for k, v in meta.items() if k not in ("format_version", "model_sha256")}
    started = time.perf_counter()
    for _ in range(10):
        checkpoint.write(run / "checkpoints" / "latest", tensors, meta)
    per_save = (time.perf_counter() - started) / 10
    assert per_save < 0.02 * 30.0, per_save
