"""flatten() keeps (t, env) pairs together; minibatches cover every sample exactly once."""

from __future__ import annotations

import torch

from ppokit.batch import flatten, minibatches, weighted_mean
from ppokit.rollout import Rollout


def make_rollout(T: int = 3, N: int = 2) -> Rollout:
    index = torch.arange(T * N, dtype=torch.float32).reshape(T, N)
    valid = torch.ones(T, N, dtype=torch.bool)
    valid[1, 0] = False
    return Rollout(
        obs=index[..., None].repeat(1, 1, 4), actions=index.long(), log_probs=-index, values=index * 10,
        rewards=index, terminated=torch.zeros(T, N, dtype=torch.bool), truncated=torch.zeros(T, N, dtype=torch.bool),
        next_values=index, valid=valid, policy_outputs=index[..., None].repeat(1, 1, 2),
    )


def test_flatten_is_time_major_and_aligned():
    rollout = make_rollout()
    advantages = torch.arange(6, dtype=torch.float32).reshape(3, 2) + 100
    batch = flatten(rollout, advantages, advantages * 2)
    assert len(batch) == 6
    assert batch.obs.shape == (6, 4) and batch.policy_outputs.shape == (6, 2)
    assert batch.actions.tolist() == list(range(6))
    assert torch.equal(batch.values, torch.arange(6.0) * 10)
    assert torch.equal(batch.advantages, torch.arange(6.0) + 100)
    assert batch.weights.tolist() == [1, 1, 0, 1, 1, 1]
    sub = batch[torch.tensor([4, 2])]
    assert sub.actions.tolist() == [4, 2] and sub.weights.tolist() == [1, 0]


def test_minibatches_cover_every_sample_once():
    data = {"index": torch.arange(10), "twice": torch.arange(10) * 2}
    torch.manual_seed(0)
    chunks = [mb["index"] for mb in minibatches(data, 4)]
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert sorted(torch.cat(chunks).tolist()) == list(range(10))
    assert all(torch.equal(mb["twice"], mb["index"] * 2) for mb in minibatches(data, 4))  # fields stay aligned
    torch.manual_seed(0)
    assert all(torch.equal(a, b["index"]) for a, b in zip(chunks, minibatches(data, 4)))
    assert minibatches(data, 10)[0] is data  # one whole-batch minibatch: no shuffle


def test_weighted_mean_with_no_valid_sample_is_zero():
    assert float(weighted_mean(torch.tensor([5.0, 7.0]), torch.zeros(2))) == 0.0
