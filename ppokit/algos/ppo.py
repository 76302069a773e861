"""PPO with the clipped surrogate (Schulman et al. 2017, eq. 7 and eq. 9).

``clip_coef: null`` optimizes the unclipped surrogate ``r * A`` (the paper's "no clipping or
penalty" row of Table 1).
"""

from __future__ import annotations

import torch

from ppokit import distributed
from ppokit.agent import Agent
from ppokit.algos.common import (
    STATS_KEY,
    GradientStep,
    actor_critic_loss,
    approx_kl,
    clipped_surrogate,
    hyperparameters,
    importance_ratio,
    linear_schedule,
    masked_mean,
    normalize_advantages,
    policy_advantages,
    run_epochs,
)
from ppokit.batch import Batch, weighted_mean
from ppokit.config import Config
from ppokit.distributions import ActionHead


class PPO:
    """Epochs of minibatch Adam steps on ``-L^CLIP + c1 * L^VF - c2 * H``."""

    def __init__(self, agent: Agent, cfg: Config, compile: bool):
        self.cfg = cfg.ppo
        self.gradient_step = GradientStep(
            agent, self.loss, max_grad_norm=self.cfg.max_grad_norm, adam_eps=self.cfg.adam_eps, compile=compile,
            output_gradients=self.loss_gradients,
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

    def update(self, batch: Batch, progress: float) -> dict[str, float]:
        """One PPO update on this iteration's batch; ``progress`` in [0, 1) drives annealing."""
        c = self.cfg
        lr = linear_schedule(c.learning_rate, progress, c.anneal_lr)
        clip = linear_schedule(c.clip_coef or 0.0, progress, c.anneal_clip)
        hyper = hyperparameters(lr=lr, clip_coef=clip)
        minibatch_size = c.minibatch_size // distributed.world_size()  # global size, split over processes
        stats = run_epochs(self.gradient_step, batch, c.update_epochs, minibatch_size, hyper, c.target_kl)
        stats["learning_rate"] = lr
        if c.clip_coef is None:
            stats["clip_fraction"] = float("nan")
        return stats

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.gradient_step.state_tensors("optimizer")

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.gradient_step.load_state_tensors(tensors, "optimizer")
