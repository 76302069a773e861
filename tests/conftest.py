"""Shared fixtures; importing the helpers registers the toy environments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import tests.helpers  # noqa: F401  (registers the toy envs)
from tests.errors_support import train_tiny


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny CartPole run (checkpoints/latest and best, metrics.csv, summary.json), one
    per test module; a module that needs another run overrides this fixture."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert train_tiny(run) == 0
    return run


@pytest.fixture()
def run(trained: Path, tmp_path: Path) -> Path:
    """A private copy of ``trained``, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))
