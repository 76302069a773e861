"""PPO with a KL penalty instead of clipping (Schulman et al. 2017, section 4, eq. 8).

Each minibatch step maximizes ``E[r * A - beta * KL(pi_old || pi)]`` with the exact KL of the
action distributions (not a sample estimate), plus the value loss and entropy bonus of eq. 9.
With ``adaptive: true`` beta moves once per iteration, after all epochs, by the paper's rule;
with ``adaptive: false`` it stays at ``beta_init`` (the "fixed KL penalty" rows of Table 1).
``value_fit: separate`` (as for PPO): the loss is the penalized surrogate alone (and the entropy
bonus), and the critic is fitted after the policy's epochs by its own Adam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ppokit.algos.common import actor_critic_loss, importance_ratio, mean_kl, policy_change
from ppokit.algos.minibatch import MinibatchActorCritic, MinibatchConfig, check_minibatch_section
from ppokit.algos.registry import AlgoSpec, SectionCheck
from ppokit.batch import policy_advantages, weighted_mean
from ppokit.distributions import ActionHead
from ppokit.validation import positive

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.batch import Batch, Minibatch


def adapt_beta(beta: float, kl: float, kl_target: float) -> float:
    """The PPO paper's rule (section 4): halve beta when ``kl < kl_target / 1.5``, double it when
    ``kl > 1.5 * kl_target``, else keep it. ``kl`` is the mean KL after the iteration's update."""
    if kl < kl_target / 1.5:
        return beta / 2
    if kl > kl_target * 1.5:
        return beta * 2
    return beta


@dataclass
class PPOKLConfig(MinibatchConfig):
    kl_target: float = 0.01
    beta_init: float = 1.0
    adaptive: bool = True


def check_section(section: PPOKLConfig, where: SectionCheck) -> None:
    check_minibatch_section(section, where)
    positive(section.kl_target, f"{where.name}.kl_target")
    positive(section.beta_init, f"{where.name}.beta_init")


def penalized_loss(
    cfg: PPOKLConfig,
    head: ActionHead,
    policy_out: torch.Tensor,
    values: torch.Tensor,
    minibatch: Minibatch,
    hyper: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Penalized loss on one minibatch: ``policy_out [M, P]``, ``values [M]`` from the current
    agent; ``minibatch.policy_outputs [M, P]`` is the acting policy; ``hyper["beta"]`` is a float
    (a 0-dim tensor when compiled). A population's ``[K, M, ...]`` gives one loss per agent
    ``[K]``, with ``beta`` and the coefficients of ``cfg`` as ``[K]`` tensors
    (:mod:`ppokit.fast.stacked`)."""
    weights = minibatch.weights
    log_ratio, ratio = importance_ratio(head, policy_out, minibatch)
    advantages = policy_advantages(minibatch, cfg.norm_adv)
    kl = mean_kl(head, minibatch.policy_outputs, policy_out, weights)
    policy_loss = -weighted_mean(ratio * advantages, weights) + hyper["beta"] * kl
    return actor_critic_loss(
        policy_loss, head, policy_out, values, minibatch, log_ratio,
        vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef, kl=kl,
    )


class PPOKL(MinibatchActorCritic):
    """Epochs of minibatch Adam steps on ``-E[r A] + beta * E[KL] + c1 * L^VF - c2 * H``."""

    cfg: PPOKLConfig

    def __init__(self, agent: Agent, cfg: Any, path: str = "eager"):
        super().__init__(agent, cfg.ppo_kl, path, name="ppo_kl")
        # Algorithm state, saved in checkpoints. float64 so that halving and doubling stay exact.
        self.beta = torch.tensor(self.cfg.beta_init, dtype=torch.float64)

    def loss(
        self,
        head: ActionHead,
        policy_out: torch.Tensor,
        values: torch.Tensor,
        minibatch: Minibatch,
        hyper: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return penalized_loss(self.loss_cfg, head, policy_out, values, minibatch, hyper)

    def hyperparameters(self, progress: float) -> dict[str, float]:
        return {**super().hyperparameters(progress), "beta": float(self.beta)}

    def after_epochs(self, batch: Batch, hyper: dict[str, float], stats: dict[str, float]) -> None:
        """If adaptive, the beta rule on the exact mean KL between the acting policy and the updated
        one, averaged over processes. Reports ``beta`` (the coefficient this update used) and ``kl``
        (the KL that moves it)."""
        kl = policy_change(self.agent, batch)["kl"]
        if self.cfg.adaptive:
            self.beta.fill_(adapt_beta(hyper["beta"], kl, self.cfg.kl_target))
        stats.update(beta=hyper["beta"], kl=kl, clip_fraction=float("nan"))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**super().state_tensors(), "beta": self.beta}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state_tensors(tensors)
        self.beta.copy_(tensors["beta"])


ALGORITHM = AlgoSpec(
    name="ppo-kl", section="ppo_kl", config=PPOKLConfig, make=PPOKL, check=check_section,
    metrics=("grad_norm", "epochs", "grad_steps", "beta", "kl"),
)
