"""Trust Region Policy Optimization (Schulman et al. 2015), as in its appendix C.

The policy takes one natural-gradient step per iteration: with ``g`` the gradient of the
surrogate ``L(theta) = E[r * A]`` and ``F`` the Fisher matrix (the Hessian of the mean KL
between the acting policy and the current one, at theta_old), conjugate gradient solves
``(F + damping I) x = g`` from Fisher-vector products alone; the full step
``sqrt(2 max_kl / x'Fx) * x`` is then shrunk by ``backtrack_coef`` until the exact mean KL is
at most ``max_kl`` and the surrogate improved. When no step passes, the policy keeps its old
parameters, bit for bit. The value function is fitted separately: minibatch Adam
(:class:`CriticFit`), or with ``value_optimizer: lbfgs`` the original's L-BFGS on the whole batch
(:class:`LBFGSCriticFit`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ppokit import distributed
from ppokit.algos.common import (
    CriticFit,
    LBFGSCriticFit,
    actor_prefixes,
    check_critic_fit,
    global_weighted_mean,
    importance_ratio,
    mean_kl,
    policy_change,
    require_separate_critic,
)
from ppokit.algos.registry import AlgoSpec, SectionCheck
from ppokit.batch import Minibatch, normalize_advantages, weighted_mean
from ppokit.validation import in_unit_interval, non_negative, one_of, positive, positive_int

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.batch import Batch

log = logging.getLogger("ppokit")


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iterations: int, tolerance: float = 1e-10
) -> torch.Tensor:
    """Solve ``A x = b`` for a symmetric positive-definite ``A`` given only ``matvec(v) = A v``.

    ``b [D]``; at most ``iterations`` steps (exact after D in exact arithmetic), stopping early once
    the squared residual is below ``tolerance``. Returns ``x [D]``, starting from zero. ``b [K, D]``
    solves K independent systems (a population's agents, :mod:`ppokit.fast.stacked`), each row
    stopping on its own."""
    batched = b.dim() == 2

    def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum(-1, keepdim=True) if batched else u @ v

    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_sq = dot(residual, residual)
    for _ in range(iterations):
        going = residual_sq >= tolerance  # 0-dim, or [K, 1] per system
        if not bool(going.any()):
            break
        a_direction = matvec(direction)
        alpha = residual_sq / dot(direction, a_direction)
        new_x, new_residual = x + alpha * direction, residual - alpha * a_direction
        new_residual_sq = dot(new_residual, new_residual)
        new_direction = new_residual + (new_residual_sq / residual_sq) * direction
        if batched:  # the systems that have converged keep their solution
            new_x, new_residual = torch.where(going, new_x, x), torch.where(going, new_residual, residual)
            new_direction = torch.where(going, new_direction, direction)
            new_residual_sq = torch.where(going, new_residual_sq, residual_sq)
        x, residual, direction, residual_sq = new_x, new_residual, new_direction, new_residual_sq
    return x


def fisher_vector_product(
    kl_fn: Callable[[torch.Tensor], torch.Tensor], flat_params: torch.Tensor, damping: float | torch.Tensor,
    samples: float | torch.Tensor = 1.0,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (H + damping I) v`` with ``H`` the Hessian of ``kl_fn`` at ``flat_params [D]``.

    For ``kl_fn(theta) = E[KL(pi_old || pi_theta)]`` at theta = theta_old, ``H`` is the Fisher
    information matrix. One backward pass builds ``grad KL`` with its graph; each product is then
    a second backward through ``grad KL . v`` (TRPO appendix C.1), averaged over processes weighted
    by their ``samples`` (the valid samples ``kl_fn`` averages over here): the Hessian of the mean KL
    over every process's samples. ``flat_params [K, D]`` with ``kl_fn`` giving one KL per row
    ``[K]`` (and ``damping`` a float or ``[K, 1]``): one product per row (the rows are independent
    agents of a population, in one process)."""
    theta = flat_params.detach().requires_grad_(True)
    (kl_grad,) = torch.autograd.grad(kl_fn(theta).sum(), theta, create_graph=True)
    batched = theta.dim() == 2

    def product(vector: torch.Tensor) -> torch.Tensor:
        inner = (kl_grad * vector).sum() if batched else kl_grad @ vector
        (hessian_vector,) = torch.autograd.grad(inner, theta, retain_graph=True)
        distributed.weighted_mean_([hessian_vector], samples)
        return hessian_vector + damping * vector

    return product


@dataclass
class TRPOConfig:
    max_kl: float = 0.01
    cg_iters: int = 10
    damping: float = 0.1
    backtrack_iters: int = 10
    backtrack_coef: float = 0.8
    value_lr: float = 1e-3
    value_epochs: int = 5
    value_minibatch_size: int = 64
    norm_adv: bool = True
    # adam: value_epochs of minibatch Adam (value_lr, value_minibatch_size). lbfgs: the original
    # TRPO's fit, L-BFGS on the whole batch for at most value_lbfgs_iters iterations.
    value_optimizer: str = "adam"
    value_lbfgs_iters: int = 25


VALUE_OPTIMIZERS = ("adam", "lbfgs")


def check_section(section: TRPOConfig, where: SectionCheck) -> None:
    name = where.name
    positive(section.max_kl, f"{name}.max_kl")
    positive_int(section.cg_iters, f"{name}.cg_iters")
    non_negative(section.damping, f"{name}.damping")
    positive_int(section.backtrack_iters, f"{name}.backtrack_iters")
    in_unit_interval(section.backtrack_coef, f"{name}.backtrack_coef", open_low=True)
    one_of(section.value_optimizer, VALUE_OPTIMIZERS, f"{name}.value_optimizer")
    positive_int(section.value_lbfgs_iters, f"{name}.value_lbfgs_iters")
    check_critic_fit(section, replace(where, active=where.active and section.value_optimizer == "adam"))


class TRPO:
    """Natural-gradient policy step with a KL line search, plus a separately fitted critic."""

    def __init__(self, agent: Agent, cfg: Any, path: str = "eager"):
        require_separate_critic(agent, "trpo")
        self.agent = agent
        self.cfg = cfg.trpo
        prefixes = actor_prefixes(agent)
        named = [(name, p) for name, p in agent.named_parameters() if name.startswith(prefixes)]
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.critic: CriticFit | LBFGSCriticFit = (
            LBFGSCriticFit(agent, self.cfg.value_lbfgs_iters) if self.cfg.value_optimizer == "lbfgs" else
            CriticFit(agent, self.cfg.value_lr, self.cfg.value_epochs, self.cfg.value_minibatch_size, path=path))

    # ------------------------------------------------------------------ the policy as a function of theta

    def flat_params(self) -> torch.Tensor:
        """The policy's parameters as one vector ``[D]`` (a copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def policy_outputs(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """``policy_out [B, P]`` of the policy with parameters ``theta [D]`` (the agent is not changed)."""
        chunks = torch.split(theta, [p.numel() for p in self.params])
        params = {name: chunk.view_as(p) for name, chunk, p in zip(self.names, chunks, self.params)}
        return torch.func.functional_call(self.agent, params, (obs,))[0]

    def surrogate_and_kl(self, theta: torch.Tensor, data: Minibatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[r * A], E[KL(pi_old || pi_theta)])`` over this process's valid samples (0-dim each)."""
        policy_out = self.policy_outputs(theta, data.obs)
        _, ratio = importance_ratio(self.agent.head, policy_out, data)
        weights = data.weights
        surrogate = weighted_mean(ratio * data.advantages, weights)
        return surrogate, mean_kl(self.agent.head, data.policy_outputs, policy_out, weights)

    def _set_params(self, theta: torch.Tensor) -> None:
        with torch.no_grad():
            for p, chunk in zip(self.params, torch.split(theta, [p.numel() for p in self.params])):
                p.copy_(chunk.view_as(p))

    # ------------------------------------------------------------------ the update

    def policy_step(self, data: Minibatch) -> dict[str, float]:
        """The natural-gradient step with line search; writes the policy only when a step is accepted."""
        c = self.cfg
        theta_old = self.flat_params()
        theta = theta_old.clone().requires_grad_(True)
        surrogate, _ = self.surrogate_and_kl(theta, data)
        (gradient,) = torch.autograd.grad(surrogate, theta)
        # Every process's surrogate and KL are means over its own valid samples: weighted by their
        # numbers, the averages over processes are the means over all the samples.
        samples = data.weights.sum()
        gradient, surrogate_old = distributed.weighted_mean_([gradient, surrogate.detach().clone()], samples)
        surrogate_old = float(surrogate_old)
        head, old_out, obs, weights = self.agent.head, data.policy_outputs, data.obs, data.weights
        fvp = fisher_vector_product(lambda t: mean_kl(head, old_out, self.policy_outputs(t, obs), weights),
                                    theta_old, c.damping, samples)
        direction = conjugate_gradient(fvp, gradient, c.cg_iters)
        curvature = float(direction @ fvp(direction))  # x'(F + damping I)x
        out = {"line_search_steps": 0.0, "line_search_accepted": 0.0, "improvement": 0.0,
               "policy_loss": -surrogate_old}
        if not (math.isfinite(curvature) and curvature > 0):
            log.warning("trpo: no step this iteration (x'Fx = %g: the surrogate gradient is zero or not finite); "
                        "the policy is unchanged", curvature)
            return out
        full_step = math.sqrt(2 * c.max_kl / curvature) * direction
        with torch.no_grad():
            for attempt in range(c.backtrack_iters):
                candidate = theta_old + c.backtrack_coef**attempt * full_step
                measured = torch.stack(self.surrogate_and_kl(candidate, data))
                new_surrogate, kl = distributed.weighted_mean_([measured], samples)[0].tolist()
                out["line_search_steps"] = float(attempt + 1)
                if kl <= c.max_kl and new_surrogate > surrogate_old:
                    self._set_params(candidate)
                    out.update(line_search_accepted=1.0, improvement=new_surrogate - surrogate_old,
                               policy_loss=-new_surrogate)
                    return out
        log.warning("trpo: the line search rejected all %d steps (KL above trpo.max_kl=%g or no improvement of the "
                    "surrogate); the policy is unchanged", c.backtrack_iters, c.max_kl)
        return out

    def update(self, batch: Batch, progress: float) -> dict[str, float]:
        """One TRPO iteration on this process's batch: the policy step, then the value fit."""
        data = Minibatch.of(batch.as_dict())
        if self.cfg.norm_adv:  # statistics over every process's batch: they all take one step
            with torch.no_grad():
                data.advantages = normalize_advantages(data.advantages, data.weights, global_weighted_mean)
        stats = self.policy_step(data)  # policy_loss: -E[r A] at the policy it leaves
        stats.update(policy_change(self.agent, batch))
        stats.update(self.critic.fit(batch))
        stats.update(clip_fraction=float("nan"), learning_rate=float("nan"))
        return stats

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.critic.state_tensors("value_optimizer")

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.critic.load_state_tensors(tensors, "value_optimizer")


ALGORITHM = AlgoSpec(
    name="trpo", section="trpo", config=TRPOConfig, make=TRPO, check=check_section,
    separate_critic=lambda section: True,
    metrics=("kl", "value_grad_steps", "line_search_steps", "line_search_accepted", "improvement"),
)
