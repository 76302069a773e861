"""The PPO family beyond PPO-clip: PPO without clipping, PPO-KL, TRPO and VPG (unit tests, fast).

Small agents and hand-made batches; every expected value is computed independently of the code
under test (closed forms, torch.distributions, full autograd Hessians).
"""

from __future__ import annotations

import logging
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import distributions as D

from ppokit import distributed
from ppokit.agent import Agent
from ppokit.algos import ALGOS
from ppokit.algos.common import CRITIC_PREFIXES, mean_kl
from ppokit.algos.ppo_kl import adapt_beta
from ppokit.algos.trpo import conjugate_gradient, fisher_vector_product
from ppokit.algos.vpg import policy_gradient_loss, reward_to_go
from ppokit.batch import Batch, Minibatch, normalize_advantages, weighted_mean
from ppokit.config import Config, ConfigError, ModelConfig, validate
from ppokit.distributions import CategoricalHead, DiagGaussianHead

OBS_SPACE = gym.spaces.Box(-5.0, 5.0, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def make_agent(action_space: gym.Space = DISCRETE, seed: int = 0, shared_trunk: bool = False) -> Agent:
    torch.manual_seed(seed)
    agent = Agent(OBS_SPACE, action_space, ModelConfig(hidden_sizes=[8], shared_trunk=shared_trunk))
    with torch.no_grad():  # move away from the near-uniform initial policy
        agent.policy_head.weight.normal_(0.0, 0.5)
    return agent


def make_batch(agent: Agent, size: int = 64, seed: int = 1) -> Batch:
    """A batch acted by ``agent``: advantages favour action 0 (or a positive first action
    coordinate); the last 4 samples are invalid (weight 0) and carry absurd numbers."""
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(size, 3, generator=generator)
    with torch.no_grad():
        policy_out, values = agent(obs)
    torch.manual_seed(seed)
    actions = agent.head.sample(policy_out)
    log_probs = agent.head.log_prob(policy_out, actions)
    first = actions.float() if actions.dim() == 1 else actions[:, 0]
    advantages = torch.where(first == 0, 1.0, -0.5) if actions.dim() == 1 else first
    advantages = advantages + 0.1 * torch.randn(size, generator=generator)
    weights = torch.ones(size)
    weights[-4:] = 0.0
    advantages[-4:] = 1e6
    returns = values + advantages
    return Batch(obs, actions, log_probs, values, advantages, returns, weights, policy_out)


def config(algo: str, **sections: dict) -> Config:
    cfg = Config(algo=algo)
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    return cfg


def actor_state(agent: Agent) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in agent.named_parameters() if not n.startswith(CRITIC_PREFIXES)}


def critic_state(agent: Agent) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in agent.named_parameters() if n.startswith(CRITIC_PREFIXES)}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- exact KL of the heads


def test_categorical_kl_matches_the_closed_form_and_torch():
    generator = torch.Generator().manual_seed(0)
    old, new = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    p, q = torch.softmax(old, -1), torch.softmax(new, -1)
    closed_form = (p * (p.log() - q.log())).sum(-1)
    head = CategoricalHead(4)
    assert torch.allclose(head.kl(old, new), closed_form, atol=1e-6)
    torch_kl = D.kl_divergence(D.Categorical(logits=old), D.Categorical(logits=new))
    assert torch.allclose(head.kl(old, new), torch_kl, atol=1e-6)
    assert torch.allclose(head.kl(old, old), torch.zeros(5), atol=1e-7)


def test_gaussian_kl_matches_the_closed_form_and_torch():
    head = DiagGaussianHead(gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
    mean_old, mean_new = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, -1.0]])
    log_std_old, log_std_new = torch.tensor([[0.0, math.log(2.0)]]), torch.tensor([[math.log(0.5), 0.0]])
    old = torch.cat([mean_old, log_std_old], -1)
    new = torch.cat([mean_new, log_std_new], -1)
    # KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2, summed over dims:
    # dim 0: log(0.5) + (1 + 0.25) / 0.5 - 0.5;  dim 1: log(0.5) + (4 + 4) / 2 - 0.5
    expected = (math.log(0.5) + 2.5 - 0.5) + (math.log(0.5) + 4.0 - 0.5)
    assert float(head.kl(old, new)) == pytest.approx(expected, rel=1e-6)
    torch_kl = D.kl_divergence(head.torch_dist(old), head.torch_dist(new))
    assert float(head.kl(old, new)) == pytest.approx(float(torch_kl), rel=1e-6)


