"""What the algorithms share: the gradient step (loss -> grad -> clip -> Adam, by the fast path,
autograd, or compiled into one graph), the epoch/minibatch loop, and the loss terms they have in
common.

An algorithm is a loss function plus, at most, its own outer step (TRPO); it never copies the
rollout, advantage or minibatch code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ppokit import distributed, fast
from ppokit.advantages import gae, refreshed_next_values
from ppokit.algos.registry import SectionCheck
from ppokit.batch import Minibatch, masked_mean, minibatches, normalize_advantages, time_major, weighted_mean
from ppokit.distributions import ActionHead, approx_kl
from ppokit.errors import ConfigError
from ppokit.fast.network import backward_cached, forward_cached, gradient_targets
from ppokit.optim import AdamState, FlatLayout, adam_step_, clip_by_global_norm_
from ppokit.validation import check, fits_batch, positive, positive_int

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.batch import Batch

log = logging.getLogger("ppokit")

# Adam's epsilon for the optimizers that have no config field for it (TRPO's and VPG's).
ADAM_EPS = 1e-8

# loss_fn(head, policy_out [M, P], values [M], minibatch, hyper {name: float or 0-dim})
#   -> (loss 0-dim, stats {name: 0-dim})
LossFn = Callable[
    [ActionHead, torch.Tensor, torch.Tensor, Minibatch, dict[str, Any]],
    tuple[torch.Tensor, dict[str, torch.Tensor]],
]
# output_gradients(same arguments) -> (dLoss/dpolicy_out [M, P], dLoss/dvalues [M], stats): the
# same loss differentiated by hand, which skips autograd for the loss (optional, faster; PPO's
# is ppokit.fast.ppo.output_gradients).
OutputGradFn = Callable[
    [ActionHead, torch.Tensor, torch.Tensor, Minibatch, dict[str, Any]],
    tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
]

# GradientStep's ways to the gradient (the config's update_path resolves to one of them).
PATHS = ("eager", "fast", "autograd", "compile")


# ---------------------------------------------------------------------------- parameters

# The critic's parameters; everything else in the Agent is the policy's.
CRITIC_PREFIXES = ("critic_trunk", "value_head")


def actor_prefixes(agent: Agent) -> tuple[str, ...]:
    """Name prefixes of the policy's parameters (for ``GradientStep(only=...)``)."""
    tops = {name.split(".")[0] for name, _ in agent.named_parameters()}
    return tuple(sorted(tops - set(CRITIC_PREFIXES)))


def require_separate_critic(agent: Agent, algo: str) -> None:
    """The algorithms that fit the value function apart from the policy need two networks."""
    if agent.shared_trunk:
        raise ConfigError(
            f"algo {algo} fits the value function separately from the policy, so it needs separate actor and "
            "critic networks, but this agent shares its trunk (model.shared_trunk, or an image agent built without "
            "Agent(..., separate_critic=True)): use model.shared_trunk=false, or --algo ppo / ppo-kl"
            + (", or vpg.baseline=none (REINFORCE, no value fit)" if algo == "vpg" else "")
        )


# ---------------------------------------------------------------------------- loss terms


