"""PPO's options behind the tutorial presets (docs/tutorials.md), each against an independent
reference in plain torch: the Huber value loss, Monte-Carlo value targets (GAE with lambda 1),
advantages recomputed with the current critic before every epoch, Spinning Up's target-KL stop
before a step at 1.5 x target_kl, and the critic's separate fit with its own Adam."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ppokit.advantages import gae, refreshed_next_values
from ppokit.agent import Agent
from ppokit.algos.common import CRITIC_PREFIXES, recompute_advantages, value_loss
from ppokit.algos.ppo import PPO
from ppokit.batch import SAMPLE_FIELDS, Batch, Minibatch, time_major
from ppokit.config import Config
from ppokit.errors import ConfigError
from tests.errors_support import TINY, run_cli

OBS, ACTIONS = gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2)
T, N = 6, 3
B = T * N


def flags(probability: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(T, N, generator=generator) < probability


def reference_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """GAE in Python floats, one env column at a time: ``[T, N]`` lists -> advantages ``[T][N]``."""
    advantages = [[0.0] * N for _ in range(T)]
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            done = terminated[t][n] or truncated[t][n]
            bootstrap = 0.0 if terminated[t][n] else gamma * next_values[t][n]
            delta = rewards[t][n] + bootstrap - values[t][n]
            running = delta + (0.0 if done else gamma * lam * running)
            advantages[t][n] = running
    return advantages


# ---------------------------------------------------------------------------- the Huber value loss


def test_huber_value_loss_is_torch_smooth_l1_over_the_valid_samples():
    values = torch.tensor([0.0, 0.5, 3.0, -2.0, 10.0, 0.2])
    returns = torch.tensor([0.3, -0.4, 0.0, 1.5, 10.5, 100.0])
    old = torch.tensor([0.1, 0.4, 2.0, -1.0, 9.0, 0.0])
    weights = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # the last sample is invalid
    minibatch = Minibatch.of({name: torch.zeros(6) for name in SAMPLE_FIELDS} | {
        "values": old, "returns": returns, "weights": weights})
    valid = weights > 0
    expected = F.smooth_l1_loss(values[valid], returns[valid])  # beta 1: Huber with delta 1
    assert float(value_loss(values, minibatch, None, "huber")) == pytest.approx(float(expected), rel=1e-6)
    # Clipped around the old values: the larger of the two losses per sample, as for the squared error.
    clipped = old + torch.clamp(values - old, -0.2, 0.2)
    per_sample = torch.maximum(F.smooth_l1_loss(values, returns, reduction="none"),
                               F.smooth_l1_loss(clipped, returns, reduction="none"))
    assert float(value_loss(values, minibatch, 0.2, "huber")) == pytest.approx(float(per_sample[valid].mean()))
    assert float(value_loss(values, minibatch, None)) == pytest.approx(
        float(0.5 * (values - returns)[valid].square().mean()))  # the default is unchanged


# ---------------------------------------------------------------------------- Monte-Carlo targets


def test_monte_carlo_targets_are_gae_with_lambda_one():
    """montecarlo-ppo's value targets: G_t = r_t + gamma G_{t+1} to the episode's end (bootstrapped
    from V of the next state where the rollout cuts it: a time limit, the rollout's end), and the
    advantages G_t - V(s_t)."""
    generator = torch.Generator().manual_seed(3)
    rewards, values, next_values = (torch.randn(T, N, generator=generator) for _ in range(3))
    terminated = flags(0.2, generator)
    truncated = flags(0.15, generator) & ~terminated
    # As the rollout stores them: within an episode the next state's value is V(s_{t+1}).
    within = ~(terminated | truncated)
    next_values[:-1] = torch.where(within[:-1], values[1:], next_values[:-1])
    gamma = 0.9
    advantages, returns = gae(rewards, values, next_values, terminated, truncated, gamma, 1.0)
    for n in range(N):
        following = 0.0  # G_{t+1}
        for t in reversed(range(T)):
            if terminated[t, n]:
                following = 0.0
            elif truncated[t, n] or t == T - 1:
                following = float(next_values[t, n])
            g = float(rewards[t, n]) + gamma * following
            assert float(returns[t, n]) == pytest.approx(g, abs=1e-5)
            assert float(advantages[t, n]) == pytest.approx(g - float(values[t, n]), abs=1e-5)
            following = g


# ---------------------------------------------------------------------------- advantages recomputed


def _config(**ppo: object) -> Config:
    cfg = Config()
    cfg.rollout.num_envs, cfg.rollout.num_steps = N, T
    cfg.rollout.gamma, cfg.rollout.gae_lambda = 0.9, 0.8
    for key, value in ppo.items():
        setattr(cfg.ppo, key, value)
    return cfg


def _batch(agent: Agent, cfg: Config, seed: int = 1) -> Batch:
    """A batch as the loop builds it: the acting agent's values and log-probabilities, next values
    within the rollout, GAE advantages and returns; random episode ends."""
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, 4, generator=generator)
    with torch.no_grad():
        policy_out, values = agent(obs)
    actions = torch.multinomial(torch.softmax(policy_out, -1), 1, generator=generator)[:, 0]
    log_probs = agent.head.log_prob(policy_out, actions)
    terminated = flags(0.15, generator)
    truncated = flags(0.1, generator) & ~terminated
    rewards = torch.rand(T, N, generator=generator) + 0.5
    v = time_major(values, T)
    next_values = torch.randn(T, N, generator=generator)  # where the next state is not in the batch
    within = ~(terminated | truncated)
    next_values[:-1] = torch.where(within[:-1], v[1:], next_values[:-1])
    advantages, returns = gae(rewards, v, next_values, terminated, truncated, cfg.rollout.gamma,
                              cfg.rollout.gae_lambda)
    weights = torch.ones(B)
    weights[4] = 0.0  # one invalid sample
    return Batch(obs=obs, actions=actions, log_probs=log_probs, values=values, advantages=advantages.reshape(-1),
                 returns=returns.reshape(-1), weights=weights, policy_outputs=policy_out,
                 rewards=rewards.reshape(-1), terminated=terminated.reshape(-1), truncated=truncated.reshape(-1),
                 next_values=next_values.reshape(-1))


def _reference_advantages(critic_values: torch.Tensor, batch: Batch, gamma: float, lam: float):
    """``(advantages [B], returns [B])`` with the new values ``[B]``: the next state's new value where
    it is the rollout's next observation, else the rollout's stored bootstrap (Python loops)."""
    v = critic_values.reshape(T, N).tolist()
    stored = batch.next_values.reshape(T, N).tolist()
    term, trunc = batch.terminated.reshape(T, N).tolist(), batch.truncated.reshape(T, N).tolist()
    nv = [[stored[t][n] if t == T - 1 or term[t][n] or trunc[t][n] else v[t + 1][n] for n in range(N)]
          for t in range(T)]
    advantages = reference_gae(batch.rewards.reshape(T, N).tolist(), v, nv, term, trunc, gamma, lam)
    a = torch.tensor(advantages).reshape(-1)
    return a, a + critic_values


def test_recomputed_advantages_use_the_current_critic():
    torch.manual_seed(0)
    cfg = _config()
    agent = Agent(OBS, ACTIONS, cfg.model, cfg.env)
    batch = _batch(agent, cfg)
    # With the acting critic, recomputing gives the loop's own advantages and returns back.
    same = recompute_advantages(agent, batch.as_dict(), T, cfg.rollout.gamma, cfg.rollout.gae_lambda)
    torch.testing.assert_close(same["advantages"], batch.advantages, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(same["returns"], batch.returns, atol=1e-6, rtol=1e-6)
    with torch.no_grad():  # the critic moves
        for p in agent.critic_trunk.parameters():
            p.add_(0.3 * torch.randn_like(p))
        new_values = agent(batch.obs)[1]
    data = recompute_advantages(agent, batch.as_dict(), T, cfg.rollout.gamma, cfg.rollout.gae_lambda)
    expected_advantages, expected_returns = _reference_advantages(new_values, batch, 0.9, 0.8)
    torch.testing.assert_close(data["advantages"], expected_advantages, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(data["returns"], expected_returns, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(data["advantages"], batch.advantages, atol=1e-3)  # the comparison can fail
    values = time_major(batch.values, T)
    fresh = refreshed_next_values(values, time_major(batch.next_values, T), time_major(batch.terminated, T),
                                  time_major(batch.truncated, T))
    assert torch.equal(fresh, time_major(batch.next_values, T))  # the acting values: the rollout's bootstraps


def test_minimal_ppo_update_equals_a_plain_torch_reference():
    """minimal-ppo's update (shared trunk, one combined loss with the Huber value loss, full batch,
    advantages recomputed before every epoch, no normalization) against the same written out:
    per epoch GAE with the current critic, then -E[min(r A, clip(r) A)] + E[smooth_l1(V, R)] and
    a torch.optim.Adam step."""
    torch.manual_seed(0)
    cfg = _config(update_epochs=4, minibatch_size=B, clip_coef=0.1, anneal_clip=False, anneal_lr=False,
                  learning_rate=3e-2, ent_coef=0.0, vf_coef=1.0, max_grad_norm=None, norm_adv=False,
                  adam_eps=1e-8, value_loss="huber", recompute_advantages=True)
    cfg.model.hidden_sizes, cfg.model.activation, cfg.model.shared_trunk = [32], "relu", True
    agent = Agent(OBS, ACTIONS, cfg.model, cfg.env)
    twin = Agent(OBS, ACTIONS, cfg.model, cfg.env)
    twin.load_state_dict(agent.state_dict())
    batch = _batch(agent, cfg)
    algo = PPO(agent, cfg, "eager")
    assert algo.gradient_step.mode == "fast"
    stats = algo.update(batch, 0.0)

    optimizer = torch.optim.Adam(twin.parameters(), lr=3e-2, eps=1e-8)
    valid = batch.weights > 0
    for _ in range(4):
        with torch.no_grad():
            advantages, returns = _reference_advantages(twin(batch.obs)[1], batch, 0.9, 0.8)
        policy_out, values = twin(batch.obs)
        ratio = torch.exp(twin.head.log_prob(policy_out, batch.actions) - batch.log_probs)
        surrogate = torch.minimum(ratio * advantages, torch.clamp(ratio, 0.9, 1.1) * advantages)
        loss = -surrogate[valid].mean() + F.smooth_l1_loss(values[valid], returns[valid])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for (name, a), b in zip(agent.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)
    assert stats["grad_steps"] == 4
    # Without the recomputation the same update ends elsewhere: the comparison can fail.
    torch.manual_seed(0)
    plain = Agent(OBS, ACTIONS, cfg.model, cfg.env)
    cfg.ppo.recompute_advantages = False
    PPO(plain, cfg, "eager").update(batch, 0.0)
    assert not torch.allclose(plain.value_head.weight, twin.value_head.weight, atol=1e-4)


# ---------------------------------------------------------------------------- Spinning Up's update


def separate_fit_update(algo_class: type, cfg: Config):
    """``(agent, twin, batch, algo, stats)``: an agent updated once by ``algo_class`` (PPO, PPOKL),
    its untouched twin (the same weights before the update) for the reference, and the batch."""
    agent = Agent(OBS, ACTIONS, cfg.model, cfg.env)
    twin = Agent(OBS, ACTIONS, cfg.model, cfg.env)
    twin.load_state_dict(agent.state_dict())
    batch = _batch(agent, cfg)
    algo = algo_class(agent, cfg, "eager")
    return agent, twin, batch, algo, algo.update(batch, 0.0)


def reference_optimizers(twin: Agent, batch: Batch, policy_lr: float, value_lr: float):
    """``(valid [B], policy Adam, critic Adam, advantages [B] normalized over the valid samples)``
    for a plain torch reference of a separate critic fit (epsilon 1e-8)."""
    valid = batch.weights > 0
    policy_params = [p for name, p in twin.named_parameters() if not name.startswith(CRITIC_PREFIXES)]
    critic_params = [p for name, p in twin.named_parameters() if name.startswith(CRITIC_PREFIXES)]
    a = batch.advantages[valid]
    advantages = (batch.advantages - a.mean()) / (a.var(unbiased=False).sqrt() + 1e-8)
    return (valid, torch.optim.Adam(policy_params, lr=policy_lr, eps=1e-8),
            torch.optim.Adam(critic_params, lr=value_lr, eps=1e-8), advantages)


def test_spinningup_update_equals_a_plain_torch_reference():
    """spinningup-ppo's update: up to ``update_epochs`` full-batch policy steps with the policy's
    own Adam, each taken only while the approx KL at the current parameters is at most 1.5 x
    target_kl (the step that would exceed it is not taken), then ``value_epochs`` full-batch steps
    of the critic's own Adam on 0.5 (V - R)^2; advantages normalized once over the batch."""
    torch.manual_seed(0)
    target_kl, epochs = 0.01, 80
    cfg = _config(update_epochs=epochs, minibatch_size=B, clip_coef=0.2, anneal_clip=False, anneal_lr=False,
                  learning_rate=1e-2, ent_coef=0.0, max_grad_norm=None, norm_adv=True, norm_adv_scope="batch",
                  adam_eps=1e-8, target_kl=target_kl, kl_stop="step", value_fit="separate", value_lr=3e-3,
                  value_epochs=7, value_minibatch_size=B)
    cfg.model.hidden_sizes, cfg.model.ortho_init = [16, 16], False
    agent, twin, batch, algo, stats = separate_fit_update(PPO, cfg)
    valid, policy_optimizer, critic_optimizer, advantages = reference_optimizers(twin, batch, 1e-2, 3e-3)
    steps = 0
    for _ in range(epochs):
        policy_out = twin(batch.obs)[0]
        log_ratio = twin.head.log_prob(policy_out, batch.actions) - batch.log_probs
        ratio = torch.exp(log_ratio)
        kl = ((ratio - 1) - log_ratio)[valid].mean()
        if kl > 1.5 * target_kl:
            break
        surrogate = torch.minimum(ratio * advantages, torch.clamp(ratio, 0.8, 1.2) * advantages)
        policy_optimizer.zero_grad()
        (-surrogate[valid].mean()).backward()
        policy_optimizer.step()
        steps += 1
    for _ in range(7):
        values = twin(batch.obs)[1]
        critic_optimizer.zero_grad()
        (0.5 * (values - batch.returns)[valid].square().mean()).backward()
        critic_optimizer.step()

    assert 1 < steps < epochs, "the KL stop is exercised"
    assert (stats["grad_steps"], stats["epochs"], stats["early_stop"]) == (steps, steps, 1.0)
    assert stats["value_grad_steps"] == 7
    for (name, p), q in zip(agent.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, atol=2e-5, rtol=1e-4, msg=name)
    assert set(algo.state_tensors()) >= {"optimizer.step", "value_optimizer.step"}


def test_separate_value_fit_needs_separate_networks():
    cfg = _config(value_fit="separate")
    cfg.model.shared_trunk = True
    with pytest.raises(ConfigError, match="ppo.value_fit: separate .* shares its trunk"):
        PPO(Agent(OBS, ACTIONS, cfg.model, cfg.env), cfg, "eager")


def test_parameter_counts_are_said_at_the_start(tmp_path, capsys):
    args = ["train", "CartPole-v1", "--run-dir", tmp_path / "run", "--total-steps", "32",
            *[a for a in TINY if a != "--quiet"], "--log-every", "0"]
    code, _, err = run_cli(capsys, [*args, "--set", "log_parameter_counts=true"])
    assert code == 0 and "ppokit: number of parameters: pi 4,610, v 4,545" in err  # Spinning Up's CartPole counts
    code, _, err = run_cli(capsys, [*args[:2], "--run-dir", tmp_path / "run2", *args[4:]])
    assert code == 0 and not any("number of parameters" in line for line in err)