# ---------------------------------------------------------------------------- PPO without clipping


def test_ppo_without_clipping_optimizes_the_plain_surrogate():
    """``ppo.clip_coef: null`` is Table 1's "no clipping or penalty": the loss is -E[r A] (+ c1 L^VF)."""
    agent = make_agent()
    batch = make_batch(agent)
    with torch.no_grad():  # a policy different from the acting one, so that r != 1
        agent.policy_head.bias.add_(torch.tensor([0.3, -0.2, 0.1]))
        policy_out, values = agent(batch.obs)
    data = Minibatch.of(batch.as_dict())
    hyper = {"lr": torch.tensor(1e-3), "clip_coef": torch.tensor(0.2)}
    ratio = torch.exp(agent.head.log_prob(policy_out, batch.actions) - batch.log_probs)
    advantages = normalize_advantages(batch.advantages, batch.weights)
    plain = -weighted_mean(ratio * advantages, batch.weights)
    value_term = 0.5 * weighted_mean((values - batch.returns).square(), batch.weights)

    unclipped = ALGOS["ppo"](agent, config("ppo", ppo={"clip_coef": None, "vf_coef": 0.0}), path="eager")
    loss, stats = unclipped.loss(agent.head, policy_out, values, data, hyper)
    assert float(loss) == pytest.approx(float(plain), rel=1e-6)
    assert float(stats["policy_loss"]) == pytest.approx(float(plain), rel=1e-6)
    with_value = ALGOS["ppo"](agent, config("ppo", ppo={"clip_coef": None, "vf_coef": 0.5}), path="eager")
    loss, _ = with_value.loss(agent.head, policy_out, values, data, hyper)
    assert float(loss) == pytest.approx(float(plain + 0.5 * value_term), rel=1e-6)
    clipped = ALGOS["ppo"](agent, config("ppo", ppo={"vf_coef": 0.0}), path="eager")
    assert float(clipped.loss(agent.head, policy_out, values, data, hyper)[0]) > float(plain) + 1e-4
    # The same objective from PPO-KL with a fixed beta of 0.
    penalty = ALGOS["ppo-kl"](agent, config("ppo_kl", ppo_kl={"vf_coef": 0.0}), path="eager")
    loss, _ = penalty.loss(agent.head, policy_out, values, data, {**hyper, "beta": torch.tensor(0.0)})
    assert float(loss) == pytest.approx(float(plain), rel=1e-6)


# ---------------------------------------------------------------------------- PPO-KL


def test_beta_rule_on_scripted_kls():
    target = 0.01
    beta = 1.0
    for kl, expected in [(0.001, 0.5), (0.001, 0.25), (0.01, 0.25), (0.0149, 0.25), (0.02, 0.5), (0.5, 1.0),
                         (0.0067, 1.0), (0.0066, 0.5)]:
        beta = adapt_beta(beta, kl, target)
        assert beta == expected, kl


def test_ppo_kl_penalty_is_beta_times_the_exact_kl():
    agent = make_agent(BOX)
    batch = make_batch(agent)
    with torch.no_grad():
        agent.log_std.add_(0.2)
        policy_out, values = agent(batch.obs)
    algo = ALGOS["ppo-kl"](agent, config("ppo-kl"), path="eager")
    data = Minibatch.of(batch.as_dict())
    losses = [algo.loss(agent.head, policy_out, values, data, {"lr": torch.tensor(1e-3), "beta": torch.tensor(b)})
              for b in (0.0, 2.0)]
    kl = weighted_mean(D.kl_divergence(agent.head.torch_dist(batch.policy_outputs),
                                       agent.head.torch_dist(policy_out)), batch.weights)
    assert float(losses[1][0] - losses[0][0]) == pytest.approx(2 * float(kl), rel=1e-5)
    assert float(losses[1][1]["kl"]) == pytest.approx(float(kl), rel=1e-5)


@pytest.mark.parametrize("adaptive", [True, False])
def test_ppo_kl_update_moves_beta_by_the_kl_after_the_update(adaptive: bool):
    agent = make_agent()
    batch = make_batch(agent)
    cfg = config("ppo-kl", ppo_kl={"adaptive": adaptive, "update_epochs": 3, "minibatch_size": 16,
                                   "learning_rate": 3e-3, "beta_init": 0.7})
    algo = ALGOS["ppo-kl"](agent, cfg, path="eager")
    stats = algo.update(batch, progress=0.0)
    with torch.no_grad():
        kl_after = float(mean_kl(agent.head, batch.policy_outputs, agent(batch.obs)[0], batch.weights))
    assert stats["kl"] == pytest.approx(kl_after, rel=1e-6)
    assert stats["beta"] == 0.7  # the beta this update used
    expected = adapt_beta(0.7, kl_after, 0.01) if adaptive else 0.7
    assert float(algo.state_tensors()["beta"]) == expected
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "learning_rate"):
        assert math.isfinite(stats[key]), key


