"""What the algorithms share: the gradient step (loss -> grad -> clip -> Adam, optionally
compiled into one graph), the epoch/minibatch loop, and the loss terms they have in common.

An algorithm is a loss function plus, at most, its own outer step (TRPO); it never copies the
rollout, advantage or minibatch code.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch

from ppokit import distributed
from ppokit.agent import Agent
from ppokit.batch import Batch, minibatch_indices, weighted_mean
from ppokit.distributions import ActionHead
from ppokit.optim import AdamState, adam_step_, clip_by_global_norm

log = logging.getLogger("ppokit")

# loss_fn(head, policy_out [M, P], values [M], minibatch {name: [M, ...]}, hyper {name: 0-dim})
#   -> (loss 0-dim, stats {name: 0-dim})
LossFn = Callable[
    [ActionHead, torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]],
    tuple[torch.Tensor, dict[str, torch.Tensor]],
]


# ---------------------------------------------------------------------------- loss terms


def normalize_advantages(advantages: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(A - mean) / (std + 1e-8)`` over the valid samples of the minibatch, ``[M]``."""
    mean = weighted_mean(advantages, weights)
    var = weighted_mean((advantages - mean).square(), weights)
    return (advantages - mean) / (var.sqrt() + 1e-8)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: torch.Tensor | None) -> torch.Tensor:
    """Per-sample PPO objective (PPO paper eq. 7), ``[M]``; ``clip_coef=None`` is ``r * A``."""
    unclipped = ratio * advantages
    if clip_coef is None:
        return unclipped
    return torch.minimum(unclipped, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages)


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(old || new), ``(r - 1) - log r``, per sample (``[M]``)."""
    return torch.expm1(log_ratio) - log_ratio


def value_loss(
    values: torch.Tensor, minibatch: dict[str, torch.Tensor], clip_coef: torch.Tensor | None
) -> torch.Tensor:
    """``0.5 * (V - R)^2`` averaged over valid samples; clipped around the old values if asked."""
    returns, weights = minibatch["returns"], minibatch["weights"]
    squared = (values - returns).square()
    if clip_coef is not None:
        old = minibatch["values"]
        clipped = old + torch.clamp(values - old, -clip_coef, clip_coef)
        squared = torch.maximum(squared, (clipped - returns).square())
    return 0.5 * weighted_mean(squared, weights)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor) -> float:
    """``1 - Var[R - V] / Var[R]`` over valid samples (NaN when the returns are constant)."""
    mask = weights > 0
    var_returns = returns[mask].var(unbiased=False)
    if var_returns.item() == 0:
        return math.nan
    return float(1 - (returns[mask] - values[mask]).var(unbiased=False) / var_returns)


# ---------------------------------------------------------------------------- the gradient step


class GradientStep:
    """``step(minibatch, hyper)``: loss -> gradient -> all-reduce -> global-norm clip -> Adam.

    Works on the agent's own parameter tensors in place (``only`` selects a subset by name
    prefix, e.g. the critic). With ``compile=True`` the whole step is one ``torch.compile``
    graph (see docs/performance.md); if compiling fails it falls back to eager, with a warning.
    """

    def __init__(
        self,
        agent: Agent,
        loss_fn: LossFn,
        *,
        max_grad_norm: float | None,
        adam_eps: float,
        compile: bool,
        only: tuple[str, ...] | None = None,
    ):
        self.agent = agent
        self.loss_fn = loss_fn
        self.max_grad_norm = max_grad_norm
        self.adam_eps = adam_eps
        named = [(n, p) for n, p in agent.named_parameters() if only is None or n.startswith(only)]
        self.names = [n for n, _ in named]
        self.params = [p.detach() for _, p in named]  # share storage with the module
        self.adam = AdamState.zeros_like(self.params)
        # Collectives cannot live inside the compiled graph: compile only on one process.
        self.compiled = compile and not distributed.active()
        self._step = torch.compile(self._eager_step, dynamic=False) if self.compiled else self._eager_step

    def _eager_step(
        self, params: list[torch.Tensor], minibatch: dict[str, torch.Tensor], hyper: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        agent, head = self.agent, self.agent.head

        def loss(params: tuple[torch.Tensor, ...]):
            policy_out, values = torch.func.functional_call(agent, dict(zip(self.names, params)), (minibatch["obs"],))
            return self.loss_fn(head, policy_out, values, minibatch, hyper)

        grads, stats = torch.func.grad(loss, has_aux=True)(tuple(params))
        grads = distributed.mean_(list(grads))
        grads, grad_norm = clip_by_global_norm(grads, self.max_grad_norm)
        adam_step_(params, grads, self.adam, hyper["lr"], eps=self.adam_eps)
        return {**stats, "grad_norm": grad_norm}

    def step(self, minibatch: dict[str, torch.Tensor], hyper: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimizer step on a minibatch; returns the loss statistics as 0-dim tensors."""
        try:
            return self._step(self.params, minibatch, hyper)
        except Exception as error:  # noqa: BLE001  (any compiler failure -> eager)
            if not self.compiled:
                raise
            log.warning("torch.compile failed (%s); using the eager update", str(error).splitlines()[0])
            self.compiled = False
            self._step = self._eager_step
            return self._step(self.params, minibatch, hyper)

    def state_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return self.adam.tensors(prefix)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.adam.load_tensors(tensors, prefix)


def tensor_hyper(device: torch.device, **values: float) -> dict[str, torch.Tensor]:
    """Hyperparameters as 0-dim float32 tensors: changing one never recompiles the step."""
    return {k: torch.tensor(float(v), dtype=torch.float32, device=device) for k, v in values.items()}


def run_epochs(
    step: GradientStep,
    batch: Batch,
    epochs: int,
    minibatch_size: int,
    hyper: dict[str, torch.Tensor],
    target_kl: float | None = None,
) -> dict[str, float]:
    """``epochs`` passes over shuffled minibatches; stop early once an epoch's mean approx KL,
    averaged over processes, exceeds ``target_kl``. Returns mean statistics over all steps,
    plus ``epochs`` (how many ran) and ``early_stop`` (1.0 if stopped)."""
    data = batch.as_dict()
    totals: dict[str, torch.Tensor] = {}
    steps = epochs_run = 0
    stopped = False
    for _ in range(epochs):
        epoch_kl = []
        for index in minibatch_indices(len(batch), minibatch_size, batch.obs.device):
            stats = step.step({k: v[index] for k, v in data.items()}, hyper)
            for key, value in stats.items():
                totals[key] = totals[key] + value.detach() if key in totals else value.detach()
            if "approx_kl" in stats:
                epoch_kl.append(stats["approx_kl"].detach())
            steps += 1
        epochs_run += 1
        if target_kl is not None and epoch_kl:
            kl = distributed.mean_scalar(float(torch.stack(epoch_kl).mean()))
            if kl > target_kl:
                stopped = True
                break
    out = {key: float(value) / steps for key, value in totals.items()}
    out["epochs"] = float(epochs_run)
    out["early_stop"] = float(stopped)
    return out


def linear_schedule(start: float, progress: float, anneal: bool) -> float:
    """``start * (1 - progress)`` when annealing (progress in [0, 1)), else ``start``."""
    return start * (1.0 - progress) if anneal else start
