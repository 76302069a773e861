"""The options behind the Pendulum tutorial presets (docs/tutorials.md), each against an
independent computation: the learner's reward transform ``(r + shift) * scale`` (with the reported
returns left raw), PPO-KL's separate critic fit, TRPO's L-BFGS value fit (against the closed-form
least-squares solution of a linear critic), and the Gaussian's clamped and state-dependent log-std
(with checkpoints and ONNX export of the new head)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import ppokit
from ppokit import fast
from ppokit.agent import Agent
from ppokit.algos.common import CRITIC_PREFIXES, LBFGSCriticFit
from ppokit.algos.ppo_kl import PPOKL, adapt_beta
from ppokit.batch import SAMPLE_FIELDS, Batch
from ppokit.config import Config, EnvConfig, ModelConfig
from ppokit.errors import ConfigError
from ppokit.presets import build_config
from ppokit.rollout import transformed_rewards
from tests.test_ppo_options import ACTIONS, OBS, B, reference_optimizers, separate_fit_update

BOX_OBS = gym.spaces.Box(-5.0, 5.0, (3,), np.float32)
BOX_ACTIONS = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)


# ---------------------------------------------------------------------------- the reward transform


def test_reward_transform_is_shift_then_scale_and_zero_on_reset_steps():
    rewards = np.array([[-8.0, 0.0], [-16.0, -4.0], [-2.0, -12.0]])
    valid = np.array([[True, True], [True, False], [True, True]])  # [1, 1]: a NEXT_STEP reset transition
    seen = transformed_rewards(rewards, valid, 8.0, 0.125)
    # (r + 8) / 8 by hand
    np.testing.assert_allclose(seen, [[0.0, 1.0], [-1.0, 0.0], [0.75, -0.5]])
    assert transformed_rewards(rewards, valid, 0.0, 1.0) is rewards  # the default changes nothing


def test_reward_transform_changes_what_the_learner_sees_not_the_reported_returns(tmp_path):
    """Pendulum's raw return over an episode of 200 steps lies in [-3300, 0]; with a shift of 1000
    the learner's rewards are all positive. The reported returns must stay raw."""
    common = dict(algo="ppo", total_steps=400, seed=3, rollout__num_envs=2, quiet=True, rollout__num_steps=200,
                  ppo__minibatch_size=400, ppo__update_epochs=1, eval_episodes=0, eval__every_steps=0)
    agent = ppokit.train("Pendulum-v1", run_dir=tmp_path / "shifted", env__reward_shift=1000.0,
                         env__reward_scale=0.5, **common)
    plain = ppokit.train("Pendulum-v1", run_dir=tmp_path / "plain", **common)
    shifted_return = agent.summary["train_return_last20"]
    assert -3300 < shifted_return < 0
    # The same seed acts the same in its first rollout: the reported returns are equal.
    assert shifted_return == pytest.approx(plain.summary["train_return_last20"])
    # ... but the learner saw other rewards, so it learned something else.
    assert not torch.allclose(agent.value_head.weight, plain.value_head.weight)


def test_reward_transform_is_checked():
    with pytest.raises(ConfigError, match=r"^env.reward_scale: expected a number > 0"):
        ppokit.config.validate(build_config("Pendulum-v1", sets=["env.reward_scale=0"]))


# ---------------------------------------------------------------------------- PPO-KL's separate critic fit