def test_ppo_kl_beta_follows_the_kl_averaged_over_processes(monkeypatch):
    agent = make_agent()
    algo = ALGOS["ppo-kl"](agent, config("ppo-kl", ppo_kl={"update_epochs": 1}), path="eager")
    def others_moved_a_lot(tensors):  # policy_change's sums over processes: a mean KL of 1.0
        sums = tensors[0]
        sums[0] = sums[-1]  # [KL sum, k3 sum, entropy sum, samples]
        return tensors

    monkeypatch.setattr(distributed, "sum_", others_moved_a_lot)
    algo.update(make_batch(agent), progress=0.0)
    assert float(algo.beta) == 2.0


def test_ppo_kl_state_round_trip():
    agent = make_agent()
    algo = ALGOS["ppo-kl"](agent, config("ppo-kl", ppo_kl={"update_epochs": 1}), path="eager")
    algo.update(make_batch(agent), progress=0.0)
    saved = {k: v.clone() for k, v in algo.state_tensors().items()}
    fresh = ALGOS["ppo-kl"](make_agent(), config("ppo-kl"), path="eager")
    fresh.load_state_tensors(saved)
    assert same(fresh.state_tensors(), saved)
    assert float(fresh.beta) != 1.0


# ---------------------------------------------------------------------------- TRPO


def test_conjugate_gradient_golden():
    matrix = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    calls = []

    def matvec(v):
        calls.append(1)
        return matrix @ v

    x = conjugate_gradient(matvec, torch.tensor([1.0, 2.0], dtype=torch.float64), iterations=2)
    assert x.tolist() == pytest.approx([1 / 11, 7 / 11], abs=1e-12)
    assert len(calls) == 2


@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["categorical", "gaussian"])
def test_fisher_vector_product_equals_the_hessian_of_the_mean_kl(space):
    agent = make_agent(space)  # float32: the encoder casts observations to float32
    trpo = ALGOS["trpo"](agent, config("trpo"), path="eager")
    obs = torch.randn(16, 3, generator=torch.Generator().manual_seed(3))
    weights = torch.ones(16)
    theta = trpo.flat_params()
    old_out = trpo.policy_outputs(theta, obs).detach()

    def kl_fn(t):
        return mean_kl(agent.head, old_out, trpo.policy_outputs(t, obs), weights)

    hessian = torch.autograd.functional.hessian(kl_fn, theta)
    fvp = fisher_vector_product(kl_fn, theta, damping=0.1)
    for seed in range(3):
        vector = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(seed))
        expected = hessian @ vector
        assert float(expected.abs().max()) > 1e-2
        assert torch.allclose(fvp(vector), expected + 0.1 * vector, rtol=1e-4, atol=1e-6)
    assert float(torch.linalg.eigvalsh(hessian.double()).min()) > -1e-6  # a Fisher matrix: PSD


def test_surrogate_gradient_at_theta_old_is_the_policy_gradient():
    """grad E[r A] = grad E[log pi A] at theta = theta_old (TRPO's surrogate vs VPG's loss)."""
    agent = make_agent(BOX)
    batch = make_batch(agent)
    data = Minibatch.of(batch.as_dict())
    trpo = ALGOS["trpo"](agent, config("trpo"), path="eager")
    theta = trpo.flat_params()
    surrogate_grad = torch.func.grad(lambda t: trpo.surrogate_and_kl(t, data)[0])(theta)

    def minus_vpg_loss(t):
        return -policy_gradient_loss(agent.head, trpo.policy_outputs(t, data.obs), None, data, {})[0]

    assert torch.allclose(surrogate_grad, torch.func.grad(minus_vpg_loss)(theta), rtol=1e-5, atol=1e-7)
    assert float(surrogate_grad.abs().max()) > 1e-3


