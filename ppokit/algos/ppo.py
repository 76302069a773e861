"""PPO with the clipped surrogate (Schulman et al. 2017, eq. 7 and eq. 9).

``clip_coef: null`` optimizes the unclipped surrogate ``r * A`` (the paper's "no clipping or
penalty" row of Table 1).
"""

from __future__ import annotations

import torch

from ppokit.agent import Agent
from ppokit.algos.common import (
    GradientStep,
    actor_critic_loss,
    clipped_surrogate,
    importance_ratio,
    linear_schedule,
    policy_advantages,
    run_epochs,
    tensor_hyper,
)
from ppokit.batch import Batch, weighted_mean
from ppokit.config import Config
from ppokit.distributions import ActionHead


class PPO:
    """Epochs of minibatch Adam steps on ``-L^CLIP + c1 * L^VF - c2 * H``."""

    def __init__(self, agent: Agent, cfg: Config, compile: bool):
        self.cfg = cfg.ppo
        self.device = next(agent.parameters()).device
        self.gradient_step = GradientStep(
            agent, self.loss, max_grad_norm=self.cfg.max_grad_norm, adam_eps=self.cfg.adam_eps, compile=compile
        )

    def loss(
        self,
        head: ActionHead,
        policy_out: torch.Tensor,
        values: torch.Tensor,
        minibatch: dict[str, torch.Tensor],
        hyper: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO loss on one minibatch: ``policy_out [M, P]``, ``values [M]`` from the current agent."""
        weights = minibatch["weights"]
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

    def update(self, batch: Batch, progress: float) -> dict[str, float]:
        """One PPO update on this iteration's batch; ``progress`` in [0, 1) drives annealing."""
        c = self.cfg
        lr = linear_schedule(c.learning_rate, progress, c.anneal_lr)
        clip = linear_schedule(c.clip_coef or 0.0, progress, c.anneal_clip)
        hyper = tensor_hyper(self.device, lr=lr, clip_coef=clip)
        stats = run_epochs(self.gradient_step, batch, c.update_epochs, c.minibatch_size, hyper, c.target_kl)
        stats["learning_rate"] = lr
        if c.clip_coef is None:
            stats["clip_fraction"] = float("nan")
        return stats

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.gradient_step.state_tensors("optimizer")

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.gradient_step.load_state_tensors(tensors, "optimizer")
