"""PPO with the clipped surrogate (Schulman et al. 2017, eq. 7 and eq. 9).

``clip_coef: null`` optimizes the unclipped surrogate ``r * A`` (the paper's "no clipping or
penalty" row of Table 1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ppokit.algos.common import (
    actor_critic_loss,
    clipped_surrogate,
    importance_ratio,
    linear_schedule,
)
from ppokit.algos.minibatch import MinibatchActorCritic, MinibatchConfig, check_minibatch_section
from ppokit.algos.registry import AlgoSpec, SectionCheck
from ppokit.batch import policy_advantages, weighted_mean
from ppokit.distributions import ActionHead
from ppokit.fast import ppo as fast_ppo
from ppokit.validation import positive

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.batch import Batch, Minibatch


@dataclass
class PPOConfig(MinibatchConfig):
    clip_coef: float | None = 0.2  # None: the unclipped surrogate
    anneal_clip: bool = False
    clip_vloss: bool = False
    target_kl: float | None = None


def check_section(section: PPOConfig, where: SectionCheck) -> None:
    check_minibatch_section(section, where)
    positive(section.clip_coef, f"{where.name}.clip_coef", optional=True)
    positive(section.target_kl, f"{where.name}.target_kl", optional=True)


class PPO(MinibatchActorCritic):
    """Epochs of minibatch Adam steps on ``-L^CLIP + c1 * L^VF - c2 * H``."""

    cfg: PPOConfig

    def __init__(self, agent: Agent, cfg: Any, path: str = "eager"):
        super().__init__(agent, cfg.ppo, path, loss_gradients=functools.partial(fast_ppo.output_gradients, cfg.ppo))
        self.target_kl = cfg.ppo.target_kl

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
            vf_coef=self.cfg.vf_coef, ent_coef=self.cfg.ent_coef,
            value_clip=clip_coef if self.cfg.clip_vloss else None, clip_fraction=clip_fraction,
        )

    def hyperparameters(self, progress: float) -> dict[str, float]:
        """The learning rate and clip coefficient, each annealed linearly to 0 if asked."""
        c = self.cfg
        return {**super().hyperparameters(progress),
                "clip_coef": linear_schedule(c.clip_coef or 0.0, progress, c.anneal_clip)}

    def after_epochs(self, batch: Batch, hyper: dict[str, float], stats: dict[str, float]) -> None:
        if self.cfg.clip_coef is None:
            stats["clip_fraction"] = float("nan")


ALGORITHM = AlgoSpec(
    name="ppo", section="ppo", config=PPOConfig, make=PPO, check=check_section,
    metrics=("grad_norm", "epochs", "grad_steps", "early_stop"),
)