@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["categorical", "gaussian"])
def test_trpo_accepted_step_respects_max_kl_and_improves(space):
    agent = make_agent(space)
    batch = make_batch(agent)
    cfg = config("trpo", trpo={"max_kl": 0.02, "norm_adv": False})
    before = critic_state(agent)
    stats = ALGOS["trpo"](agent, cfg, path="eager").update(batch, progress=0.0)
    assert stats["line_search_accepted"] == 1.0
    with torch.no_grad():
        policy_out = agent(batch.obs)[0]
    kl = float(weighted_mean(agent.head.kl(batch.policy_outputs, policy_out), batch.weights))
    assert 0 < kl <= 0.02 * (1 + 1e-5)
    assert stats["kl"] == pytest.approx(kl, rel=1e-5)
    ratio = torch.exp(agent.head.log_prob(policy_out, batch.actions) - batch.log_probs)
    improvement = float(weighted_mean((ratio - 1) * batch.advantages, batch.weights))
    assert improvement > 0 and stats["improvement"] == pytest.approx(improvement, rel=1e-3)
    assert not same(critic_state(agent), before)  # the value function was fitted
    assert stats["value_grad_steps"] == 5 * 1  # value_epochs x one minibatch of 64


def test_trpo_rejected_line_search_keeps_the_parameters_bit_identical(monkeypatch, caplog):
    agent = make_agent()
    batch = make_batch(agent)
    # A KL that is at least 1 everywhere (with genuine curvature): every candidate exceeds max_kl.
    monkeypatch.setattr(agent.head, "kl", lambda old, new: 1.0 + 0.5 * (new - old).square().sum(-1))
    before = actor_state(agent)
    with caplog.at_level(logging.WARNING, logger="ppokit"):
        stats = ALGOS["trpo"](agent, config("trpo", trpo={"backtrack_iters": 4}), path="eager").update(batch, 0.0)
    assert same(actor_state(agent), before)
    assert stats["line_search_accepted"] == 0.0 and stats["line_search_steps"] == 4.0
    assert stats["improvement"] == 0.0
    assert any("line search rejected" in r.getMessage() for r in caplog.records if r.name == "ppokit")


def test_trpo_without_a_gradient_takes_no_step(caplog):
    agent = make_agent()
    batch = make_batch(agent)
    batch.advantages.zero_()
    before = actor_state(agent)
    with caplog.at_level(logging.WARNING, logger="ppokit"):
        stats = ALGOS["trpo"](agent, config("trpo", trpo={"norm_adv": False}), path="eager").update(batch, 0.0)
    assert same(actor_state(agent), before) and stats["line_search_accepted"] == 0.0
    assert any("no step" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("algo", ["trpo", "vpg"])
def test_separate_critic_required(algo):
    cfg = Config(algo=algo)
    cfg.model.shared_trunk = True
    with pytest.raises(ConfigError, match="shared_trunk"):
        validate(cfg)
    with pytest.raises(ConfigError, match="separate actor and critic"):
        ALGOS[algo](make_agent(shared_trunk=True), Config(algo=algo), path="eager")


# ---------------------------------------------------------------------------- VPG


def test_reward_to_go_golden():
    """T = 3 steps, N = 2 envs, gamma 0.5; env 1 terminates at t = 0 and env 0 is cut by the rollout."""
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    terminated = torch.tensor([[False, True], [False, False], [False, False]])
    truncated = torch.zeros(3, 2, dtype=torch.bool)
    truncated[1, 1] = True  # a time limit ends env 1's second episode at t = 1
    batch = Batch(*[torch.zeros(6)] * 7, torch.zeros(6, 2), rewards=rewards.reshape(-1),
                  terminated=terminated.reshape(-1), truncated=truncated.reshape(-1))
    returns = reward_to_go(batch, num_steps=3, gamma=0.5).reshape(3, 2)
    assert returns[:, 0].tolist() == [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0]
    assert returns[:, 1].tolist() == [1.0, 1.0, 1.0]


def test_batch_without_the_optional_fields_still_indexes():
    batch = Batch(*[torch.arange(4.0)] * 7, torch.zeros(4, 2))
    assert batch.rewards is None and "rewards" not in batch.as_dict()
    assert batch[torch.tensor([1, 3])].obs.tolist() == [1.0, 3.0]


def test_vpg_takes_one_policy_step_and_fits_the_value():
    agent = make_agent()
    batch = make_batch(agent)
    algo = ALGOS["vpg"](agent, config("vpg", vpg={"learning_rate": 1e-2}), path="eager")
    actor_before, critic_before = actor_state(agent), critic_state(agent)
    stats = algo.update(batch, progress=0.0)
    assert float(algo.state_tensors()["optimizer.step"]) == 1.0
    assert not same(actor_state(agent), actor_before) and not same(critic_state(agent), critic_before)
    with torch.no_grad():
        probs = torch.softmax(agent(batch.obs)[0], -1)[:, 0]
    assert float(probs.mean()) > float(torch.softmax(batch.policy_outputs, -1)[:, 0].mean())
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "kl", "learning_rate"):
        assert math.isfinite(stats[key]), key


