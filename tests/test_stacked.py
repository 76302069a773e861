"""PPO's update batched over a population (ppokit.fast.stacked) against each agent's own update
(ppokit.algos.ppo on the fast path, the single-run reference) on the same fixed batches."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.agent import Agent
from ppokit.algos.ppo import PPO
from ppokit.algos.ppo_kl import PPOKL
from ppokit.algos.trpo import TRPO
from ppokit.algos.vpg import VPG
from ppokit.batch import Batch
from ppokit.config import Config
from ppokit.fast.stacked import StackedPopulation, stackable
from ppokit.loop import Learner, Member, Progress, RandomStreams

SPACES = {
    "discrete": (gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(3)),
    "box": (gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Box(-2, 2, (2,), np.float32)),
    "multidiscrete": (gym.spaces.Box(-1, 1, (5,), np.float32), gym.spaces.MultiDiscrete([2, 3])),
    "discrete-obs": (gym.spaces.Discrete(6), gym.spaces.Discrete(2)),  # one-hot inputs, no normalizer
}
B = 64


def _member(space: str, seed: int, algo_name: str = "ppo", **section: object) -> tuple[Member, Batch]:
    torch.manual_seed(seed)
    cfg = Config()
    cfg.rollout.num_envs, cfg.rollout.num_steps = 4, B // 4
    cfg.env.normalize_obs = True
    fields = getattr(cfg, algo_name.replace("-", "_"))
    for key, value in section.items():
        setattr(fields, key, value)
    observation_space, action_space = SPACES[space]
    agent = Agent(observation_space, action_space, cfg.model, cfg.env)
    if agent.obs_normalizer is not None:
        agent.obs_normalizer.update(torch.randn(100, *observation_space.shape) * 2 + 1)
    algo = {"ppo": PPO, "ppo-kl": PPOKL, "vpg": VPG, "trpo": TRPO}[algo_name](agent, cfg, "eager")
    obs = torch.as_tensor(np.stack([observation_space.sample() for _ in range(B)])) \
        if isinstance(observation_space, gym.spaces.Discrete) else torch.randn(B, *observation_space.shape)
    with torch.no_grad():
        policy_out, values = agent(obs)
        actions = agent.head.sample(policy_out)
        log_probs = agent.head.log_prob(policy_out, actions)
    batch = Batch(obs=obs, actions=actions, log_probs=log_probs + 0.3 * torch.randn(B),
                  values=values + 0.5 * torch.randn(B), advantages=torch.randn(B), returns=torch.randn(B),
                  weights=(torch.rand(B) > 0.1).float(), policy_outputs=policy_out,
                  rewards=torch.randn(B), terminated=torch.rand(B) < 0.05, truncated=torch.zeros(B, dtype=torch.bool))
    learner = Learner(cfg, agent, algo, None, None, None)  # type: ignore[arg-type]
    progress = Progress(total_iterations=4, global_batch=B, iteration=1)
    return Member(learner, progress, None, RandomStreams(torch.device("cpu"))), batch  # type: ignore[arg-type]


SWEPT = [{"clip_coef": 0.1, "ent_coef": 0.0, "learning_rate": 3e-3},
         {"clip_coef": 0.3, "ent_coef": 0.02, "learning_rate": 3e-3, "max_grad_norm": 0.2},
         {"clip_coef": 0.2, "ent_coef": 0.01, "learning_rate": 1e-3, "vf_coef": 1.0}]
SWEPT_KL = [{"beta_init": 0.3, "kl_target": 0.003, "ent_coef": 0.0, "learning_rate": 3e-3},
            {"beta_init": 3.0, "kl_target": 0.01, "ent_coef": 0.02, "learning_rate": 3e-3, "max_grad_norm": 0.2},
            {"beta_init": 1.0, "kl_target": 0.03, "ent_coef": 0.01, "learning_rate": 1e-3, "vf_coef": 1.0}]


def stacked_vs_own(space: str, algo: str, shared: dict, swept: list[dict]) -> tuple[list[Member], list[Member],
                                                                                    list[dict], list[dict]]:
    """Three agents (seeds 0-2, one set of ``swept`` values each) updated once by the stacked
    update, and their twins each by its own update as a single run does; the agents are checked
    to end with the same parameters and statistics up to rounding. Returns both and both stats."""
    def population() -> tuple[list[Member], list[Batch]]:
        pairs = [_member(space, seed, algo, **shared, **values) for seed, values in zip((0, 1, 2), swept)]
        return [m for m, _ in pairs], [b for _, b in pairs]

    members, batches = population()
    reference, _ = population()
    expected = []
    for member, batch in zip(reference, batches):
        with member.streams:
            expected.append(member.learner.algo.update(batch, 0.25))
    learners = [m.learner for m in members]
    assert stackable(learners)
    stats = StackedPopulation(learners).update(members, batches)
    for member, twin, got, want in zip(members, reference, stats, expected):
        for (name, p), (_, q) in zip(member.learner.agent.named_parameters(), twin.learner.agent.named_parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
        assert got.keys() == want.keys()
        for key in got:
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-5, nan_ok=True), key
    return members, reference, stats, expected


@pytest.mark.parametrize("space", ["discrete", "box", "multidiscrete", "discrete-obs"])
@pytest.mark.parametrize("algo, shared", [
    ("ppo", {"minibatch_size": 16, "update_epochs": 3}),
    ("ppo", {"minibatch_size": 64, "update_epochs": 2, "norm_adv_scope": "batch", "clip_vloss": True}),
    ("ppo", {"minibatch_size": 16, "update_epochs": 6, "target_kl": 0.002}),
    ("ppo", {"minibatch_size": 16, "update_epochs": 2, "value_loss": "huber", "clip_vloss": True}),
    ("ppo-kl", {"minibatch_size": 16, "update_epochs": 3}),
    ("ppo-kl", {"minibatch_size": 64, "update_epochs": 2, "norm_adv_scope": "batch", "adaptive": False}),
])
def test_stacked_minibatch_update_equals_each_agents_own(space: str, algo: str, shared: dict) -> None:
    swept = SWEPT if algo == "ppo" else SWEPT_KL
    if "target_kl" in shared:  # the agents' own targets: one is swept
        targets = (shared["target_kl"], shared["target_kl"], 0.05)
        swept = [{**v, "target_kl": t} for v, t in zip(swept, targets)]
        shared = {k: v for k, v in shared.items() if k != "target_kl"}
    members, reference, stats, expected = stacked_vs_own(space, algo, shared, swept)
    for member, twin, got, want in zip(members, reference, stats, expected):
        assert (got["epochs"], got["grad_steps"], got["early_stop"]) == \
            (want["epochs"], want["grad_steps"], want["early_stop"])
        assert float(member.learner.algo.gradient_step.adam.step) == float(twin.learner.algo.gradient_step.adam.step)
    if "target_kl" in swept[0]:
        assert {s["epochs"] for s in stats} != {6.0}, "the target-KL stop is exercised"
    if algo == "ppo-kl":
        assert [float(m.learner.algo.beta) for m in members] == [float(m.learner.algo.beta) for m in reference]
        assert len({s["beta"] for s in stats}) == 3  # each agent's own beta


@pytest.mark.parametrize("space", ["discrete", "box"])
@pytest.mark.parametrize("shared", [{"baseline": "value", "value_minibatch_size": 16, "value_epochs": 2},
                                    {"baseline": "none", "norm_adv": False}])
def test_stacked_vpg_equals_each_agents_own(space: str, shared: dict) -> None:
    swept = [{"learning_rate": 3e-3, "value_lr": 1e-3, "max_grad_norm": 0.5},
             {"learning_rate": 1e-3, "value_lr": 3e-3, "max_grad_norm": 0.1},
             {"learning_rate": 3e-3, "value_lr": 1e-3, "max_grad_norm": 0.5}]
    stats = stacked_vs_own(space, "vpg", shared, swept)[2]
    assert len({s["grad_norm"] for s in stats}) == 3


@pytest.mark.parametrize("space", ["discrete", "box", "multidiscrete"])
def test_stacked_trpo_equals_each_agents_own(space: str) -> None:
    # (a small damping makes conjugate gradient ill-conditioned: rounding then grows past 1e-4)
    swept = [{"max_kl": 0.01, "damping": 0.1, "value_lr": 1e-3},
             {"max_kl": 0.05, "damping": 0.5, "backtrack_coef": 0.5, "value_lr": 3e-3},
             {"max_kl": 1e-6, "damping": 0.1, "value_lr": 1e-3}]
    stats = stacked_vs_own(space, "trpo", {"value_minibatch_size": 16, "value_epochs": 2}, swept)[2]
    assert len({s["kl"] for s in stats}) == 3  # each agent's own bound


def test_agents_stay_views_of_the_stacked_rows_and_checkpoint_alike() -> None:
    members = [_member("discrete", seed)[0] for seed in (0, 1)]
    before = [{k: v.clone() for k, v in m.learner.agent.state_dict().items()} for m in members]
    stacked = StackedPopulation([m.learner for m in members])
    for k, member in enumerate(members):
        for name, value in member.learner.agent.state_dict().items():
            assert torch.equal(value, before[k][name]), name  # moving in changes no value
        weight = member.learner.agent.policy_head.weight
        assert weight.untyped_storage().data_ptr() == stacked.steps[0].flat_params.untyped_storage().data_ptr()
    assert not torch.equal(members[0].learner.agent.policy_head.weight, members[1].learner.agent.policy_head.weight)


def test_what_cannot_be_stacked_is_not() -> None:
    a, _ = _member("discrete", 0)
    b, _ = _member("discrete", 1, minibatch_size=32)
    c, _ = _member("box", 2)
    assert not stackable([a.learner])
    assert not stackable([a.learner, b.learner])  # the loop's shape differs
    assert not stackable([a.learner, c.learner])  # another network
    # PPO's options that the stacked update does not implement: each agent updates on its own.
    for options in ({"recompute_advantages": True}, {"value_fit": "separate"},
                    {"kl_stop": "step", "target_kl": 0.01}):
        pair = [_member("discrete", seed, **options)[0].learner for seed in (0, 1)]
        assert not stackable(pair), options
    pair = [_member("discrete", seed, kl_stop="step")[0].learner for seed in (0, 1)]  # no target_kl: no stop
    assert stackable(pair)
    huber = _member("discrete", 1, value_loss="huber")[0]
    assert stackable([huber.learner, _member("discrete", 2, value_loss="huber")[0].learner])
    assert not stackable([a.learner, huber.learner])  # the loss's form is shared


@pytest.mark.parametrize("space", ["discrete", "box", "discrete-obs"])
def test_batched_acting_forward_equals_each_agents_policy(space: str) -> None:
    members = [_member(space, seed)[0] for seed in (0, 1, 2)]
    if space != "discrete-obs":
        members[1].learner.agent.obs_normalizer.clip = 0.5  # a swept clip: per agent
    stacked = StackedPopulation([m.learner for m in members])
    stacked.begin_rollout()
    observation_space = SPACES[space][0]
    observations = [torch.as_tensor(np.stack([observation_space.sample() for _ in range(5)]))
                    if space == "discrete-obs" else torch.randn(5, *observation_space.shape) * 3 for _ in members]
    together = stacked.policy(observations)
    assert together.shape[:2] == (3, 5)
    for k, member in enumerate(members):
        with torch.no_grad():
            alone = member.learner.agent.policy(observations[k])
        torch.testing.assert_close(together[k], alone, rtol=1e-5, atol=1e-6)