def test_ppo_kl_separate_value_fit_equals_a_plain_torch_reference():
    """ppo-kl with ``value_fit: separate``: ``update_epochs`` full-batch steps of the policy's own
    Adam on -E[r A] + beta E[KL(old || new)] (no value term), beta moved by the paper's rule on the
    KL after them, then ``value_epochs`` full-batch steps of the critic's own Adam on 0.5 (V - R)^2."""
    torch.manual_seed(0)
    cfg = Config()
    cfg.algo = "ppo-kl"
    cfg.rollout.num_envs, cfg.rollout.num_steps = 3, 6
    cfg.rollout.gamma, cfg.rollout.gae_lambda = 0.9, 0.8
    cfg.model.hidden_sizes, cfg.model.ortho_init = [16, 16], False
    for key, value in dict(update_epochs=6, minibatch_size=B, learning_rate=1e-2, anneal_lr=False, ent_coef=0.0,
                           max_grad_norm=None, norm_adv=True, norm_adv_scope="batch", adam_eps=1e-8, beta_init=0.5,
                           kl_target=1e-4, value_fit="separate", value_lr=3e-3, value_epochs=4,
                           value_minibatch_size=B, vf_coef=0.5).items():
        setattr(cfg.ppo_kl, key, value)
    ppokit.config.validate(cfg)
    agent, twin, batch, algo, stats = separate_fit_update(PPOKL, cfg)
    valid, policy_optimizer, critic_optimizer, advantages = reference_optimizers(twin, batch, 1e-2, 3e-3)
    old_p = torch.softmax(batch.policy_outputs, -1)

    def kl_to(logits):
        return (old_p * (old_p.log() - torch.log_softmax(logits, -1))).sum(-1)[valid].mean()

    for _ in range(6):
        logits = twin(batch.obs)[0]
        ratio = torch.exp(torch.log_softmax(logits, -1).gather(-1, batch.actions[:, None])[:, 0] - batch.log_probs)
        loss = -(ratio * advantages)[valid].mean() + 0.5 * kl_to(logits)
        policy_optimizer.zero_grad()
        loss.backward()
        policy_optimizer.step()
    with torch.no_grad():
        kl = float(kl_to(twin(batch.obs)[0]))
    for _ in range(4):
        values = twin(batch.obs)[1]
        critic_optimizer.zero_grad()
        (0.5 * (values - batch.returns)[valid].square().mean()).backward()
        critic_optimizer.step()

    assert stats["grad_steps"] == 6 and stats["value_grad_steps"] == 4
    assert stats["kl"] == pytest.approx(kl, rel=1e-4)
    assert float(algo.beta) == adapt_beta(0.5, kl, 1e-4) == 1.0  # doubled: the KL is far above the target
    for (name, p), q in zip(agent.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, atol=2e-5, rtol=1e-4, msg=name)
    assert set(algo.state_tensors()) >= {"optimizer.step", "value_optimizer.step"}


def test_ppo_kl_separate_value_fit_needs_separate_networks():
    with pytest.raises(ConfigError, match=r"^model.shared_trunk: ppo_kl.value_fit=separate"):
        ppokit.config.validate(build_config("CartPole-v1", algo="ppo-kl",
                                            sets=["ppo_kl.value_fit=separate", "model.shared_trunk=true"]))


# ---------------------------------------------------------------------------- TRPO's L-BFGS value fit


