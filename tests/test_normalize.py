"""RunningMeanStd: chunked statistics, identity before data, clipping, checkpointed buffers."""

from __future__ import annotations

import pytest
import torch

from ppokit.normalize import RunningMeanStd


def test_chunks_match_golden_values():
    rms = RunningMeanStd(())
    rms.update(torch.tensor([1.0, 2.0, 3.0]))
    rms.update(torch.tensor([4.0, 5.0]))
    assert float(rms.mean) == pytest.approx(3.0)
    assert float(rms.var) == pytest.approx(2.0)
    assert float(rms.count) == 5


def test_chunks_equal_one_batch_per_dimension():
    torch.manual_seed(0)
    data = torch.randn(100, 3) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([5.0, -2.0, 0.0])
    rms = RunningMeanStd((3,))
    for chunk in data.split([1, 7, 50, 42]):
        rms.update(chunk)
    assert torch.allclose(rms.mean, data.double().mean(0))
    assert torch.allclose(rms.var, data.double().var(0, unbiased=False))


def test_identity_before_any_update_and_empty_update():
    rms = RunningMeanStd((2,))
    rms.update(torch.zeros(0, 2))
    x = torch.tensor([[0.5, -3.0]])
    assert torch.allclose(rms.normalize(x), x, atol=1e-6)
    assert float(rms.count) == 0


def test_normalize_and_scale_and_clip():
    rms = RunningMeanStd((), clip=1.5)
    rms.update(torch.tensor([1.0, 3.0]))  # mean 2, var 1
    assert rms.normalize(torch.tensor([3.0, 2.5, 100.0])).tolist() == pytest.approx([1.0, 0.5, 1.5], abs=1e-6)
    assert rms.scale(torch.tensor([1.0, -100.0])).tolist() == pytest.approx([1.0, -1.5], abs=1e-6)
    assert rms.normalize(torch.tensor([3.0])).dtype == torch.float32


def test_statistics_are_buffers_in_the_state_dict():
    rms = RunningMeanStd((2,))
    rms.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    other = RunningMeanStd((2,))
    other.load_state_dict(rms.state_dict())
    assert set(rms.state_dict()) == {"mean", "var", "count"}
    assert torch.equal(other.mean, rms.mean) and torch.equal(other.var, rms.var)


def test_integer_input():
    rms = RunningMeanStd(())
    rms.update(torch.tensor([1, 2, 3, 4, 5], dtype=torch.uint8))
    assert float(rms.mean) == pytest.approx(3.0) and float(rms.var) == pytest.approx(2.0)
