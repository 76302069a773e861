"""The fast update path (ppokit.fast: hand-written MLP backward, analytic PPO gradients) and the
gradient step's flat gradient + fused Adam, against plain PyTorch references on fixed data."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.agent import Agent
from ppokit.algos.common import GradientStep, hyperparameters
from ppokit.algos.ppo import PPO
from ppokit.batch import Minibatch
from ppokit.config import Config, from_dict
from ppokit.errors import ConfigError
from ppokit.fast import ppo as fast_ppo
from ppokit.fast import supports
from ppokit.optim import ALIGNMENT_BYTES

SPACES = {
    "discrete": (gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(3)),
    "box": (gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Box(-2, 2, (2,), np.float32)),
    "multidiscrete": (gym.spaces.Box(-1, 1, (5,), np.float32), gym.spaces.MultiDiscrete([2, 3])),
}


def _setup(space: str, seed: int = 0, path: str = "eager", **ppo: object) -> tuple[Agent, PPO, Minibatch, dict, Config]:
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
    algo = PPO(agent, cfg, path)
    m = 48
    obs = torch.randn(m, *observation_space.shape)
    with torch.no_grad():
        policy_out, values = agent(obs)
        actions = agent.head.sample(policy_out)
        log_probs = agent.head.log_prob(policy_out, actions)
    minibatch = Minibatch.of({
        "obs": obs, "actions": actions, "log_probs": log_probs + 0.4 * torch.randn(m),
        "values": values + 0.5 * torch.randn(m), "advantages": torch.randn(m), "returns": torch.randn(m),
        "weights": (torch.rand(m) > 0.2).float(), "policy_outputs": policy_out,
    })
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
    ("discrete", {"value_loss": "huber"}),
    ("box", {"value_loss": "huber", "clip_vloss": True, "shared_trunk": True}),
]


@pytest.mark.parametrize("space,options", CASES)
def test_fast_gradients_equal_autograd(space: str, options: dict) -> None:
    agent, algo, minibatch, hyper, _ = _setup(space, **options)
    step = algo.gradient_step
    assert step.mode == "fast"
    fast = step.gradients(minibatch, hyper)
    # Reference: autograd through the module and through the readable loss function.
    policy_out, values = agent(minibatch.obs)
    loss, _ = algo.loss(agent.head, policy_out, values, minibatch, hyper)
    reference = torch.autograd.grad(loss, step.parameters)
    assert len(fast) == len(reference)
    for name, a, b in zip(step.names, fast, reference):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("space,options", CASES[:4] + CASES[-2:])
def test_fast_statistics_equal_loss_function(space: str, options: dict) -> None:
    agent, algo, minibatch, hyper, _ = _setup(space, **options)
    with torch.no_grad():
        policy_out, values = agent(minibatch.obs)
        _, reference = algo.loss(agent.head, policy_out, values, minibatch, hyper)
        _, _, fast = fast_ppo.output_gradients(algo.cfg, agent.head, policy_out, values, minibatch, hyper)
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
        stats = algo.gradient_step.step(minibatch, hyper)
        policy_out, values = reference_agent(minibatch.obs)
        loss, _ = algo.loss(reference_agent.head, policy_out, values, minibatch, hyper)
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(reference_agent.parameters(), cfg.ppo.max_grad_norm)
        optimizer.step()
        torch.testing.assert_close(stats["grad_norm"], norm, atol=1e-5, rtol=1e-4)
    for (name, a), b in zip(agent.named_parameters(), reference_agent.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_parameters_are_aligned_views_updated_in_place() -> None:
    """Gradient steps update each parameter in place, as a view of the step's flat buffer that
    starts on a 64-byte boundary, like a tensor of its own. A view at an unaligned offset made a
    one-row matmul take another kernel than the reloaded agent's, so actions differed in the last
    bit on some CPUs (issue 8); the bitwise round trip is tests/test_checkpoint.py's."""
    agent, algo, minibatch, hyper, _ = _setup("box")
    before = {name: (p.data_ptr(), p.clone()) for name, p in agent.named_parameters()}
    algo.gradient_step.step(minibatch, hyper)
    for name, p in agent.named_parameters():
        assert p.data_ptr() == before[name][0], f"{name} was replaced, not updated in place"
        assert not torch.equal(p, before[name][1]), f"{name} did not move"
        assert p.data_ptr() % ALIGNMENT_BYTES == 0 and p.is_contiguous(), name
    # The padding between parameters stays zero through Adam.
    step = algo.gradient_step
    padding = torch.ones_like(step.flat_params, dtype=torch.bool)
    for offset, numel in zip(step.layout.offsets, step.layout.numels):
        padding[offset:offset + numel] = False
    assert padding.any() and not step.flat_params[padding].any() and not step.adam.exp_avg_sq[padding].any()


def test_optimizer_state_saves_without_padding() -> None:
    """Adam's moments go to checkpoints as one [P] vector each (the 0.1 format) and come back."""
    agent, algo, minibatch, hyper, _ = _setup("box")
    algo.gradient_step.step(minibatch, hyper)
    saved = {k: v.clone() for k, v in algo.state_tensors().items()}
    total = sum(p.numel() for p in agent.parameters())
    assert saved["optimizer.exp_avg"].shape == (total,) and saved["optimizer.step"].item() == 1
    torch.testing.assert_close(saved["optimizer.exp_avg"],
                               torch.cat([v.reshape(-1) for v in algo.gradient_step.layout.views(
                                   algo.gradient_step.adam.exp_avg)]), rtol=0, atol=0)
    algo.gradient_step.step(minibatch, hyper)
    algo.load_state_tensors(saved)
    for key, value in algo.state_tensors().items():
        assert torch.equal(value, saved[key]), key


@pytest.mark.parametrize("path", ["autograd", "compile"])
def test_other_paths_give_the_fast_gradient(path: str) -> None:
    agent, algo, minibatch, hyper, _ = _setup("discrete", path=path, ent_coef=0.01)
    _, fast_algo, _, _, _ = _setup("discrete", ent_coef=0.01)
    assert algo.gradient_step.mode == ("autograd" if path == "autograd" else "fast")
    assert algo.gradient_step.compiled == (path == "compile")
    reference = fast_algo.gradient_step.gradients(minibatch, hyper)
    for a, b in zip(algo.gradient_step.gradients(minibatch, hyper), reference):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_fast_path_refuses_networks_it_cannot_differentiate() -> None:
    observation_space, action_space = SPACES["discrete"]
    agent = Agent(observation_space, action_space, networks={"actor": torch.nn.Sequential(torch.nn.Linear(4, 8))})
    assert not supports(agent)
    loss = PPO(agent, Config(), "eager").loss
    assert GradientStep(agent, loss, max_grad_norm=None, adam_eps=1e-8, path="eager").mode == "autograd"
    with pytest.raises(ConfigError, match="update_path: fast needs"):
        GradientStep(agent, loss, max_grad_norm=None, adam_eps=1e-8, path="fast")
    elu = Config()
    elu.model.activation = "elu"
    assert not supports(Agent(observation_space, action_space, elu.model))


@pytest.mark.parametrize("old,new", [("on", "compile"), ("off", "eager"), ("auto", "auto"), (True, "compile")])
def test_compile_key_of_older_configs_is_read_as_update_path(old: object, new: str) -> None:
    assert from_dict({"compile": old}).update_path == new
    with pytest.raises(ConfigError, match="compile: expected one of auto, on, off"):
        from_dict({"compile": "sometimes"})