def test_vpg_without_baseline_is_reinforce_on_the_returns():
    agent = make_agent()
    batch = make_batch(agent)
    T, N = 16, 4
    batch.rewards = torch.rand(T * N, generator=torch.Generator().manual_seed(0))
    batch.terminated = torch.rand(T * N, generator=torch.Generator().manual_seed(1)) < 0.1
    batch.truncated = torch.zeros(T * N, dtype=torch.bool)
    cfg = config("vpg", vpg={"baseline": "none", "norm_adv": False})
    cfg.rollout.num_steps, cfg.rollout.gamma = T, 0.9
    algo = ALGOS["vpg"](agent, cfg, path="eager")
    critic_before = critic_state(agent)
    start = torch.nn.utils.parameters_to_vector(actor_state(agent).values())
    returns = reward_to_go(batch, T, 0.9)
    expected_grad = torch.func.grad(
        lambda params: policy_gradient_loss(
            agent.head, torch.func.functional_call(agent, params, (batch.obs,))[0], None,
            Minibatch.of({**batch.as_dict(), "advantages": returns}), {})[0]
    )(actor_state(agent))
    stats = algo.update(batch, progress=0.0)
    assert same(critic_state(agent), critic_before) and "value_loss" not in stats
    # Adam's first step moves each parameter by lr * sign(gradient) (up to eps).
    moved = torch.nn.utils.parameters_to_vector(actor_state(agent).values()) - start
    signs = torch.nn.utils.parameters_to_vector(expected_grad.values()).sign()
    big = torch.nn.utils.parameters_to_vector(expected_grad.values()).abs() > 1e-4
    assert torch.equal(moved.sign()[big], -signs[big])


@pytest.mark.slow
def test_changing_beta_never_recompiles_the_step():
    """beta is a tensor hyperparameter: a compiled PPO-KL step compiles once for any beta."""
    torch._dynamo.reset()
    agent = make_agent()
    batch = make_batch(agent)
    algo = ALGOS["ppo-kl"](agent, config("ppo-kl"), path="compile")
    algo.gradient_step.step(Minibatch.of(batch.as_dict()), {"lr": 1e-3, "beta": 1.0})
    after_first = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for beta in (2.0, 0.5, 0.25):
        algo.gradient_step.step(Minibatch.of(batch.as_dict()), {"lr": 1e-3, "beta": beta})
    assert algo.gradient_step.compiled  # it did compile (no fallback to eager)
    assert after_first >= 1
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == after_first


# ---------------------------------------------------------------------------- advantage statistics over the batch


@pytest.mark.parametrize("algo, section, path", [("ppo", "ppo", "eager"), ("ppo", "ppo", "fast"),
                                                 ("ppo-kl", "ppo_kl", "eager")])
def test_norm_adv_scope_batch_normalizes_once_over_the_whole_batch(algo, section, path):
    """``norm_adv_scope: batch`` (the PPO paper's code) steps exactly as unnormalized advantages that
    were normalized over the whole batch beforehand; per-minibatch statistics step differently."""
    base = {"minibatch_size": 16, "update_epochs": 2, "max_grad_norm": None}

    def updated(batch: Batch, **fields) -> dict[str, torch.Tensor]:
        agent = make_agent(BOX)
        torch.manual_seed(7)  # the same minibatch order in every variant
        ALGOS[algo](agent, config(algo, **{section: {**base, **fields}}), path=path).update(batch, progress=0.0)
        return actor_state(agent)

    batch = make_batch(make_agent(BOX))
    by_hand = Batch(**{**batch.as_dict(), "advantages": normalize_advantages(batch.advantages, batch.weights)})
    over_batch = updated(batch, norm_adv=True, norm_adv_scope="batch")
    expected = updated(by_hand, norm_adv=False)
    assert all(torch.allclose(over_batch[k], expected[k], atol=1e-6) for k in expected)
    per_minibatch = updated(batch, norm_adv=True, norm_adv_scope="minibatch")
    assert not all(torch.allclose(per_minibatch[k], expected[k], atol=1e-6) for k in expected)


def test_norm_adv_scope_is_checked():
    with pytest.raises(ConfigError, match="ppo.norm_adv_scope: expected one of minibatch, batch"):
        validate(config("ppo", ppo={"norm_adv_scope": "epoch"}))
