"""Same config and seed on the CPU -> the same metrics.csv (time columns aside) and the same weights.

And a run interrupted on a checkpoint, then resumed, ends exactly like the uninterrupted run.
See docs/errors.md ("Reproducibility").
"""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import safetensors.torch
import torch

import ppokit.loop
import ppokit.training_state
from tests.errors_support import BATCH, summary, train_tiny

TIME_COLUMNS = {"wall_time_s", "sps"}
ITERATIONS = 6
# Normalizers on, so their statistics are part of what must match.
EXTRA = ("--set", "env.normalize_obs=true", "--set", "env.normalize_reward=true")


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS and not k.startswith("time_")}
                for row in csv.DictReader(handle)]


def weights(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the final checkpoint: agent, normalizers, optimizer state, RNG state."""
    return safetensors.torch.load_file(str(run / "checkpoints" / "latest" / "model.safetensors"))


def assert_same_run(a: Path, b: Path) -> None:
    assert metrics(a) == metrics(b)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"tensors differ: {different}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("repro") / "reference"
    assert train_tiny(run, *EXTRA, total_steps=ITERATIONS * BATCH) == 0
    return run


def test_same_seed_same_metrics_and_weights(reference: Path, tmp_path: Path) -> None:
    assert train_tiny(tmp_path / "again", *EXTRA, total_steps=ITERATIONS * BATCH) == 0
    assert len(metrics(reference)) == ITERATIONS
    assert_same_run(reference, tmp_path / "again")


def test_another_seed_gives_another_run(reference: Path, tmp_path: Path) -> None:
    """The comparison above can fail: a different seed changes metrics and weights."""
    assert train_tiny(tmp_path / "other", *EXTRA, "--seed", "1", total_steps=ITERATIONS * BATCH) == 0
    with pytest.raises(AssertionError):
        assert_same_run(reference, tmp_path / "other")


def test_resume_after_an_interruption_equals_the_uninterrupted_run(reference: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    run = tmp_path / "interrupted"
    real_collect = ppokit.loop.collect
    calls = {"n": 0}

    def collect(*args, **kwargs):  # SIGTERM during iteration 3: it finishes, is saved, the run stops
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_collect(*args, **kwargs)

    monkeypatch.setattr(ppokit.loop, "collect", collect)
    assert train_tiny(run, *EXTRA, total_steps=ITERATIONS * BATCH) == 130
    assert summary(run)["status"] == "interrupted" and summary(run)["total_steps"] == 3 * BATCH
    monkeypatch.undo()
    assert ppokit.cli.main(["train", "CartPole-v1", "--resume", str(run), "--quiet"]) == 0
    assert summary(run)["status"] == "completed"
    assert_same_run(reference, run)


def test_resume_after_a_crash_equals_the_uninterrupted_run(reference: Path, tmp_path: Path, monkeypatch) -> None:
    """A crash (no saving at all, like kill -9) after the checkpoint of iteration 2, during iteration 4:
    the metrics row of iteration 3 is dropped on resume and recomputed identically."""
    run = tmp_path / "crashed"
    real_collect = ppokit.loop.collect
    calls = {"n": 0}

    class Killed(BaseException):
        pass

    def collect(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed()
        return real_collect(*args, **kwargs)

    monkeypatch.setattr(ppokit.loop, "collect", collect)
    with pytest.raises(Killed):
        train_tiny(run, *EXTRA, "--set", "checkpoint_every=2", total_steps=ITERATIONS * BATCH)
    assert len(metrics(run)) == 3 and not (run / "summary.json").exists()
    monkeypatch.undo()
    assert ppokit.cli.main(["train", "CartPole-v1", "--resume", str(run), "--quiet"]) == 0
    assert_same_run(reference, run)
