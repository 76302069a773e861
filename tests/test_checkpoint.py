"""Checkpoints: exact round trip (actions and normalizer), atomic writes, refusing bad files."""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest
import safetensors.torch
import torch

import ppokit
from ppokit import checkpoint
from ppokit.errors import CheckpointError
from ppokit.run import train
from ppokit.spaces import space_from_json, space_to_json
from tests.helpers import small_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few Pendulum iterations with observation and reward normalization on."""
    cfg = small_config("Pendulum-v1", env={"normalize_obs": True, "normalize_reward": True})
    cfg.total_steps = 3 * cfg.batch_size
    run_dir = tmp_path_factory.mktemp("ckpt") / "run"
    return train(cfg, run_dir=run_dir, quiet=True)


def observations(n: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform([-1, -1, -8], [1, 1, 8], (n, 3)).astype(np.float32)


def assert_same_agent(a, b):
    obs = observations()
    assert np.array_equal(a.act(obs), b.act(obs))
    assert np.array_equal(a.act(obs[0]), b.act(obs[0]))
    assert np.array_equal(a.value(obs), b.value(obs))
    torch.manual_seed(11)
    sampled = a.act(obs, deterministic=False)
    torch.manual_seed(11)
    assert np.array_equal(sampled, b.act(obs, deterministic=False))
    for name in ("mean", "var", "count"):
        assert torch.equal(getattr(a.obs_normalizer, name), getattr(b.obs_normalizer, name))
    assert torch.equal(a.return_normalizer.var, b.return_normalizer.var)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_acts_identically(trained, tmp_path):
    agent = trained.agent
    assert float(agent.obs_normalizer.count) > 0 and float(agent.return_normalizer.count) > 0
    agent.save(str(tmp_path / "agent"))
    assert sorted(os.listdir(tmp_path / "agent")) == ["meta.json", "model.safetensors"]
    loaded = ppokit.load(tmp_path / "agent")
    assert_same_agent(agent, loaded)
    assert loaded.env_id == "Pendulum-v1" and loaded.global_step == agent.global_step
    assert loaded.config.env.normalize_obs


def test_run_folder_latest_is_the_final_agent(trained):
    loaded = ppokit.load(trained.run_dir)
    assert_same_agent(trained.agent, loaded)
    meta = json.loads((trained.run_dir / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["global_step"] == 3 * 32 and meta["training"]["iteration"] == 3
    tensors = safetensors.torch.load_file(str(trained.run_dir / "checkpoints" / "latest" / "model.safetensors"))
    assert any(k.startswith("algo.optimizer.exp_avg") for k in tensors)  # optimizer state saved
    assert (trained.run_dir / "checkpoints" / "best" / "meta.json").exists()


def crash_once(monkeypatch, module, name, on_call=1):
    original = getattr(module, name)
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise OSError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, crashing)


def half_written_save(tensors, filename, *args, **kwargs):
    with open(filename, "wb") as handle:
        handle.write(b"\x00" * 10)
    raise OSError("simulated crash mid-write")


@pytest.mark.parametrize("crash", ["safetensors", "meta", "replace-old", "replace-new"])
def test_interrupted_save_keeps_the_old_latest(trained, tmp_path, monkeypatch, crash):
    agent = trained.agent
    run = tmp_path / "run"
    latest = run / "checkpoints" / "latest"
    agent.save(str(latest))
    changed = ppokit.load(latest)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(1.0)
    with monkeypatch.context() as patch:
        if crash == "safetensors":
            patch.setattr(checkpoint.safetensors.torch, "save_file", half_written_save)
        elif crash == "meta":
            crash_once(patch, checkpoint.json, "dumps")
        else:
            crash_once(patch, checkpoint.os, "replace", on_call=1 if crash == "replace-old" else 2)
        with pytest.raises(OSError, match="simulated crash"):
            changed.save(str(latest))
    assert_same_agent(agent, ppokit.load(run))  # the run folder still gives the old checkpoint
    assert_same_agent(agent, ppokit.load(latest))
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name not in ("latest", ".latest.old")]
    assert leftovers == []
    changed.save(str(latest))  # the next save works and replaces it
    assert_same_agent(changed, ppokit.load(run))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest"]


def test_save_after_a_hard_crash_keeps_the_only_copy(trained, tmp_path, monkeypatch):
    """A crash between the two renames leaves only ``.latest.old``; the next save must not lose it."""
    agent = trained.agent
    changed = ppokit.load(trained.run_dir)
    with torch.no_grad():
        changed.log_std.add_(1.0)
    for call in (1, 2, 3):
        checkpoints = tmp_path / str(call) / "checkpoints"
        agent.save(str(checkpoints / "latest"))
        os.replace(checkpoints / "latest", checkpoints / ".latest.old")  # what a power cut can leave
        assert_same_agent(agent, ppokit.load(checkpoints.parent))
        with monkeypatch.context() as patch:
            crash_once(patch, checkpoint.os, "replace", on_call=call)
            with pytest.raises(OSError, match="simulated crash"):
                changed.save(str(checkpoints / "latest"))
        assert_same_agent(agent, ppokit.load(checkpoints.parent))
        changed.save(str(checkpoints / "latest"))
        assert_same_agent(changed, ppokit.load(checkpoints / "latest"))
        assert sorted(p.name for p in checkpoints.iterdir()) == ["latest"]


def test_refuses_pickles_and_corrupt_files(trained, tmp_path):
    path = tmp_path / "agent"
    trained.agent.save(str(path))
    (path / "evil.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(CheckpointError, match="evil.pkl"):
        ppokit.load(path)
    (path / "evil.pkl").unlink()
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        ppokit.load(path)
    (path / "model.safetensors").write_bytes(data)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ppokit.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        ppokit.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        ppokit.load(tmp_path / "empty")


@pytest.mark.parametrize("space", [
    gym.spaces.Box(-1.0, 2.0, (3,), np.float32),
    gym.spaces.Box(np.array([-1.0, -np.inf]), np.array([1.0, np.inf]), (2,), np.float64),
    gym.spaces.Box(0, 255, (4, 4, 3), np.uint8),
    gym.spaces.Discrete(5, start=-2),
    gym.spaces.MultiDiscrete([3, 4], start=[1, 0]),
    gym.spaces.MultiBinary(4),
])
def test_space_json_round_trip(space):
    restored = space_from_json(json.loads(json.dumps(space_to_json(space))))
    assert restored == space
