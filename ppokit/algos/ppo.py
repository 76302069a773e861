"""PPO with the clipped surrogate (Schulman et al. 2017, eq. 7 and eq. 9).

``clip_coef: null`` optimizes the unclipped surrogate ``r * A`` (the paper's "no clipping or
penalty" row of Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ppokit.algos.common import (
    STATS_KEY,
    actor_critic_loss,
    approx_kl,
    clipped_surrogate,
    importance_ratio,
    linear_schedule,
    masked_mean,
    normalize_advantages,
    policy_advantages,
)
from ppokit.algos.minibatch import MinibatchActorCritic, MinibatchConfig, check_minibatch_section
from ppokit.algos.registry import AlgoSpec, SectionCheck
from ppokit.batch import weighted_mean
from ppokit.distributions import ActionHead
from ppokit.validation import positive

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.batch import Batch


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

    def __init__(self, agent: Agent, cfg: Any, compile: bool):
        super().__init__(agent, cfg.ppo, compile, loss_gradients=self.loss_gradients)
        self.target_kl = cfg.ppo.target_kl

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

    def loss_gradients(
        self,
        head: ActionHead,
        policy_out: torch.Tensor,
        values: torch.Tensor,
        minibatch: dict[str, torch.Tensor],
        hyper: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The gradient of :meth:`loss` with respect to ``policy_out [M, P]`` and ``values [M]``,
        derived by hand (no autograd graph; the fast path), plus the same statistics.

        With w the mean weights and A the (normalized) advantages, per sample:
        ``dL/dlog_prob = -w * A * r`` where the unclipped term is the minimum (or r is inside
        the clip range), else 0; ``dL/dentropy = -ent_coef * w``; ``dL/dV = vf_coef * w * (V - R)``
        (or through the clipped value when that term is the larger).
        """
        mean_weights = minibatch["mean_weights"]
        log_prob, entropy, cache = head.terms(policy_out, minibatch["actions"])
        log_ratio = log_prob - minibatch["log_probs"]
        ratio = torch.exp(log_ratio)
        if not self.cfg.norm_adv:
            advantages = minibatch["advantages"]
        elif "normalized_advantages" in minibatch:  # precomputed when the minibatch is the batch
            advantages = minibatch["normalized_advantages"]
        else:
            advantages = normalize_advantages(minibatch["advantages"], mean_weights, mean_fn=masked_mean)
        unclipped = ratio * advantages
        coef_log_prob = -mean_weights * unclipped
        if self.cfg.clip_coef is not None:
            c = hyper["clip_coef"]
            clipped_ratio = torch.clamp(ratio, 1 - c, 1 + c)
            clipped = clipped_ratio * advantages
            inside = clipped_ratio == ratio
            coef_log_prob = coef_log_prob * ((unclipped < clipped) | inside)  # where the gradient flows
        grad_policy = head.terms_grad(cache, coef_log_prob, -self.cfg.ent_coef * mean_weights)

        error = values - minibatch["returns"]
        if self.cfg.clip_vloss and self.cfg.clip_coef is not None:
            old = minibatch["values"]
            c = hyper["clip_coef"]
            clipped_error = old + torch.clamp(values - old, -c, c) - minibatch["returns"]
            use_clipped = clipped_error.square() > error.square()
            moving = (values - old).abs() <= c
            squared = torch.where(use_clipped, clipped_error.square(), error.square())
            error_grad = torch.where(use_clipped, clipped_error * moving, error)
        else:
            squared, error_grad = error.square(), error
        grad_values = self.cfg.vf_coef * mean_weights * error_grad
        if not minibatch.get(STATS_KEY, True):
            return grad_policy, grad_values, {}
        if self.cfg.clip_coef is None:
            surrogate, clip_fraction = unclipped, torch.zeros((), device=ratio.device)
        else:
            surrogate = torch.minimum(unclipped, clipped)
            clip_fraction = masked_mean((~inside).float(), mean_weights)
        stats = {
            "policy_loss": -masked_mean(surrogate, mean_weights),
            "value_loss": 0.5 * masked_mean(squared, mean_weights),
            "entropy": masked_mean(entropy, mean_weights),
            "approx_kl": masked_mean(approx_kl(log_ratio), mean_weights),
            "clip_fraction": clip_fraction,
        }
        return grad_policy, grad_values, stats

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