class Identity(nn.Module):
    """A critic trunk that passes the observations through: the critic is then ``V(s) = w . s + b``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_lbfgs_value_fit_reaches_the_least_squares_solution_of_a_linear_critic():
    torch.manual_seed(0)
    agent = Agent(BOX_OBS, BOX_ACTIONS, ModelConfig(hidden_sizes=[8]), EnvConfig(), networks={"critic": Identity()})
    generator = torch.Generator().manual_seed(2)
    obs = torch.randn(B, 3, generator=generator)
    returns = obs @ torch.tensor([1.5, -2.0, 0.25]) + 3.0 + 0.3 * torch.randn(B, generator=generator)
    weights = torch.ones(B)
    weights[[2, 7]] = 0.0
    returns[[2, 7]] = 1e4  # invalid samples: must not pull the fit
    fields = {name: torch.zeros(B) for name in SAMPLE_FIELDS}
    batch = Batch(**{**fields, "obs": obs, "returns": returns, "weights": weights,
                     "actions": torch.zeros(B, 2), "policy_outputs": torch.zeros(B, 4)})
    policy_before = [p.clone() for name, p in agent.named_parameters() if not name.startswith(CRITIC_PREFIXES)]

    stats = LBFGSCriticFit(agent, iterations=25).fit(batch)

    valid = weights > 0
    design = torch.cat([obs[valid], torch.ones(int(valid.sum()), 1)], dim=1).double()
    solution = torch.linalg.lstsq(design, returns[valid].double()[:, None]).solution[:, 0]  # [w, b]
    torch.testing.assert_close(agent.value_head.weight[0].double(), solution[:3], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(agent.value_head.bias[0].double(), solution[3], atol=1e-4, rtol=1e-4)
    residual = design @ solution - returns[valid].double()
    assert stats["value_loss"] == pytest.approx(float(0.5 * residual.square().mean()), rel=1e-4)
    assert 1 < stats["value_grad_steps"] <= 25 * 1.25 + 1
    after = [p for name, p in agent.named_parameters() if not name.startswith(CRITIC_PREFIXES)]
    assert all(torch.equal(x, y) for x, y in zip(policy_before, after))  # the policy is not touched
    assert all(p.grad is None for p in agent.parameters())


def test_trpo_value_optimizer_is_checked_and_lbfgs_has_no_state():
    with pytest.raises(ConfigError, match=r"^trpo.value_optimizer: expected one of adam, lbfgs"):
        ppokit.config.validate(build_config("Pendulum-v1", algo="trpo", sets=["trpo.value_optimizer=bfgs"]))
    with pytest.raises(ConfigError, match=r"^trpo.value_lbfgs_iters"):
        ppokit.config.validate(build_config("Pendulum-v1", algo="trpo", sets=["trpo.value_lbfgs_iters=0"]))
    cfg = build_config("Pendulum-v1", preset="trpo-pendulum")
    algo = ppokit.algos.ALGOS["trpo"](Agent(BOX_OBS, BOX_ACTIONS, cfg.model, cfg.env), cfg)
    assert isinstance(algo.critic, LBFGSCriticFit) and algo.state_tensors() == {}


# ---------------------------------------------------------------------------- the Gaussian's log-std


def test_log_std_is_clamped_and_its_gradient_stops_outside_the_bounds():
    agent = Agent(BOX_OBS, gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
                  ModelConfig(hidden_sizes=[8], log_std_min=-1.0, log_std_max=0.5), EnvConfig())
    with torch.no_grad():
        agent.log_std.copy_(torch.tensor([-3.0, 0.2, 4.0]))
    out = agent.policy(torch.zeros(2, 3))
    torch.testing.assert_close(out[:, 3:], torch.tensor([[-1.0, 0.2, 0.5]] * 2))
    out[:, 3:].sum().backward()
    torch.testing.assert_close(agent.log_std.grad, torch.tensor([0.0, 2.0, 0.0]))  # 2 samples; clamped: none
    assert not fast.supports(agent)  # the fast path knows only the free log-std


def test_state_dependent_std_depends_on_the_state_and_is_clamped():
    model = ModelConfig(hidden_sizes=[8], state_dependent_std=True, log_std_init=-0.5, log_std_min=-20.0,
                        log_std_max=2.0)
    torch.manual_seed(0)
    agent = Agent(BOX_OBS, BOX_ACTIONS, model, EnvConfig())
    assert agent.log_std is None and agent.log_std_head is not None
    torch.testing.assert_close(agent.log_std_head.bias, torch.full((2,), -0.5))
    obs = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]])
    log_std = agent.policy(obs)[:, 2:]
    features = agent.actor_trunk(obs)
    torch.testing.assert_close(log_std, features @ agent.log_std_head.weight.t() + agent.log_std_head.bias)
    assert not torch.allclose(log_std[0], log_std[1])  # a different state, a different std
    with torch.no_grad():
        agent.log_std_head.bias.fill_(50.0)
    assert torch.all(agent.policy(obs)[:, 2:] == 2.0)
    assert "log_std_head.weight" in dict(agent.named_parameters())


def test_state_dependent_std_saves_loads_and_exports(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from ppokit.export import export

    cfg = Config()
    cfg.env_id = "Pendulum-v1"
    cfg.model = ModelConfig(hidden_sizes=[8], state_dependent_std=True, log_std_min=-20.0, log_std_max=2.0)
    torch.manual_seed(1)
    agent = Agent(BOX_OBS, BOX_ACTIONS, cfg.model, cfg.env)
    agent.config = cfg
    with torch.no_grad():
        for p in agent.parameters():
            p.normal_()
    agent.save(str(tmp_path / "ckpt"))
    loaded = ppokit.load(str(tmp_path / "ckpt"))
    assert loaded.config.model.state_dependent_std and loaded.log_std_head is not None
    obs = np.random.default_rng(0).normal(0, 2, (50, 3)).astype(np.float32)
    torch.testing.assert_close(loaded.policy(torch.as_tensor(obs)), agent.policy(torch.as_tensor(obs)))
    out = export(loaded, tmp_path / "policy.onnx")
    actions = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"observation": obs})[0]
    np.testing.assert_allclose(actions, agent.act(obs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sets, message", [
    (["model.log_std_min=1", "model.log_std_max=0"], r"^model.log_std_min: expected a number below"),
    (["model.log_std_max=30"], r"^model.log_std_max: expected a number in \[-20.0, 20.0\] or null"),
])
def test_log_std_bounds_are_checked(sets, message):
    with pytest.raises(ConfigError, match=message):
        ppokit.config.validate(build_config("Pendulum-v1", sets=sets))


def test_std_options_need_box_actions():
    with pytest.raises(ConfigError, match=r"^model.state_dependent_std, model.log_std_min and model.log_std_max are "
                                          r"for Box actions"):
        Agent(OBS, ACTIONS, ModelConfig(state_dependent_std=True), EnvConfig())


def test_populations_update_the_new_fits_one_agent_at_a_time():
    """The stacked population update implements neither PPO-KL's separate critic fit nor TRPO's
    L-BFGS fit: agents with them update on their own (as single runs)."""
    from ppokit.fast.stacked import _own_update_only

    for preset, expected in (("pendulum-ppo1", True), ("trpo-pendulum", True), ("Pendulum-v1__trpo", False),
                             ("Pendulum-v1__ppo-kl", False)):
        cfg = build_config("Pendulum-v1", preset=preset)
        algo = ppokit.algos.ALGOS[cfg.algo](Agent(BOX_OBS, BOX_ACTIONS, cfg.model, cfg.env), cfg)
        assert _own_update_only(algo) is expected, preset
