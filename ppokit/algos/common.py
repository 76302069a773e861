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
from ppokit.batch import Batch
from ppokit.distributions import ActionHead
from ppokit.optim import AdamState, adam_step_, clip_by_global_norm_

log = logging.getLogger("ppokit")

# loss_fn(head, policy_out [M, P], values [M], minibatch {name: [M, ...]}, hyper {name: 0-dim})
#   -> (loss 0-dim, stats {name: 0-dim})
LossFn = Callable[
    [ActionHead, torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]],
    tuple[torch.Tensor, dict[str, torch.Tensor]],
]
# output_gradients(same arguments) -> (dLoss/dpolicy_out [M, P], dLoss/dvalues [M], stats): the
# same loss differentiated by hand, which skips autograd for the loss (optional, faster).
OutputGradFn = Callable[
    [ActionHead, torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]],
    tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
]


# ---------------------------------------------------------------------------- loss terms


def masked_mean(x: torch.Tensor, mean_weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [M]`` over the valid samples, given ``mean_weights [M]`` (weights / their sum,
    which :class:`GradientStep` puts in every minibatch as ``"mean_weights"``). One dot product."""
    return torch.dot(x, mean_weights)


def normalize_advantages(advantages: torch.Tensor, mean_weights: torch.Tensor) -> torch.Tensor:
    """``(A - mean) / (std + 1e-8)`` over the valid samples of the minibatch, ``[M]``."""
    centered = advantages - masked_mean(advantages, mean_weights)
    return centered / (masked_mean(centered.square(), mean_weights).sqrt() + 1e-8)


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
    returns = minibatch["returns"]
    squared = (values - returns).square()
    if clip_coef is not None:
        old = minibatch["values"]
        clipped = old + torch.clamp(values - old, -clip_coef, clip_coef)
        squared = torch.maximum(squared, (clipped - returns).square())
    return 0.5 * masked_mean(squared, minibatch["mean_weights"])


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
    prefix, e.g. the critic). Three ways to get the gradient, same result (tests compare them):

    * ``manual`` (default when the agent is an MLP actor-critic with tanh/ReLU): the forward pass
      keeps its activations without an autograd graph, autograd differentiates only the loss
      with respect to the network outputs, and :meth:`Agent.backward_cached` does the rest with
      one matrix product per layer. About 2x cheaper than autograd for small networks, where
      per-operation overhead, not arithmetic, dominates.
    * ``autograd``: plain ``torch.autograd.grad`` through the module (CNNs, other activations).
    * ``compile``: ``torch.func.grad`` of a functional call, the whole step in one
      ``torch.compile`` graph; pays off only for long runs (compiling takes seconds) and falls
      back to the eager path, with a warning, if the compiler fails.
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
        output_gradients: OutputGradFn | None = None,
    ):
        self.agent = agent
        self.loss_fn = loss_fn
        self.output_gradients = output_gradients
        self.max_grad_norm = max_grad_norm
        self.adam_eps = adam_eps
        flat, offsets = agent.flat_parameters()
        named = [(n, p) for n, p in agent.named_parameters() if only is None or n.startswith(only)]
        self.names = [n for n, _ in named]
        self.parameters = [p for _, p in named]
        self.params = [p.detach() for _, p in named]  # share storage with the module
        spans = [offsets[n] for n in self.names]
        contiguous = all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        # The parameters this step updates, as one flat view when they are adjacent in the buffer.
        self.flat = flat[spans[0][0] : spans[-1][1]] if contiguous else None
        self.adam = AdamState.zeros(sum(p.numel() for p in self.params), flat.device)
        # The hand-written backward writes each gradient straight into its view of this buffer.
        self.grad = torch.zeros(sum(p.numel() for p in self.params), device=flat.device)
        sizes = [p.numel() for p in self.params]
        self.grad_views = {name: view.view_as(p) for name, view, p in
                           zip(self.names, self.grad.split(sizes), self.params)}
        self.mode = "manual" if agent.manual_backward else "autograd"
        # Collectives cannot live inside the compiled graph: compile only on one process.
        self.compiled = compile and not distributed.active()
        self._gradients = self._eager_gradients()
        if self.compiled:
            # autograd.grad does not trace: the compiled autograd path uses torch.func.grad instead.
            traced = self._manual_grads if self.mode == "manual" else self._functional_grads
            self._gradients = torch.compile(traced, dynamic=False)

    def _eager_gradients(self):
        return self._manual_grads if self.mode == "manual" else self._autograd_grads

    # -- the ways to a gradient: each returns (gradients in self.names order, stats) ----------

    def _grad_of_outputs(self, policy_out, values, minibatch, hyper):
        """``(dLoss/dpolicy_out, dLoss/dvalues, stats)``: by hand when the algorithm can, else autograd."""
        head = self.agent.head
        if self.output_gradients is not None:
            with torch.no_grad():
                return self.output_gradients(head, policy_out.detach(), values.detach(), minibatch, hyper)
        policy_out = policy_out.detach().requires_grad_()
        values = values.detach().requires_grad_()
        with torch.enable_grad():
            loss, stats = self.loss_fn(head, policy_out, values, minibatch, hyper)
        grad_policy, grad_values = torch.autograd.grad(loss, [policy_out, values], allow_unused=True)
        grad_policy = torch.zeros_like(policy_out) if grad_policy is None else grad_policy
        grad_values = torch.zeros_like(values) if grad_values is None else grad_values
        return grad_policy, grad_values, stats

    def _manual_grads(self, minibatch, hyper):
        agent = self.agent
        policy_out, values, cache = agent.forward_cached(minibatch["obs"])
        grad_policy, grad_values, stats = self._grad_of_outputs(policy_out, values, minibatch, hyper)
        agent.backward_cached(cache, grad_policy, grad_values, out=self.grad_views)
        return self.grad, stats

    def _autograd_grads(self, minibatch, hyper):
        policy_out, values = self.agent(minibatch["obs"])
        grad_policy, grad_values, stats = self._grad_of_outputs(policy_out, values, minibatch, hyper)
        grads = torch.autograd.grad([policy_out, values], self.parameters, [grad_policy, grad_values],
                                    allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params)], stats

    def _functional_grads(self, minibatch, hyper):
        agent = self.agent

        def loss(params: tuple[torch.Tensor, ...]):
            policy_out, values = torch.func.functional_call(agent, dict(zip(self.names, params)), (minibatch["obs"],))
            return self.loss_fn(agent.head, policy_out, values, minibatch, hyper)

        grads, stats = torch.func.grad(loss, has_aux=True)(tuple(self.params))
        return list(grads), stats

    @torch.no_grad()
    def _apply(self, grads: torch.Tensor | list[torch.Tensor], stats: dict, hyper: dict) -> dict[str, torch.Tensor]:
        grad = grads if isinstance(grads, torch.Tensor) else torch.cat([g.reshape(-1) for g in grads])
        distributed.mean_([grad])
        grad_norm = clip_by_global_norm_(grad, self.max_grad_norm)
        if self.flat is not None:
            adam_step_(self.flat, grad, self.adam, hyper["lr"], eps=self.adam_eps)
        else:  # parameters not adjacent in the agent's buffer: step a flat copy, then write back
            flat = torch.cat([p.reshape(-1) for p in self.params])
            adam_step_(flat, grad, self.adam, hyper["lr"], eps=self.adam_eps)
            torch._foreach_copy_(self.params, [f.view_as(p) for f, p in
                                               zip(flat.split([p.numel() for p in self.params]), self.params)])
        stats["grad_norm"] = grad_norm
        return stats

    @staticmethod
    def _with_mean_weights(minibatch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "mean_weights" in minibatch:
            return minibatch
        weights = minibatch["weights"]
        return {**minibatch, "mean_weights": weights / weights.sum().clamp(min=1.0)}

    def gradients(self, minibatch: dict[str, torch.Tensor], hyper: dict[str, float]) -> list[torch.Tensor]:
        """The loss gradient for this step's parameters, by the current path, without updating."""
        grads = self._gradients(self._with_mean_weights(minibatch), self._hyper(hyper))[0]
        if isinstance(grads, torch.Tensor):
            return [g.view_as(p).clone() for g, p in zip(grads.split([p.numel() for p in self.params]), self.params)]
        return [g.reshape(p.shape) for g, p in zip(grads, self.params)]

    def _hyper(self, hyper: dict[str, float]) -> dict:
        """Hyperparameters as the gradient function takes them: Python floats when eager (no
        tensor ops for scalars), 0-dim tensors when compiled (a new value never recompiles)."""
        if not self.compiled:
            return hyper
        return {k: torch.as_tensor(float(v), dtype=torch.float32, device=self.grad.device) for k, v in hyper.items()}

    def step(self, minibatch: dict[str, torch.Tensor], hyper: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimizer step on a minibatch; returns the loss statistics as 0-dim tensors.

        The loss functions see ``minibatch["mean_weights"]`` (``weights / weights.sum()``, for
        :func:`masked_mean`).
        """
        minibatch = self._with_mean_weights(minibatch)
        try:
            grads, stats = self._gradients(minibatch, self._hyper(hyper))
        except Exception as error:  # noqa: BLE001  (any compiler failure -> eager)
            if not self.compiled:
                raise
            log.warning("torch.compile failed (%s); using the eager update", str(error).splitlines()[0])
            self.compiled = False
            self._gradients = self._eager_gradients()
            grads, stats = self._gradients(minibatch, hyper)
        return self._apply(grads, stats, hyper)

    def state_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return self.adam.tensors(prefix)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.adam.load_tensors(tensors, prefix)


def tensor_hyper(device: torch.device, **values: float) -> dict[str, float]:
    """This step's hyperparameters (learning rate, clip coefficient, ...) as floats;
    :class:`GradientStep` turns them into tensors itself when it runs compiled."""
    return {k: float(v) for k, v in values.items()}


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
    plus ``epochs`` (how many ran) and ``early_stop`` (1.0 if stopped).

    Each epoch gathers the whole batch in a new random order once and cuts it into contiguous
    minibatch views. When one minibatch is the whole batch, the order cannot change its
    gradient, so the batch is used as it is.
    """
    data = batch.as_dict()
    size = len(batch)
    history: list[dict[str, torch.Tensor]] = []
    epochs_run = 0
    stopped = False
    for _ in range(epochs):
        if minibatch_size >= size:
            minibatches = [data]
            data.setdefault("mean_weights", data["weights"] / data["weights"].sum().clamp(min=1.0))
        else:
            order = torch.randperm(size, device=batch.obs.device)
            shuffled = {k: v[order] for k, v in data.items()}
            minibatches = [{k: v[i : i + minibatch_size] for k, v in shuffled.items()}
                           for i in range(0, size, minibatch_size)]
        first = len(history)
        for minibatch in minibatches:
            history.append(step.step(minibatch, hyper))
        epochs_run += 1
        if target_kl is not None and "approx_kl" in history[-1]:
            epoch_kl = torch.stack([h["approx_kl"] for h in history[first:]]).mean()
            if distributed.mean_scalar(float(epoch_kl)) > target_kl:
                stopped = True
                break
    out = {key: float(torch.stack([h[key] for h in history]).mean()) for key in history[0]}
    out["epochs"] = float(epochs_run)
    out["early_stop"] = float(stopped)
    return out


def linear_schedule(start: float, progress: float, anneal: bool) -> float:
    """``start * (1 - progress)`` when annealing (progress in [0, 1)), else ``start``."""
    return start * (1.0 - progress) if anneal else start