def global_weighted_means(columns: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """:func:`weighted_mean` of each ``[B]`` column over the valid samples of all processes, ``[C]``
    (one all-reduce of the weighted sums and the sample count: exact, however the valid samples
    are spread over the processes)."""
    sums = distributed.sum_([torch.stack([(x * weights).sum() for x in columns] + [weights.sum()])])[0]
    return sums[:-1] / sums[-1].clamp(min=1.0)


def global_weighted_mean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """:func:`weighted_mean` of ``x [B]`` over the valid samples of all processes (0-dim)."""
    return global_weighted_means([x], weights)[0]


def global_step_means(means: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``[S]`` per-step means over all processes, from this process's per-step means ``[S]`` over
    its ``counts [S]`` valid samples (each step's minibatch is split over the processes); ``means``
    as they are in one process."""
    if not distributed.active():
        return means
    sums = distributed.sum_([torch.stack([means * counts, counts])])[0]
    return sums[0] / sums[1].clamp(min=1.0)


def check_global_minibatch(size: int, where: SectionCheck, field: str) -> None:
    """A minibatch size counted over all processes: it must fit the batch of all processes and
    split evenly over them (each process takes ``size / world_size`` samples per step)."""
    if where.active:
        fits_batch(size, where.global_batch, f"{where.name}.{field}")
        check(size % where.world_size == 0,
              f"{where.name}.{field}: {size} cannot be split evenly over {where.world_size} processes")


def per_process(minibatch_size: int) -> int:
    """This process's share of a minibatch size counted over all processes."""
    return minibatch_size // distributed.world_size()


def importance_ratio(
    head: ActionHead, policy_out: torch.Tensor, samples: Minibatch | Batch
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log r, r)`` with ``r = pi(a|s) / pi_old(a|s)`` per sample, ``[M]`` each."""
    log_ratio = head.log_prob(policy_out, samples.actions) - samples.log_probs
    return log_ratio, torch.exp(log_ratio)


def mean_kl(head: ActionHead, old_out: torch.Tensor, new_out: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Exact ``E[KL(pi_old || pi)]`` over the valid samples (0-dim); outputs ``[M, P]``."""
    return weighted_mean(head.kl(old_out, new_out), weights)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: torch.Tensor | None) -> torch.Tensor:
    """Per-sample PPO objective (PPO paper eq. 7), ``[M]``; ``clip_coef=None`` is ``r * A``."""
    unclipped = ratio * advantages
    if clip_coef is None:
        return unclipped
    return torch.minimum(unclipped, torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages)


# ``value_loss`` kinds: the squared error, or the Huber loss (PyTorch's smooth L1 with beta 1).
VALUE_LOSSES = ("mse", "huber")
HUBER_DELTA = 1.0  # where the Huber loss turns from quadratic to linear


def huber(error: torch.Tensor) -> torch.Tensor:
    """Per sample ``0.5 e^2`` where ``|e| < 1``, else ``|e| - 0.5`` (``[M]`` -> ``[M]``)."""
    size = error.abs()
    return torch.where(size < HUBER_DELTA, 0.5 * error.square(), HUBER_DELTA * (size - 0.5 * HUBER_DELTA))


def value_loss(values: torch.Tensor, minibatch: Minibatch, clip_coef: torch.Tensor | float | None,
               kind: str = "mse") -> torch.Tensor:
    """``0.5 * (V - R)^2`` (``kind="huber"``: :func:`huber` of ``V - R``) averaged over valid
    samples, ``values [M]``; clipped around the old values if asked (the larger of the two losses)."""
    returns = minibatch.returns
    if kind == "huber":
        per_sample = huber(values - returns)
        if clip_coef is not None:
            old = minibatch.values
            clipped = old + torch.clamp(values - old, -clip_coef, clip_coef)
            per_sample = torch.maximum(per_sample, huber(clipped - returns))
        return masked_mean(per_sample, minibatch.mean_weights)
    squared = (values - returns).square()
    if clip_coef is not None:
        old = minibatch.values
        clipped = old + torch.clamp(values - old, -clip_coef, clip_coef)
        squared = torch.maximum(squared, (clipped - returns).square())
    return 0.5 * masked_mean(squared, minibatch.mean_weights)


def actor_critic_loss(
    policy_loss: torch.Tensor,
    head: ActionHead,
    policy_out: torch.Tensor,
    values: torch.Tensor,
    minibatch: Minibatch,
    log_ratio: torch.Tensor,
    *,
    vf_coef: float,
    ent_coef: float,
    value_clip: torch.Tensor | None = None,
    value_loss_kind: str = "mse",
    **extra_stats: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The joint loss ``policy_loss + c1 * L^VF - c2 * H`` (PPO eq. 9) and its statistics.

    ``log_ratio [M]`` gives the approx-KL statistic; ``extra_stats`` are reported as they are;
    ``value_loss_kind`` is :func:`value_loss`'s ``kind``."""
    weights = minibatch.weights
    v_loss = value_loss(values, minibatch, value_clip, value_loss_kind)
    entropy = weighted_mean(head.entropy(policy_out), weights)
    loss = policy_loss + vf_coef * v_loss - ent_coef * entropy
    stats = {
        "policy_loss": policy_loss.detach(),
        "value_loss": v_loss.detach(),
        "entropy": entropy.detach(),
        "approx_kl": weighted_mean(approx_kl(log_ratio.detach()), weights),
        **{key: value.detach() for key, value in extra_stats.items()},
    }
    return loss, stats


@torch.no_grad()
def policy_change(agent: Agent, batch: Batch) -> dict[str, float]:
    """How far the agent's policy now is from the acting one, over the valid samples of ``batch``:
    exact mean KL(old || new), the k3 approx KL, and the new entropy, each over the samples of every
    process."""
    policy_out = agent(batch.obs)[0]
    head = agent.head
    log_ratio, _ = importance_ratio(head, policy_out, batch)
    columns = [head.kl(batch.policy_outputs, policy_out), approx_kl(log_ratio), head.entropy(policy_out)]
    kl, k3, entropy = global_weighted_means(columns, batch.weights).tolist()
    return {"kl": kl, "approx_kl": k3, "entropy": entropy}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor) -> float:
    """``1 - Var[R - V] / Var[R]`` over valid samples (NaN when the returns are constant)."""
    mask = weights > 0
    var_returns = returns[mask].var(unbiased=False)
    if var_returns.item() == 0:
        return math.nan
    return float(1 - (returns[mask] - values[mask]).var(unbiased=False) / var_returns)


# ---------------------------------------------------------------------------- the gradient step


def output_gradients_by_autograd(
    loss_fn: LossFn, head: ActionHead, policy_out: torch.Tensor, values: torch.Tensor, minibatch: Minibatch,
    hyper: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(dLoss/dpolicy_out, dLoss/dvalues, stats)`` of ``loss_fn`` by autograd on the outputs alone
    (zeros where the loss does not depend on them). A population's ``[K, M, ...]`` outputs give
    one loss per agent ``[K]``: their sum's gradient is every agent's own."""
    policy_out = policy_out.detach().requires_grad_()
    values = values.detach().requires_grad_()
    with torch.enable_grad():
        loss, stats = loss_fn(head, policy_out, values, minibatch, hyper)
        grad_policy, grad_values = torch.autograd.grad(loss.sum(), [policy_out, values], allow_unused=True)
    grad_policy = torch.zeros_like(policy_out) if grad_policy is None else grad_policy
    grad_values = torch.zeros_like(values) if grad_values is None else grad_values
    return grad_policy, grad_values, stats


class GradientStep:
    """``step(minibatch, hyper)``: loss -> gradient -> all-reduce -> global-norm clip -> Adam.

    Updates the agent's parameters in place (``only`` selects a subset by name prefix, e.g. the
    critic); they move into one flat buffer that this step owns (:class:`ppokit.optim.FlatLayout`:
    each stays an ``nn.Parameter`` of its own shape, now a 64-byte-aligned view of the buffer), and
    every gradient lands in a second buffer of the same layout, so the all-reduce, the clipping and
    Adam are one operation each. A parameter belongs to at most one GradientStep. ``path`` (from
    the config's ``update_path``) picks how the gradient is computed; all give the same gradient
    (tests/test_fast_update.py):

    * ``fast``: :mod:`ppokit.fast`: the forward pass keeps its activations without an autograd
      graph, the loss is differentiated by hand with respect to the network outputs (autograd on
      the outputs alone when the algorithm has no ``output_gradients``), and one matrix product
      per layer gives the parameter gradients. About 2x cheaper than autograd for small networks,
      where per-operation overhead, not arithmetic, dominates. MLP trunks with tanh/ReLU only.
    * ``autograd``: plain ``torch.autograd.grad`` through the module (any network).
    * ``eager``: ``fast`` where the agent allows it, else ``autograd``.
    * ``compile``: the eager choice traced into one ``torch.compile`` graph (``torch.func.grad``
      of a functional call on the autograd path); pays off only for long runs (compiling takes
      seconds) and falls back to eager, with a warning, if the compiler fails.
    """

    def __init__(
        self,
        agent: Agent,
        loss_fn: LossFn,
        *,
        max_grad_norm: float | None,
        adam_eps: float,
        path: str = "eager",
        only: tuple[str, ...] | None = None,
        output_gradients: OutputGradFn | None = None,
    ):
        if path not in PATHS:
            raise ValueError(f"update path {path!r} is not one of {PATHS}")
        self.agent = agent
        self.loss_fn = loss_fn
        self.output_gradients = output_gradients
        self.max_grad_norm = max_grad_norm
        self.adam_eps = adam_eps
        named = [(n, p) for n, p in agent.named_parameters() if only is None or n.startswith(only)]
        self.names = [n for n, _ in named]
        self.parameters = [p for _, p in named]
        # The parameters move into one flat, aligned buffer (ppokit.optim): the agent's
        # parameters become views of it, so Adam is one operation on one vector.
        self.layout = FlatLayout(self.parameters)
        self.flat_params = self.layout.zeros()
        with torch.no_grad():
            for parameter, view in zip(self.parameters, self.layout.views(self.flat_params)):
                view.copy_(parameter)
                parameter.data = view
        self.params = [p.detach() for p in self.parameters]  # the agent's tensors, without autograd
        self.adam = AdamState(self.layout)
        # Each step's gradient, laid out as the parameters; the fast path writes each
        # parameter's part through its view.
        self.grad = self.layout.zeros()
        self.grad_views = self.layout.views(self.grad)
        supported = fast.supports(agent)
        if path == "fast" and not supported:
            raise ConfigError(
                "update_path: fast needs ppokit's own MLP trunks with tanh or relu on vector observations; "
                "use update_path=auto (autograd for other networks)"
            )
        self.mode = "fast" if supported and path != "autograd" else "autograd"
        if self.mode == "fast":
            self.param_dict = {name: p.detach() for name, p in agent.named_parameters()}
            self.grad_targets = gradient_targets(agent, dict(zip(self.names, self.grad_views)))
        # Collectives cannot live inside the compiled graph: compile only on one process.
        self.compiled = path == "compile" and not distributed.active()
        self._gradients = self._eager_gradients()
        if self.compiled:
            # autograd.grad does not trace: the compiled autograd path uses torch.func.grad instead.
            # The fast path traces into one graph only with a hand-derived loss gradient.
            fast_traces = self.mode == "fast" and output_gradients is not None
            traced = self._fast_grads if fast_traces else self._functional_grads
            self._gradients = torch.compile(traced, dynamic=False)

    @torch.no_grad()
    def adopt_storage(self, params: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                      exp_avg_sq: torch.Tensor) -> None:
        """Move the flat parameters, gradient and Adam moments into the given ``[S]`` tensors (rows
        of a population's ``[K, S]`` buffers, :mod:`ppokit.fast.stacked`), values included; the
        agent's parameters become views of the new buffer."""
        for new, old in ((params, self.flat_params), (grad, self.grad), (exp_avg, self.adam.exp_avg),
                         (exp_avg_sq, self.adam.exp_avg_sq)):
            new.copy_(old)
        self.flat_params, self.grad = params, grad
        self.adam.exp_avg, self.adam.exp_avg_sq = exp_avg, exp_avg_sq
        for parameter, view in zip(self.parameters, self.layout.views(params)):
            parameter.data = view
        self.params = [p.detach() for p in self.parameters]
        self.grad_views = self.layout.views(grad)
        if self.mode == "fast":
            self.param_dict = {name: p.detach() for name, p in self.agent.named_parameters()}
            self.grad_targets = gradient_targets(self.agent, dict(zip(self.names, self.grad_views)))

    def _eager_gradients(self) -> Callable:
        return self._fast_grads if self.mode == "fast" else self._autograd_grads

    # -- the ways to a gradient: each returns (the flat gradient [P] or one per parameter, stats) --

    def _grad_of_outputs(self, policy_out, values, minibatch, hyper):
        """``(dLoss/dpolicy_out, dLoss/dvalues, stats)``: by hand when the algorithm can, else autograd."""
        head = self.agent.head
        if self.output_gradients is not None:
            with torch.no_grad():
                return self.output_gradients(head, policy_out.detach(), values.detach(), minibatch, hyper)
        return output_gradients_by_autograd(self.loss_fn, head, policy_out, values, minibatch, hyper)

    def _fast_grads(self, minibatch: Minibatch, hyper: dict[str, Any]):
        agent = self.agent
        x = agent.actor_trunk[0](agent.preprocess(minibatch.obs))  # the flatten encoder
        policy_out, values, cache = forward_cached(agent, self.param_dict, x)
        grad_policy, grad_values, stats = self._grad_of_outputs(policy_out, values, minibatch, hyper)
        backward_cached(agent, self.param_dict, cache, grad_policy, grad_values, self.grad_targets)
        return self.grad, stats

    def _autograd_grads(self, minibatch: Minibatch, hyper: dict[str, Any]):
        policy_out, values = self.agent(minibatch.obs)
        grad_policy, grad_values, stats = self._grad_of_outputs(policy_out, values, minibatch, hyper)
        grads = torch.autograd.grad([policy_out, values], self.parameters, [grad_policy, grad_values],
                                    allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params)], stats

    def _functional_grads(self, minibatch: Minibatch, hyper: dict[str, Any]):
        agent = self.agent

        def loss(params: tuple[torch.Tensor, ...]):
            policy_out, values = torch.func.functional_call(agent, dict(zip(self.names, params)), (minibatch.obs,))
            return self.loss_fn(agent.head, policy_out, values, minibatch, hyper)

        grads, stats = torch.func.grad(loss, has_aux=True)(tuple(self.params))
        return list(grads), stats

    @torch.no_grad()
    def _apply(self, grads: torch.Tensor | list[torch.Tensor], stats: dict, hyper: dict,
               samples: torch.Tensor) -> dict[str, torch.Tensor]:
        """Average the gradient over processes, weighted by their ``samples`` (valid samples in this
        step, 0-dim): the loss is a mean over this process's samples, so this is the gradient of
        the mean over all of them. Then clip and take the Adam step."""
        if not isinstance(grads, torch.Tensor):
            for view, grad in zip(self.grad_views, grads):
                view.copy_(grad)
        elif grads is not self.grad:  # a compiled graph returns its own tensor
            self.grad.copy_(grads)
        distributed.weighted_mean_([self.grad], samples)
        grad_norm = clip_by_global_norm_(self.grad, self.max_grad_norm)
        adam_step_(self.flat_params, self.grad, self.adam, hyper["lr"], eps=self.adam_eps)
        return {**stats, "grad_norm": grad_norm}

    def gradients(self, minibatch: Minibatch, hyper: dict[str, float]) -> list[torch.Tensor]:
        """The loss gradient for this step's parameters, by the current path, without updating."""
        grads = self._gradients(minibatch, self._hyper(hyper))[0]
        if isinstance(grads, torch.Tensor):
            return [g.clone() for g in self.layout.views(grads)]
        return [g.reshape(p.shape) for g, p in zip(grads, self.params)]

    def _hyper(self, hyper: dict[str, float]) -> dict:
        """Hyperparameters as the gradient function takes them: Python floats when eager (no
        tensor ops for scalars), 0-dim tensors when compiled (a new value never recompiles)."""
        if not self.compiled:
            return hyper
        return {k: torch.as_tensor(float(v), dtype=torch.float32, device=self.grad.device) for k, v in hyper.items()}

    def step(self, minibatch: Minibatch, hyper: dict[str, float],
             apply_if: Callable[[dict[str, torch.Tensor]], bool] | None = None) -> dict[str, torch.Tensor] | None:
        """One optimizer step on a minibatch; returns the loss statistics as 0-dim tensors.

        ``apply_if(stats)``, when given, sees the loss statistics at the current parameters before
        the step: False skips the step (parameters and Adam untouched) and returns None."""
        try:
            grads, stats = self._gradients(minibatch, self._hyper(hyper))
        except Exception as error:  # noqa: BLE001  (any compiler failure -> eager)
            if not self.compiled:
                raise
            log.warning("torch.compile failed (%s); using the eager update", str(error).splitlines()[0])
            self.compiled = False
            self._gradients = self._eager_gradients()
            grads, stats = self._gradients(minibatch, hyper)
        if apply_if is not None and not apply_if(stats):
            return None
        return self._apply(grads, stats, hyper, minibatch.weights.sum())

    def state_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return self.adam.tensors(prefix)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.adam.load_tensors(tensors, prefix)


def critic_loss(
    head: ActionHead,
    policy_out: torch.Tensor,
    values: torch.Tensor,
    minibatch: Minibatch,
    hyper: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``0.5 * E[(V - R)^2]`` alone (a :data:`LossFn` for the critic's own optimizer)."""
    loss = value_loss(values, minibatch, None)
    return loss, {"value_loss": loss.detach()}


def check_critic_fit(section: Any, where: SectionCheck) -> None:
    """Range checks of the value-fit fields (``value_lr``, ``value_epochs``, ``value_minibatch_size``)."""
    positive(section.value_lr, f"{where.name}.value_lr")
    positive_int(section.value_epochs, f"{where.name}.value_epochs")
    positive_int(section.value_minibatch_size, f"{where.name}.value_minibatch_size")
    check_global_minibatch(section.value_minibatch_size, where, "value_minibatch_size")


class CriticFit:
    """Fits the value function on its own: ``epochs`` passes of minibatch Adam steps on
    ``0.5 * (V(s) - R)^2`` over the critic's parameters only (TRPO, VPG). ``minibatch_size``
    counts samples over all processes, as the minibatch algorithms' does.

    Adam by default rather than L-BFGS: see docs/algorithms.md (its state is a few tensors that
    checkpoint exactly, minibatches need no full-batch closure, and it reuses :class:`GradientStep`);
    TRPO's ``value_optimizer: lbfgs`` is :class:`LBFGSCriticFit`."""

    def __init__(self, agent: Agent, learning_rate: float, epochs: int, minibatch_size: int, *, path: str):
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.minibatch_size = minibatch_size
        self.gradient_step = GradientStep(agent, critic_loss, max_grad_norm=None, adam_eps=ADAM_EPS,
                                          path=path, only=CRITIC_PREFIXES)

    def fit(self, batch: Batch) -> dict[str, float]:
        """Fit on ``batch.returns``; returns the mean ``value_loss`` and ``value_grad_steps``."""
        hyper = hyperparameters(lr=self.learning_rate)
        minibatch_size = per_process(self.minibatch_size)
        stats = run_epochs(self.gradient_step, batch, self.epochs, minibatch_size, hyper)
        steps = stats["epochs"] * math.ceil(len(batch) / minibatch_size)
        return {"value_loss": stats["value_loss"], "value_grad_steps": steps}

    def state_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return self.gradient_step.state_tensors(prefix)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.gradient_step.load_state_tensors(tensors, prefix)


class LBFGSCriticFit:
    """The original TRPO's value fit (Schulman et al. 2015, its code modular_rl: scipy's L-BFGS-B
    for at most 25 iterations on the whole batch): ``torch.optim.LBFGS`` over the critic's
    parameters on ``0.5 * E[(V(s) - R)^2]`` over all the valid samples of the batch, at most
    ``iterations`` iterations with the strong-Wolfe line search.

    A new optimizer every fit (as each scipy call starts afresh), so it has no state to
    checkpoint. Under torchrun the loss and gradient every closure call sees are the means over
    every process's samples, so all processes take the same steps."""

    def __init__(self, agent: Agent, iterations: int):
        self.agent = agent
        self.iterations = iterations
        self.parameters = [p for name, p in agent.named_parameters() if name.startswith(CRITIC_PREFIXES)]

    def fit(self, batch: Batch) -> dict[str, float]:
        """Fit on ``batch.returns [B]`` (``batch.obs [B, *obs]``, ``batch.weights [B]``); returns the
        final ``value_loss`` and ``value_grad_steps`` (the closure's evaluations: loss and gradient)."""
        optimizer = torch.optim.LBFGS(self.parameters, lr=1.0, max_iter=self.iterations,
                                      line_search_fn="strong_wolfe")
        weights = batch.weights
        mean_weights = weights / weights.sum().clamp(min=1.0)
        samples = weights.sum()
        evaluations = 0

        def local_loss() -> torch.Tensor:
            """``0.5 * (V - R)^2`` averaged over this process's valid samples (0-dim)."""
            return 0.5 * ((self.agent(batch.obs)[1] - batch.returns).square() * mean_weights).sum()

        def closure() -> torch.Tensor:
            nonlocal evaluations
            evaluations += 1
            with torch.enable_grad():
                loss = local_loss()
                grads = torch.autograd.grad(loss, self.parameters)
            loss = loss.detach()
            distributed.weighted_mean_([loss, *grads], samples)
            for parameter, grad in zip(self.parameters, grads):
                parameter.grad = grad
            return loss

        optimizer.step(closure)
        for parameter in self.parameters:
            parameter.grad = None
        with torch.no_grad():
            final = local_loss()
        return {"value_loss": float(global_weighted_mean(final.reshape(1), samples.reshape(1))),
                "value_grad_steps": float(evaluations)}

    def state_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        pass


def hyperparameters(**values: float) -> dict[str, float]:
    """This step's hyperparameters (learning rate, clip coefficient, ...) as floats;
    :class:`GradientStep` turns them into tensors itself when it runs compiled."""
    return {k: float(v) for k, v in values.items()}


def whole_batch(data: dict[str, torch.Tensor], advantages_normalized: bool,
                over_processes: bool = False) -> Minibatch:
    """The one minibatch of an update whose minibatch is the whole batch: its weights and
    advantage statistics are the same every epoch, so they are computed once (``[.., B]``;
    ``over_processes``: the statistics of every process's samples)."""
    whole = Minibatch.of(data, advantages_normalized=advantages_normalized)
    if whole.normalized_advantages is None:
        whole.normalized_advantages = _normalized_advantages(whole, over_processes)
    return whole


# ``kl_stop`` modes of run_epochs: after an epoch on its mean approx KL, or before every step.
KL_STOPS = ("epoch", "step")
# kl_stop "step" stops at this multiple of target_kl (Spinning Up's PPO: 1.5 x target_kl).
STEP_KL_FACTOR = 1.5

# refresh(data) -> data: the batch's ``name -> [B, ...]`` tensors with new advantages and returns
Refresh = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def run_epochs(
    step: GradientStep,
    batch: Batch,
    epochs: int,
    minibatch_size: int,
    hyper: dict[str, float],
    target_kl: float | None = None,
    advantages_normalized: bool = False,
    normalize_over_processes: bool = False,
    kl_stop: str = "epoch",
    refresh: Refresh | None = None,
) -> dict[str, float]:
    """``epochs`` passes over shuffled minibatches, stopped early by ``target_kl``. Returns mean
    statistics over the steps taken, plus ``epochs`` (how many ran, in part or whole),
    ``grad_steps`` and ``early_stop`` (1.0 if stopped). The loss statistics are means over the
    last epoch's steps (over every step when ``target_kl`` is set).

    ``kl_stop="epoch"``: stop once an epoch's mean approx KL, averaged over processes, exceeds
    ``target_kl``. ``kl_stop="step"`` (Spinning Up's PPO): before every step, stop, without taking
    it, once the approx KL at the current parameters on that step's minibatch, averaged over
    processes, exceeds ``STEP_KL_FACTOR * target_kl``.

    Minibatches come from :func:`ppokit.batch.minibatches` (one gather per epoch, views).
    ``advantages_normalized``: ``batch.advantages`` are already normalized (over the whole batch),
    so a loss takes them as they are instead of normalizing each minibatch again.
    ``normalize_over_processes`` (torchrun, ``norm_adv`` per minibatch): each minibatch's
    advantages are normalized here with the statistics of that step's samples on every process
    (each holds its share of the step's minibatch), not of this process's share alone.
    ``refresh``: called before every epoch but the first with the batch's tensors (in time order),
    returns them with new advantages and returns (normalized as ``advantages_normalized`` says).

    The target-KL decisions take the approx KL over the samples of every process, weighted by
    their numbers: every process stops where a single process would.
    """
    data = batch.as_dict()
    history: list[dict[str, torch.Tensor]] = []
    samples: list[torch.Tensor] = []  # valid samples in each step's minibatch on this process
    epochs_run = 0
    stopped = False
    whole = whole_batch(data, advantages_normalized, normalize_over_processes) if minibatch_size >= len(batch) \
        else None
    step_limit = STEP_KL_FACTOR * target_kl if target_kl is not None and kl_stop == "step" else None

    def below_step_limit(stats: dict[str, torch.Tensor], samples: torch.Tensor) -> bool:
        kl = global_step_means(stats["approx_kl"].reshape(1), samples.reshape(1))
        return float(kl[0]) <= step_limit  # type: ignore[operator]

    for epoch in range(epochs):
        if refresh is not None and epoch > 0:
            data = refresh(data)
            whole = whole_batch(data, advantages_normalized, normalize_over_processes) if whole is not None else None
        first = len(history)
        # Loss statistics are reported for the last epoch (and every epoch when target_kl needs
        # the approx KL): computing them costs a tenth of a minibatch step.
        want_stats = target_kl is not None or epochs_run == epochs - 1
        parts = [whole.with_stats(want_stats)] if whole is not None else [
            Minibatch.of(samples, want_stats, advantages_normalized) for samples in minibatches(data, minibatch_size)]
        for minibatch in parts:
            if normalize_over_processes and minibatch.normalized_advantages is None:
                minibatch.normalized_advantages = _normalized_advantages(minibatch, over_processes=True)
            count = minibatch.weights.sum()
            apply_if = (lambda stats, count=count: below_step_limit(stats, count)) if step_limit is not None else None
            stats = step.step(minibatch, hyper, apply_if)
            if stats is None:  # kl_stop "step": the KL limit is reached, this step is not taken
                stopped = True
                break
            history.append(stats)
            samples.append(count)
        epochs_run += int(len(history) > first)
        if stopped:
            break
        if target_kl is not None and step_limit is None and "approx_kl" in history[-1]:
            step_kls = global_step_means(torch.stack([h["approx_kl"] for h in history[first:]]),
                                         torch.stack(samples[first:]))
            if float(step_kls.mean()) > target_kl:
                stopped = True
                break
    keys = {key for h in history for key in h}
    out = {key: float(torch.stack([h[key] for h in history if key in h]).mean()) for key in sorted(keys)}
    out["epochs"] = float(epochs_run)
    out["grad_steps"] = float(len(history))
    out["early_stop"] = float(stopped)
    return out


def _normalized_advantages(minibatch: Minibatch, over_processes: bool) -> torch.Tensor:
    """The minibatch's advantages ``[M]`` normalized over its valid samples: on this process, or on
    every process (each holding its share of the step's minibatch)."""
    if over_processes:
        return normalize_advantages(minibatch.advantages, minibatch.weights, mean_fn=global_weighted_mean)
    return normalize_advantages(minibatch.advantages, minibatch.mean_weights, mean_fn=masked_mean)


def linear_schedule(start: float, progress: float, anneal: bool) -> float:
    """``start * (1 - progress)`` when annealing (progress in [0, 1)), else ``start``."""
    return start * (1.0 - progress) if anneal else start


def recompute_advantages(agent: Agent, data: dict[str, torch.Tensor], num_steps: int, gamma: float,
                         gae_lambda: float) -> dict[str, torch.Tensor]:
    """GAE advantages and returns of a batch ``[B = T * N]`` (in the loop's time-major order) with
    the agent's *current* critic: ``V(s_t)`` and the next states' values the rollout holds are
    evaluated again (:func:`ppokit.advantages.refreshed_next_values`), then :func:`ppokit.advantages.gae`.
    ``data`` holds the Batch fields, ``next_values``, ``rewards``, ``terminated`` and ``truncated``
    included; returns a copy with new ``advantages`` and ``returns`` ``[B]``."""
    if any(data.get(name) is None for name in ("next_values", "rewards", "terminated", "truncated")):
        raise ValueError("recomputing advantages needs the batch's next_values, rewards, terminated and truncated")
    with torch.no_grad():
        values = time_major(agent(data["obs"])[1], num_steps)
    terminated, truncated = time_major(data["terminated"], num_steps), time_major(data["truncated"], num_steps)
    next_values = refreshed_next_values(values, time_major(data["next_values"], num_steps), terminated, truncated)
    advantages, returns = gae(time_major(data["rewards"], num_steps), values, next_values, terminated, truncated,
                              gamma, gae_lambda)
    return {**data, "advantages": advantages.reshape(-1), "returns": returns.reshape(-1)}
