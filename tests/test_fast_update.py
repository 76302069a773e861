"""The fast update path (hand-written MLP backward, analytic PPO gradients, flat Adam) against
plain PyTorch references on fixed data."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.agent import Agent
from ppokit.algos.common import hyperparameters
from ppokit.algos.ppo import PPO
from ppokit.config import Config

SPACES = {
    "discrete": (gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(3)),
    "box": (gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Box(-2, 2, (2,), np.float32)),
    "multidiscrete": (gym.spaces.Box(-1, 1, (5,), np.float32), gym.spaces.MultiDiscrete([2, 3])),
}


def _setup(space: str, seed: int = 0, **ppo: object) -> tuple[Agent, PPO, dict, dict, Config]:
    torch.manual_seed(seed)
    cfg = Config()
    for key, value in ppo.items():
        if key in ("shared_trunk", "activation", "normalize_obs"):
            target = cfg.env if key == "normalize_obs" else cfg.model
            setattr(target, key, value)
        else:
            setattr(cfg.ppo, key, value)
    observation_space, action_space = SPACES[space]
    agent = Agent(observation_space, action_space, cfg.model, cfg.env)
    algo = PPO(agent, cfg, compile=False)
    m = 48
    obs = torch.randn(m, *observation_space.shape)
    with torch.no_grad():
        policy_out, values = agent(obs)
        actions = agent.head.sample(policy_out)
        log_probs = agent.head.log_prob(policy_out, actions)
    minibatch = {
        "obs": obs, "actions": actions, "log_probs": log_probs + 0.4 * torch.randn(m),
        "values": values + 0.5 * torch.randn(m), "advantages": torch.randn(m), "returns": torch.randn(m),
        "weights": (torch.rand(m) > 0.2).float(), "policy_outputs": policy_out,
    }
    hyper = hyperparameters(lr=3e-3, clip_coef=0.2)
    return agent, algo, minibatch, hyper, cfg


CASES = [
    ("discrete", {}),
    ("box", {}),
    ("multidiscrete", {}),
    ("discrete", {"ent_coef": 0.05, "clip_vloss": True}),
    ("box", {"ent_coef": 0.01, "clip_vloss": True, "norm_adv": False}),
    ("discrete", {"clip_coef": None}),
    ("discrete", {"shared_trunk": True}),
    ("box", {"activation": "relu"}),
    ("discrete", {"normalize_obs": True}),
]


@pytest.mark.parametrize("space,options", CASES)
def test_fast_gradients_equal_autograd(space: str, options: dict) -> None:
    agent, algo, minibatch, hyper, _ = _setup(space, **options)
    step = algo.gradient_step
    assert step.mode == "manual"
    fast = step.gradients(minibatch, hyper)
    # Reference: autograd through the module and through the readable loss function.
    minibatch = step._with_mean_weights(minibatch)
    policy_out, values = agent(minibatch["obs"])
    loss, _ = algo.loss(agent.head, policy_out, values, minibatch, hyper)
    reference = torch.autograd.grad(loss, step.parameters)
    assert len(fast) == len(reference)
    for name, a, b in zip(step.names, fast, reference):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("space,options", CASES[:4])
def test_fast_statistics_equal_loss_function(space: str, options: dict) -> None:
    agent, algo, minibatch, hyper, _ = _setup(space, **options)
    minibatch = algo.gradient_step._with_mean_weights(minibatch)
    with torch.no_grad():
        policy_out, values = agent(minibatch["obs"])
        _, reference = algo.loss(agent.head, policy_out, values, minibatch, hyper)
        _, _, fast = algo.loss_gradients(agent.head, policy_out, values, minibatch, hyper)
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
        torch.testing.assert_close(fast[key], reference[key], atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.parametrize("space", ["discrete", "box"])
def test_update_step_equals_torch_optim_reference(space: str) -> None:
    """Three steps of the fast path == the same steps with loss.backward, clip_grad_norm_ and torch.optim.Adam."""
    agent, algo, minibatch, hyper, cfg = _setup(space)
    reference_agent = Agent(agent.observation_space, agent.action_space, cfg.model, cfg.env)
    reference_agent.load_state_dict(agent.state_dict())
    optimizer = torch.optim.Adam(reference_agent.parameters(), lr=float(hyper["lr"]), eps=cfg.ppo.adam_eps)
    for _ in range(3):
        stats = algo.gradient_step.step(dict(minibatch), hyper)
        weighted = algo.gradient_step._with_mean_weights(minibatch)
        policy_out, values = reference_agent(weighted["obs"])
        loss, _ = algo.loss(reference_agent.head, policy_out, values, weighted, hyper)
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(reference_agent.parameters(), cfg.ppo.max_grad_norm)
        optimizer.step()
        torch.testing.assert_close(stats["grad_norm"], norm, atol=1e-5, rtol=1e-4)
    for (name, a), b in zip(agent.named_parameters(), reference_agent.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_parameters_are_views_of_one_buffer_and_survive_load() -> None:
    agent, algo, minibatch, hyper, cfg = _setup("discrete")
    flat, offsets = agent.flat_parameters()
    state = {k: v.clone() for k, v in agent.state_dict().items()}
    algo.gradient_step.step(dict(minibatch), hyper)
    agent.load_state_dict(state)  # copies in place: still views
    assert agent.flat_parameters()[0] is flat
    for name, p in agent.named_parameters():
        start, end = offsets[name]
        assert torch.equal(flat[start:end].view_as(p), p)
