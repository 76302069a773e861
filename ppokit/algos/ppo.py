"""PPO with the clipped surrogate (Schulman et al. 2017, eq. 7 and eq. 9).

``clip_coef: null`` optimizes the unclipped surrogate ``r * A`` (the paper's "no clipping or
penalty" row of Table 1). Options (docs/algorithms.md): ``value_loss: huber``;
``recompute_advantages`` (GAE with the current critic before every epoch); ``kl_stop: step``
(Spinning Up's stop before a step at 1.5 x ``target_kl``); ``value_fit: separate`` (the critic
fitted after the policy's epochs by its own Adam, as TRPO and VPG do).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ppokit.algos.common import (
    KL_STOPS,
    VALUE_LOSSES,
    CriticFit,
    actor_critic_loss,
    actor_prefixes,
    check_critic_fit,
    clipped_surrogate,
    importance_ratio,
    linear_schedule,
    recompute_advantages,
)
from ppokit.algos.minibatch import MinibatchActorCritic, MinibatchConfig, check_minibatch_section
from ppokit.algos.registry import AlgoSpec, SectionCheck
from ppokit.batch import policy_advantages, weighted_mean
from ppokit.distributions import ActionHead
from ppokit.errors import ConfigError
from ppokit.fast import ppo as fast_ppo
from ppokit.validation import check, one_of, positive

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.batch import Batch, Minibatch


@dataclass
class PPOConfig(MinibatchConfig):
    clip_coef: float | None = 0.2  # None: the unclipped surrogate
    anneal_clip: bool = False
    clip_vloss: bool = False
    target_kl: float | None = None
    # How target_kl stops the epochs: "epoch" (after an epoch whose mean approx KL exceeds it) or
    # "step" (Spinning Up: before a step, once the approx KL exceeds 1.5 x target_kl; not taken).
    kl_stop: str = "epoch"
    value_loss: str = "mse"  # mse: 0.5 (V - R)^2 | huber: smooth L1 (Huber, delta 1) of V - R
    recompute_advantages: bool = False  # GAE with the current critic before every epoch but the first
    # joint: the value loss is a term of the one loss (vf_coef). separate: the loss is the policy's
    # alone, and after its epochs the critic is fitted by its own Adam (value_lr), value_epochs
    # passes of minibatches of value_minibatch_size (per process) on 0.5 (V - R)^2.
    value_fit: str = "joint"
    value_lr: float = 1e-3
    value_epochs: int = 5
    value_minibatch_size: int = 64


VALUE_FITS = ("joint", "separate")


def check_section(section: PPOConfig, where: SectionCheck) -> None:
    name = where.name
    check_minibatch_section(section, where)
    positive(section.clip_coef, f"{name}.clip_coef", optional=True)
    positive(section.target_kl, f"{name}.target_kl", optional=True)
    one_of(section.kl_stop, KL_STOPS, f"{name}.kl_stop")
    one_of(section.value_loss, VALUE_LOSSES, f"{name}.value_loss")
    one_of(section.value_fit, VALUE_FITS, f"{name}.value_fit")
    separate = section.value_fit == "separate"
    check_critic_fit(section, replace(where, active=where.active and separate))
    if separate:
        check(not section.recompute_advantages,
              f"{name}.recompute_advantages: with {name}.value_fit=separate the critic does not change during the "
              f"policy's epochs, so there is nothing to recompute; use {name}.value_fit=joint or "
              f"{name}.recompute_advantages=false")
        check(section.value_loss == "mse" and not section.clip_vloss,
              f"{name}.value_fit: separate fits the critic on 0.5 (V - R)^2; {name}.value_loss=huber and "
              f"{name}.clip_vloss=true belong to the joint loss (use {name}.value_fit=joint)")


class PPO(MinibatchActorCritic):
    """Epochs of minibatch Adam steps on ``-L^CLIP + c1 * L^VF - c2 * H``."""

    cfg: PPOConfig

    def __init__(self, agent: Agent, cfg: Any, path: str = "eager"):
        section: PPOConfig = cfg.ppo
        separate = section.value_fit == "separate"
        if separate and agent.shared_trunk:
            raise ConfigError(
                "ppo.value_fit: separate fits the critic apart from the policy and needs separate actor and critic "
                "networks, but this agent shares its trunk (model.shared_trunk, or an image agent built without "
                "Agent(..., separate_critic=True)); use "
                "model.shared_trunk=false or ppo.value_fit=joint")
        # The section as the loss reads it: without the value term when the critic has its own fit.
        self.loss_cfg = replace(section, vf_coef=0.0) if separate else section
        super().__init__(agent, section, path, loss_gradients=functools.partial(fast_ppo.output_gradients,
                                                                                 self.loss_cfg),
                         only=actor_prefixes(agent) if separate else None)
        self.target_kl = section.target_kl
        self.kl_stop = section.kl_stop
        self.refreshes = section.recompute_advantages
        self.rollout = cfg.rollout
        self.critic = CriticFit(agent, section.value_lr, section.value_epochs, section.value_minibatch_size,
                                path=path) if separate else None

    def loss(
        self,
        head: ActionHead,
        policy_out: torch.Tensor,
        values: torch.Tensor,
        minibatch: Minibatch,
        hyper: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO loss on one minibatch: ``policy_out [M, P]``, ``values [M]`` from the current agent.
        :func:`ppokit.fast.ppo.output_gradients` is its gradient by hand (the fast path)."""
        weights = minibatch.weights
        log_ratio, ratio = importance_ratio(head, policy_out, minibatch)
        advantages = policy_advantages(minibatch, self.cfg.norm_adv)
        clip_coef = hyper["clip_coef"] if self.cfg.clip_coef is not None else None
        policy_loss = -weighted_mean(clipped_surrogate(ratio, advantages, clip_coef), weights)
        with torch.no_grad():
            if clip_coef is None:
                clip_fraction = torch.zeros((), device=ratio.device)
            else:
                clip_fraction = weighted_mean(((ratio - 1).abs() > clip_coef).float(), weights)
        return actor_critic_loss(
            policy_loss, head, policy_out, values, minibatch, log_ratio,
            vf_coef=self.loss_cfg.vf_coef, ent_coef=self.cfg.ent_coef,
            value_clip=clip_coef if self.cfg.clip_vloss else None, value_loss_kind=self.cfg.value_loss,
            clip_fraction=clip_fraction,
        )

    def hyperparameters(self, progress: float) -> dict[str, float]:
        """The learning rate and clip coefficient, each annealed linearly to 0 if asked."""
        c = self.cfg
        return {**super().hyperparameters(progress),
                "clip_coef": linear_schedule(c.clip_coef or 0.0, progress, c.anneal_clip)}

    def refresh(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``recompute_advantages``: GAE advantages and returns ``[B]`` with the current critic."""
        r = self.rollout
        return recompute_advantages(self.agent, data, r.num_steps, r.gamma, r.gae_lambda)

    def after_epochs(self, batch: Batch, hyper: dict[str, float], stats: dict[str, float]) -> None:
        """``value_fit: separate``: the critic's fit, after the policy's epochs (its ``value_loss``
        replaces the policy step's report)."""
        if self.cfg.clip_coef is None:
            stats["clip_fraction"] = float("nan")
        if self.critic is not None:
            stats.update(self.critic.fit(batch))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = super().state_tensors()
        if self.critic is not None:
            tensors.update(self.critic.state_tensors("value_optimizer"))
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state_tensors(tensors)
        if self.critic is not None:
            self.critic.load_state_tensors(tensors, "value_optimizer")


ALGORITHM = AlgoSpec(
    name="ppo", section="ppo", config=PPOConfig, make=PPO, check=check_section,
    metrics=("grad_norm", "epochs", "grad_steps", "early_stop"),
)
