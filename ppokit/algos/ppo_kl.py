"""PPO with a KL penalty instead of clipping (Schulman et al. 2017, section 4, eq. 8).

Each minibatch step maximizes ``E[r * A - beta * KL(pi_old || pi)]`` with the exact KL of the
action distributions (not a sample estimate), plus the value loss and entropy bonus of eq. 9.
With ``adaptive: true`` beta moves once per iteration, after all epochs, by the paper's rule;
with ``adaptive: false`` it stays at ``beta_init`` (the "fixed KL penalty" rows of Table 1).
"""

from __future__ import annotations

import torch

from ppokit.agent import Agent
from ppokit.algos.common import (
    GradientStep,
    actor_critic_loss,
    hyperparameters,
    importance_ratio,
    linear_schedule,
    mean_kl,
    policy_advantages,
    policy_change,
    run_epochs,
)
from ppokit.batch import Batch, weighted_mean
from ppokit.config import Config
from ppokit.distributions import ActionHead


def adapt_beta(beta: float, kl: float, kl_target: float) -> float:
    """The PPO paper's rule (section 4): halve beta when ``kl < kl_target / 1.5``, double it when
    ``kl > 1.5 * kl_target``, else keep it. ``kl`` is the mean KL after the iteration's update."""
    if kl < kl_target / 1.5:
        return beta / 2
    if kl > kl_target * 1.5:
        return beta * 2
    return beta


class PPOKL:
    """Epochs of minibatch Adam steps on ``-E[r A] + beta * E[KL] + c1 * L^VF - c2 * H``."""

    def __init__(self, agent: Agent, cfg: Config, compile: bool):
        self.agent = agent
        self.cfg = cfg.ppo_kl
        # Algorithm state, saved in checkpoints. float64 so that halving and doubling stay exact.
        self.beta = torch.tensor(self.cfg.beta_init, dtype=torch.float64)
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
        """Penalized loss on one minibatch: ``policy_out [M, P]``, ``values [M]`` from the current
        agent; ``minibatch["policy_outputs"] [M, P]`` is the acting policy; ``hyper["beta"]`` is a
        float (a 0-dim tensor when compiled)."""
        weights = minibatch["weights"]
        log_ratio, ratio = importance_ratio(head, policy_out, minibatch)
        advantages = policy_advantages(minibatch, self.cfg.norm_adv)
        kl = mean_kl(head, minibatch["policy_outputs"], policy_out, weights)
        policy_loss = -weighted_mean(ratio * advantages, weights) + hyper["beta"] * kl
        return actor_critic_loss(
            policy_loss, head, policy_out, values, minibatch, log_ratio,
            vf_coef=self.cfg.vf_coef, ent_coef=self.cfg.ent_coef, kl=kl,
        )

    def update(self, batch: Batch, progress: float) -> dict[str, float]:
        """One iteration: the epochs with the current beta, then (if adaptive) the beta rule on the
        exact mean KL between the acting policy and the updated one, averaged over processes.

        Reports ``beta`` (the coefficient this update used) and ``kl`` (the KL that moves it)."""
        c = self.cfg
        lr = linear_schedule(c.learning_rate, progress, c.anneal_lr)
        beta = float(self.beta)
        hyper = hyperparameters(lr=lr, beta=beta)
        stats = run_epochs(self.gradient_step, batch, c.update_epochs, c.minibatch_size, hyper)
        kl = policy_change(self.agent, batch)["kl"]
        if c.adaptive:
            self.beta.fill_(adapt_beta(beta, kl, c.kl_target))
        stats.update(learning_rate=lr, beta=beta, kl=kl, clip_fraction=float("nan"))
        return stats

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**self.gradient_step.state_tensors("optimizer"), "beta": self.beta}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.gradient_step.load_state_tensors(tensors, "optimizer")
        self.beta.copy_(tensors["beta"])
