"""ppokit export: the ONNX / TorchScript file maps raw observations to the agent's deterministic actions."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.agent import Agent
from ppokit.cli import main
from ppokit.config import Config, EnvConfig, ModelConfig
from ppokit.export import export

ort = pytest.importorskip("onnxruntime")

BOX_OBS = gym.spaces.Box(-5.0, 5.0, (3,), np.float32)
ACTION_SPACES = {
    "discrete": gym.spaces.Discrete(5, start=2),
    "multidiscrete": gym.spaces.MultiDiscrete(np.array([[3, 4], [2, 5]]), start=np.array([[1, 0], [-1, 2]])),
    "multibinary": gym.spaces.MultiBinary(4),
    "box": gym.spaces.Box(np.array([-2.0, 0.0, -1.0]), np.array([2.0, 0.5, 3.0]), (3,), np.float32),
    "box-2d": gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32),
}


def random_agent(action_space: gym.Space, seed: int = 0) -> Agent:
    """An agent with random weights large enough for every action to occur (and Box means far past
    the bounds), and observation statistics far from mean 0 / variance 1."""
    torch.manual_seed(seed)
    agent = Agent(BOX_OBS, action_space, ModelConfig(hidden_sizes=[16, 16]),
                  EnvConfig(normalize_obs=True, clip_obs=3.0))
    with torch.no_grad():
        for parameter in agent.parameters():
            parameter.normal_(0.0, 1.0)
    agent.obs_normalizer.update(torch.randn(500, 3, dtype=torch.float64) * torch.tensor([0.1, 2.0, 5.0]) + 1.5)
    return agent


def observations(count: int = 1000, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.5, 3.0, (count, 3)).astype(np.float32)


@pytest.mark.parametrize("kind", list(ACTION_SPACES))
def test_onnx_gives_the_agents_deterministic_actions(tmp_path, kind):
    agent = random_agent(ACTION_SPACES[kind])
    obs = observations()
    expected = agent.act(obs, deterministic=True)
    out = export(agent, tmp_path / "policy.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    actions = session.run(["action"], {"observation": obs})[0]
    assert actions.shape == expected.shape == (1000, *ACTION_SPACES[kind].shape)
    if kind.startswith("box"):
        space = ACTION_SPACES[kind]
        assert actions.dtype == np.float32
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
        clipped = (expected == space.low) | (expected == space.high)
        assert 0.2 < clipped.mean() < 0.95  # the bounds were exercised, and so was the interior
        assert np.all(actions >= space.low) and np.all(actions <= space.high)
    else:
        assert actions.dtype == np.int64
        np.testing.assert_array_equal(actions, expected)
        assert len(np.unique(expected)) > 1
    assert all(ACTION_SPACES[kind].contains(a.astype(ACTION_SPACES[kind].dtype)) for a in actions[:50])
    # One observation at a time works as well (the batch axis is dynamic).
    np.testing.assert_allclose(session.run(None, {"observation": obs[:1]})[0], expected[:1], rtol=1e-5, atol=1e-5)


def test_normalization_is_inside_the_graph(tmp_path):
    """Changing only the saved observation statistics changes the exported file's actions."""
    agent = random_agent(ACTION_SPACES["discrete"])
    obs = observations()
    before = ort.InferenceSession(str(export(agent, tmp_path / "a.onnx"))).run(None, {"observation": obs})[0]
    agent.obs_normalizer.update(torch.randn(5000, 3, dtype=torch.float64) * 10 - 7)
    after = ort.InferenceSession(str(export(agent, tmp_path / "b.onnx"))).run(None, {"observation": obs})[0]
    assert (before != after).mean() > 0.1
    np.testing.assert_array_equal(after, agent.act(obs))


def test_torch_export_program_gives_the_same_actions(tmp_path):
    agent = random_agent(ACTION_SPACES["box"])
    obs = observations()
    module = torch.export.load(str(export(agent, tmp_path / "policy.pt2", "pt2"))).module()
    with torch.no_grad():
        actions = module(torch.as_tensor(obs)).numpy()
        one = module(torch.as_tensor(obs[:1])).numpy()
    np.testing.assert_allclose(actions, agent.act(obs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one, agent.act(obs[:1]), rtol=1e-5, atol=1e-5)


def test_cli_exports_a_trained_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--run-dir", str(run), "--total-steps", "256", "--set", "eval_episodes=0",
                 "--set", "env.normalize_obs=true", "--quiet", "--log-every", "0"]) == 0
    assert main(["export", str(run)]) == 0
    assert f"wrote {run / 'policy.onnx'}" in capsys.readouterr().out
    env = gym.make("CartPole-v1")
    obs = np.stack([env.reset(seed=i)[0] for i in range(200)])
    import ppokit

    best = ppokit.load(run / "checkpoints" / "best")
    session = ort.InferenceSession(str(run / "policy.onnx"))
    np.testing.assert_array_equal(session.run(None, {"observation": obs})[0], best.act(obs))

    assert main(["export", str(run), "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(tmp_path / "policy.txt")]) == 2
    assert "expected a .onnx file name" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_missing_onnx_is_one_line_with_the_pip_command(tmp_path, capsys, monkeypatch):
    agent = random_agent(ACTION_SPACES["discrete"])
    agent.config = Config()
    agent.config.model, agent.config.env = ModelConfig(hidden_sizes=[16, 16]), EnvConfig(normalize_obs=True, clip_obs=3)
    agent.save(str(tmp_path / "agent"))
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    assert main(["export", str(tmp_path / "agent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ppokit: error: export to ONNX needs the onnx package: pip install 'ppokit[export]'"
