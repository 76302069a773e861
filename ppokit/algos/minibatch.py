"""What PPO and PPO-KL share: epochs of minibatch Adam steps on an actor-critic loss.

The two differ only in their loss (and PPO-KL in moving beta after the update):
:class:`MinibatchActorCritic` holds the config fields, their checks and the update loop once, so
that, e.g., the minibatch size is split over processes in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ppokit import distributed
from ppokit.algos.common import (
    CriticFit,
    GradientStep,
    LossFn,
    OutputGradFn,
    actor_prefixes,
    check_critic_fit,
    check_global_minibatch,
    global_weighted_mean,
    linear_schedule,
    per_process,
    run_epochs,
)
from ppokit.algos.registry import SectionCheck
from ppokit.batch import normalize_advantages
from ppokit.errors import ConfigError
from ppokit.validation import non_negative, one_of, positive, positive_int

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.batch import Batch, Minibatch


@dataclass
class MinibatchConfig:
    """The fields PPO and PPO-KL share."""

    learning_rate: float = 3e-4
    anneal_lr: bool = True
    update_epochs: int = 10
    minibatch_size: int = 64  # over all processes: each takes minibatch_size / world_size samples
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float | None = 0.5
    norm_adv: bool = True
    # Where the advantage statistics come from: each minibatch (CleanRL, SB3) or the whole batch
    # of every process, once per iteration (the PPO paper's code, baselines ppo1).
    norm_adv_scope: str = "minibatch"  # minibatch | batch
    adam_eps: float = 1e-5
    # joint: the value loss is a term of the one loss (vf_coef). separate: the loss is the policy's
    # alone, and after its epochs the critic is fitted by its own Adam (value_lr), value_epochs
    # passes of minibatches of value_minibatch_size (over all processes) on 0.5 (V - R)^2.
    value_fit: str = "joint"
    value_lr: float = 1e-3
    value_epochs: int = 5
    value_minibatch_size: int = 64


NORM_ADV_SCOPES = ("minibatch", "batch")
VALUE_FITS = ("joint", "separate")


def check_minibatch_section(section: MinibatchConfig, where: SectionCheck) -> None:
    """Range checks of the shared fields; the minibatch must fit the batch and split over processes."""
    name = where.name
    positive(section.learning_rate, f"{name}.learning_rate")
    positive_int(section.update_epochs, f"{name}.update_epochs")
    positive_int(section.minibatch_size, f"{name}.minibatch_size")
    check_global_minibatch(section.minibatch_size, where, "minibatch_size")
    non_negative(section.ent_coef, f"{name}.ent_coef")
    non_negative(section.vf_coef, f"{name}.vf_coef")
    positive(section.max_grad_norm, f"{name}.max_grad_norm", optional=True)
    positive(section.adam_eps, f"{name}.adam_eps")
    one_of(section.norm_adv_scope, NORM_ADV_SCOPES, f"{name}.norm_adv_scope")
    one_of(section.value_fit, VALUE_FITS, f"{name}.value_fit")
    check_critic_fit(section, replace(where, active=where.active and section.value_fit == "separate"))


def gradient_steps_per_iteration(section: Any, batch_size: int) -> int | None:
    """Minibatch steps per iteration for a minibatch algorithm's section, None for the others."""
    if not isinstance(section, MinibatchConfig):
        return None
    return section.update_epochs * -(-batch_size // section.minibatch_size)


def separate_fit(section: Any) -> bool:
    """Whether the critic has its own fit (``value_fit: separate``; a section without the field: no)."""
    return getattr(section, "value_fit", "joint") == "separate"


def loss_config(section: MinibatchConfig) -> MinibatchConfig:
    """The section as the loss reads it: ``vf_coef`` 0 when the critic has its own fit (``value_fit: separate``)."""
    return replace(section, vf_coef=0.0) if separate_fit(section) else section


class MinibatchActorCritic:
    """``update_epochs`` passes of shuffled minibatch Adam steps on :meth:`loss` (joint actor and
    critic), or, with ``value_fit: separate``, on the policy's loss alone followed by the critic's
    own fit (:class:`CriticFit`).

    Subclasses give :meth:`loss` (and optionally ``loss_gradients``, its hand-derived gradient
    with respect to the network outputs), :meth:`hyperparameters` for this iteration, and may
    act on the result in :meth:`after_epochs`. Their loss reads the value coefficient from
    :attr:`loss_cfg` (``vf_coef`` 0 when the critic has its own fit).
    """

    target_kl: float | None = None  # stop the epochs once the approx KL exceeds it (PPO)
    kl_stop: str = "epoch"  # how target_kl stops them (run_epochs' kl_stop)

    def __init__(self, agent: Agent, section: MinibatchConfig, path: str,
                 loss_gradients: OutputGradFn | None = None, only: tuple[str, ...] | None = None,
                 *, name: str = "ppo"):
        """``only``: the gradient step moves only the parameters with these name prefixes (all
        when None; the policy's with ``value_fit: separate``); ``loss_gradients``: the loss's
        gradient by hand (see :class:`GradientStep`), reading :func:`loss_config`'s section;
        ``name``: the section's name in messages."""
        separate = separate_fit(section)
        if separate and agent.shared_trunk:
            raise ConfigError(
                f"{name}.value_fit: separate fits the critic apart from the policy and needs separate actor and "
                "critic networks, but this agent shares its trunk (model.shared_trunk, or an image agent built without "
                "Agent(..., separate_critic=True)); use "
                f"model.shared_trunk=false or {name}.value_fit=joint")
        self.agent = agent
        self.cfg = section
        self.loss_cfg = loss_config(section)
        loss: LossFn = self.loss
        self.gradient_step = GradientStep(
            agent, loss, max_grad_norm=section.max_grad_norm, adam_eps=section.adam_eps, path=path,
            output_gradients=loss_gradients, only=actor_prefixes(agent) if separate and only is None else only)
        self.critic = CriticFit(agent, section.value_lr, section.value_epochs, section.value_minibatch_size,
                                path=path) if separate else None

    def loss(self, head: Any, policy_out: torch.Tensor, values: torch.Tensor, minibatch: Minibatch,
             hyper: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def hyperparameters(self, progress: float) -> dict[str, float]:
        """This iteration's hyperparameters (``lr`` at least); ``progress`` in [0, 1)."""
        return {"lr": linear_schedule(self.cfg.learning_rate, progress, self.cfg.anneal_lr)}

    def after_epochs(self, batch: Batch, hyper: dict[str, float], stats: dict[str, float]) -> None:
        """Called once per iteration after the epochs, with their statistics (updated in place)."""

    def refresh(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """New advantages and returns for the next epoch (``run_epochs``' refresh); only called
        when :attr:`refreshes` is True."""
        raise NotImplementedError

    refreshes: bool = False  # recompute the advantages before every epoch but the first (PPO's option)

    def _refresh_normalized(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`refresh`, then the advantages normalized over every process's batch (``norm_adv_scope: batch``)."""
        data = self.refresh(data)
        return {**data, "advantages": normalize_advantages(data["advantages"], data["weights"],
                                                           mean_fn=global_weighted_mean)}

    def update(self, batch: Batch, progress: float) -> dict[str, float]:
        """One iteration: the epochs over this process's batch, then :meth:`after_epochs`."""
        hyper = self.hyperparameters(progress)
        minibatch_size = per_process(self.cfg.minibatch_size)
        normalized = self.cfg.norm_adv and self.cfg.norm_adv_scope == "batch"
        if normalized:  # once, over every process's batch; the minibatches then use these as they are
            batch = replace(batch, advantages=normalize_advantages(batch.advantages, batch.weights,
                                                                   mean_fn=global_weighted_mean))
        refresh = None if not self.refreshes else self._refresh_normalized if normalized else self.refresh
        stats = run_epochs(self.gradient_step, batch, self.cfg.update_epochs, minibatch_size, hyper, self.target_kl,
                           advantages_normalized=normalized, kl_stop=self.kl_stop, refresh=refresh,
                           normalize_over_processes=self.cfg.norm_adv and distributed.active())
        stats["learning_rate"] = hyper["lr"]
        self.after_epochs(batch, hyper, stats)
        if self.critic is not None:  # value_fit separate: its value_loss replaces the policy step's report
            stats.update(self.critic.fit(batch))
        return stats

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = self.gradient_step.state_tensors("optimizer")
        if self.critic is not None:
            tensors.update(self.critic.state_tensors("value_optimizer"))
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.gradient_step.load_state_tensors(tensors, "optimizer")
        if self.critic is not None:
            self.critic.load_state_tensors(tensors, "value_optimizer")
