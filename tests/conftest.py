"""Shared fixtures; importing the helpers registers the toy environments."""

from __future__ import annotations

import pytest
import torch

import tests.helpers  # noqa: F401  (registers the toy envs)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
