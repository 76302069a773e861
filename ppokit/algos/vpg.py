"""Vanilla policy gradient (Williams 1992; Sutton et al. 2000), with or without a baseline.

One Adam step per iteration on ``-E[log pi(a|s) * A]`` over the whole batch (the policy's
parameters only), then the value function is fitted on the returns (:class:`CriticFit`).

* ``baseline: value`` (default): ``A`` are the GAE advantages computed with the critic.
* ``baseline: none``: textbook REINFORCE; ``A`` are the discounted Monte-Carlo returns
  (reward-to-go) of this rollout, and no critic is trained or used. A sum that the rollout cuts
  mid-episode ends there (there is no critic to bootstrap from): keep ``rollout.num_steps`` at
  least an episode long. ``reset_return_on_reward``: each nonzero reward ends the sum too (Pong).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ppokit.advantages import discounted_returns
from ppokit.algos.common import (
    ADAM_EPS,
    CriticFit,
    GradientStep,
    actor_prefixes,
    check_critic_fit,
    global_weighted_mean,
    hyperparameters,
    linear_schedule,
    policy_change,
    require_separate_critic,
)
from ppokit.algos.registry import AlgoSpec, SectionCheck
from ppokit.batch import Minibatch, normalize_advantages, time_major, weighted_mean
from ppokit.distributions import ActionHead
from ppokit.validation import check, one_of, positive

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.batch import Batch


def reward_to_go(batch: Batch, num_steps: int, gamma: float, reset_on_reward: bool = False) -> torch.Tensor:
    """Discounted returns ``G_t = r_t + gamma * G_{t+1}`` ``[B]`` of the flat batch, restarting at
    every episode end and cut (not bootstrapped) at the end of the rollout.

    ``reset_on_reward`` (Karpathy's Pong from pixels): every step with a nonzero reward also ends
    the sum, as an episode end does (``G_t = r_t`` there): in Pong each point is a game of its own,
    and a reward is credited only to the actions since the previous point."""
    if batch.rewards is None or batch.terminated is None or batch.truncated is None:
        raise ValueError("vpg with baseline none needs the batch's rewards, terminated and truncated")
    rewards = time_major(batch.rewards, num_steps)
    zeros = torch.zeros_like(rewards)
    terminated = time_major(batch.terminated, num_steps)
    if reset_on_reward:
        terminated = terminated | (rewards != 0)
    returns = discounted_returns(rewards, zeros, terminated, time_major(batch.truncated, num_steps), gamma)
    return returns.reshape(-1)


def policy_gradient_loss(
    head: ActionHead,
    policy_out: torch.Tensor,
    values: torch.Tensor,
    minibatch: Minibatch,
    hyper: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``-E[log pi(a|s) * A]`` over the valid samples: its gradient is the policy gradient
    (the advantages are constants). ``policy_out [B, P]``; ``values`` unused."""
    log_probs = head.log_prob(policy_out, minibatch.actions)
    loss = -weighted_mean(log_probs * minibatch.advantages, minibatch.weights)
    return loss, {"policy_loss": loss.detach()}


@dataclass
class VPGConfig:
    learning_rate: float = 1e-3
    value_lr: float = 1e-3
    value_epochs: int = 5
    value_minibatch_size: int = 64
    baseline: str = "value"  # value | none
    norm_adv: bool = True
    max_grad_norm: float | None = None
    anneal_lr: bool = False  # linearly to 0 over the run (the policy's learning rate only)
    # baseline none: each nonzero reward also ends the discounted return's sum (Pong's points)
    reset_return_on_reward: bool = False


def check_section(section: VPGConfig, where: SectionCheck) -> None:
    positive(section.learning_rate, f"{where.name}.learning_rate")
    check_critic_fit(section, where)
    one_of(section.baseline, ("value", "none"), f"{where.name}.baseline")
    positive(section.max_grad_norm, f"{where.name}.max_grad_norm", optional=True)
    check(not (section.reset_return_on_reward and section.baseline != "none"),
          f"{where.name}.reset_return_on_reward: resets the Monte-Carlo return of REINFORCE; it needs "
          f"{where.name}.baseline=none (with a value baseline the advantages are GAE's)")


class VPG:
    """One policy-gradient Adam step per iteration, then the value fit (unless ``baseline: none``)."""

    def __init__(self, agent: Agent, cfg: Any, path: str = "eager"):
        self.agent = agent
        self.cfg = cfg.vpg
        if self.cfg.baseline == "value":  # the value fit must not move the policy's trunk
            require_separate_critic(agent, "vpg")
        self.gamma = cfg.rollout.gamma
        self.num_steps = cfg.rollout.num_steps
        self.policy_step = GradientStep(agent, policy_gradient_loss, max_grad_norm=self.cfg.max_grad_norm,
                                        adam_eps=ADAM_EPS, path=path, only=actor_prefixes(agent))
        self.critic = (
            CriticFit(agent, self.cfg.value_lr, self.cfg.value_epochs, self.cfg.value_minibatch_size, path=path)
            if self.cfg.baseline == "value" else None
        )

    def update(self, batch: Batch, progress: float) -> dict[str, float]:
        """One iteration: the policy step on the whole batch, then the value fit."""
        data = batch.as_dict()
        if self.critic is None:
            data["advantages"] = reward_to_go(batch, self.num_steps, self.gamma, self.cfg.reset_return_on_reward)
        if self.cfg.norm_adv:  # statistics over every process's batch: they all take one step
            data["advantages"] = normalize_advantages(data["advantages"], data["weights"], global_weighted_mean)
        lr = linear_schedule(self.cfg.learning_rate, progress, self.cfg.anneal_lr)
        hyper = hyperparameters(lr=lr)
        stats = {key: float(value) for key, value in self.policy_step.step(Minibatch.of(data), hyper).items()}
        stats.update(policy_change(self.agent, batch))
        if self.critic is not None:  # baseline none: no value_loss at all (the column stays empty)
            stats.update(self.critic.fit(batch))
        stats.update(learning_rate=lr, clip_fraction=float("nan"))
        return stats

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = self.policy_step.state_tensors("optimizer")
        if self.critic is not None:
            tensors.update(self.critic.state_tensors("value_optimizer"))
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.policy_step.load_state_tensors(tensors, "optimizer")
        if self.critic is not None:
            self.critic.load_state_tensors(tensors, "value_optimizer")


ALGORITHM = AlgoSpec(
    name="vpg", section="vpg", config=VPGConfig, make=VPG, check=check_section,
    separate_critic=lambda section: section.baseline == "value",  # REINFORCE alone may share a trunk (pixels)
    metrics=("grad_norm", "kl", "value_grad_steps"),
)
