"""A population's acting and updates as batched operations over its K agents.

On a CPU a minibatch step of a small MLP costs per-operation overhead, not arithmetic
(docs/performance.md), so K agents stacked into the same operations (``torch.baddbmm`` for
``addmm``, ``torch.bmm`` for ``mm``: :mod:`ppokit.fast.network`) cost little more than one.

Each of the agents' gradient steps (:class:`ppokit.algos.common.GradientStep`: PPO's, PPO-KL's,
VPG's policy step, the critic fits) moves its parameters, gradient and Adam moments into the rows
of ``[K, S]`` buffers (:class:`StackedStep`): each agent's own tensors are views of its row, so
checkpoints, evaluation and export see ordinary agents, and the stacked views ``[K, *shape]``
feed the batched operations. Everything that is per agent stays per agent: its minibatch order
(drawn from its own random stream), advantage normalization, global-norm gradient clipping (its
own max norm), learning-rate and clip schedules, the swept coefficients, the target-KL stop (a
mask: a stopped agent's rows are computed but not applied), PPO-KL's beta, Adam step counts.

Agent k then follows the single run with seed k up to float rounding (a batched matrix product
and a per-row norm may round differently from their one-agent forms; tests/test_stacked.py and
tests/test_population.py).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from ppokit import distributed
from ppokit.algos.common import (
    GradientStep,
    critic_loss,
    global_weighted_mean,
    importance_ratio,
    linear_schedule,
    mean_kl,
    output_gradients_by_autograd,
    policy_change,
    whole_batch,
)
from ppokit.algos.ppo import PPO
from ppokit.algos.ppo_kl import PPOKL, penalized_loss
from ppokit.algos.trpo import TRPO, conjugate_gradient, fisher_vector_product
from ppokit.algos.vpg import VPG, policy_gradient_loss, reward_to_go
from ppokit.batch import SAMPLE_FIELDS, Minibatch, normalize_advantages, weighted_mean
from ppokit.fast.network import backward_cached, forward_cached, policy_forward
from ppokit.fast.ppo import output_gradients
from ppokit.optim import FlatLayout, adam_steps_

if TYPE_CHECKING:
    from ppokit.batch import Batch
    from ppokit.loop import Learner, Member

log = logging.getLogger("ppokit")

STACKABLE = (PPO, PPOKL, VPG, TRPO)
# Config fields that shape the update: the agents of one population share them (float
# coefficients may differ). Missing fields (PPO-KL has no clip_vloss) count as None.
SHARED_FIELDS = ("update_epochs", "minibatch_size", "norm_adv", "norm_adv_scope", "clip_vloss", "adam_eps",
                 "adaptive", "baseline", "value_epochs", "value_minibatch_size", "anneal_lr", "cg_iters",
                 "backtrack_iters", "kl_stop", "value_loss", "recompute_advantages", "value_fit")
# (dLoss/dpolicy_out [K, M, P], dLoss/dvalues [K, M], stats {name: [K]}) of one minibatch
OutputGradients = Callable[[torch.Tensor, torch.Tensor, Minibatch], tuple[torch.Tensor, torch.Tensor, dict]]


def stackable(learners: list[Learner]) -> bool:
    """True when the learners can act and update as one: all the same algorithm on the fast path
    (not compiled, one process), the same network, spaces, normalizer setup, rollout shape and
    update loop shape."""
    if len(learners) < 2 or distributed.active():
        return False
    algos = [learner.algo for learner in learners]
    if type(algos[0]) not in STACKABLE or any(type(algo) is not type(algos[0]) for algo in algos):
        return False
    if any(_own_update_only(algo) for algo in algos):
        return False
    if any(step.mode != "fast" or step.compiled for algo in algos for step in _steps(algo)):
        return False

    def signature(learner: Learner) -> tuple:
        algo, agent, rollout = learner.algo, learner.agent, learner.cfg.rollout
        cfg = algo.cfg
        normalizer = agent.obs_normalizer
        return ([(step.names, [tuple(p.shape) for p in step.parameters], str(step.flat_params.device))
                 for step in _steps(algo)],
                rollout.num_envs, rollout.num_steps, agent.action_space, agent.observation_space,
                normalizer is None, normalizer is not None and normalizer.clip is None,
                getattr(cfg, "clip_coef", None) is None, getattr(algo, "target_kl", None) is None,
                getattr(cfg, "max_grad_norm", None) is None, *(getattr(cfg, name, None) for name in SHARED_FIELDS))

    first = signature(learners[0])
    return all(signature(learner) == first for learner in learners[1:])


def _own_update_only(algo: Any) -> bool:
    """The options that the stacked update does not implement (each agent then updates on its
    own, as a single run): PPO's advantages recomputed every epoch and target-KL stop before every
    step, PPO's and PPO-KL's separate critic fit, TRPO's L-BFGS value fit."""
    cfg = algo.cfg
    if getattr(cfg, "value_fit", "joint") != "joint" or getattr(cfg, "value_optimizer", "adam") != "adam":
        return True
    return isinstance(algo, PPO) and (cfg.recompute_advantages
                                      or (cfg.kl_stop == "step" and cfg.target_kl is not None))


def _steps(algo: Any) -> list[GradientStep]:
    """The algorithm's gradient steps: PPO's and PPO-KL's one, VPG's policy step and critic fit,
    TRPO's critic fit (its policy moves by conjugate gradient and line search)."""
    if isinstance(algo, TRPO):
        return [algo.critic.gradient_step]
    if isinstance(algo, VPG):
        return [algo.policy_step] + ([algo.critic.gradient_step] if algo.critic is not None else [])
    return [algo.gradient_step]


class StackedStep:
    """The same :class:`GradientStep` of K agents (the same parameters) as one: its parameters,
    gradient and Adam moments in rows of ``[K, S]`` buffers, each parameter also as a ``[K, *shape]``
    view (:attr:`params`, :attr:`grads`, by the agent's parameter names)."""

    def __init__(self, steps: list[GradientStep]):
        self.steps = steps
        layout, count = steps[0].layout, len(steps)
        self.flat_params, self.flat_grad = layout.zeros(count), layout.zeros(count)
        exp_avg, exp_avg_sq = layout.zeros(count), layout.zeros(count)
        for k, step in enumerate(steps):
            step.adopt_storage(self.flat_params[k], self.flat_grad[k], exp_avg[k], exp_avg_sq[k])

        self.params = dict(zip(steps[0].names, layout.views_of_rows(self.flat_params)))
        self.grads = dict(zip(steps[0].names, layout.views_of_rows(self.flat_grad)))

    @torch.no_grad()
    def apply(self, lrs: list[float], max_norms: list[float | None], eps: float, active: list[bool]) -> torch.Tensor:
        """Clip each agent's gradient to its global norm and take its Adam step (the ``active``
        agents only; one fused call per learning rate). Returns the norms before clipping ``[K]``."""
        norms = torch.linalg.vector_norm(self.flat_grad, dim=1)
        if max_norms[0] is not None:
            limit = torch.tensor(max_norms, dtype=norms.dtype, device=norms.device)
            self.flat_grad.mul_(torch.clamp(limit / (norms + 1e-6), max=1.0).unsqueeze(-1))
        by_lr: dict[float, list[int]] = {}
        for k, lr in enumerate(lrs):
            if active[k]:
                by_lr.setdefault(lr, []).append(k)
        for lr, rows in by_lr.items():
            adam_steps_([self.flat_params[k] for k in rows], [self.flat_grad[k] for k in rows],
                        [self.steps[k].adam for k in rows], lr, eps=self.steps[0].adam_eps)
        return norms


class StackedPopulation:
    """Acting and the update of K learners as batched operations (a :class:`ppokit.loop.Stacked`).
    Build it with :func:`stackable` learners; it takes their parameters into its buffers."""

    def __init__(self, learners: list[Learner]):
        self.learners = learners
        self.algos = [learner.algo for learner in learners]
        self.rows = {id(learner): k for k, learner in enumerate(learners)}
        self.steps = [StackedStep(list(steps)) for steps in zip(*[_steps(algo) for algo in self.algos])]
        self.params = {name: view for step in self.steps for name, view in step.params.items()}
        self.agent = learners[0].agent  # the structure (layers, head); every agent's is the same
        if isinstance(self.algos[0], TRPO):  # its policy's parameters in rows too: theta [K, S]
            self.policy_layout, self.policy_rows, views = _stack_parameters([algo.params for algo in self.algos],
                                                                           self.algos[0].names)
            self.params.update(views)
        for name, _ in self.agent.named_parameters():  # in no step (VPG without a baseline: the critic)
            if name not in self.params:  # never updated, so a stacked copy stays right
                self.params[name] = torch.stack([learner.agent.get_parameter(name).detach() for learner in learners])
        # Where each step's backward writes every parameter's gradient: its own [K, *shape] views,
        # scratch for the parameters it does not update (made once, not every minibatch).
        self.gradient_targets = [{name: step.grads[name] if name in step.grads else torch.empty_like(view)
                                  for name, view in self.params.items()} for step in self.steps]
        self.obs_stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

    def covers(self, members: list[Member]) -> bool:
        """True when ``members`` are exactly this population's agents, in order (none has ended)."""
        return [self.rows.get(id(m.learner)) for m in members] == list(range(len(self.learners)))

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def begin_rollout(self) -> None:
        """Stack the agents' observation statistics ``[K, 1, *obs]`` for this rollout's
        :meth:`policy` calls (they move only after the update)."""
        normalizers = [learner.agent.obs_normalizer for learner in self.learners]
        if normalizers[0] is None:
            self.obs_stats = None
            return
        mean = torch.stack([n.mean.to(torch.float32) for n in normalizers]).unsqueeze(1)
        std = torch.stack([torch.sqrt(n.var + n.epsilon).to(torch.float32) for n in normalizers]).unsqueeze(1)
        clip = [n.clip for n in normalizers]
        bound = None if clip[0] is None else torch.tensor(clip, device=mean.device).view(-1, *[1] * (mean.dim() - 1))
        self.obs_stats = (mean, std, bound)

    @torch.no_grad()
    def policy(self, observations: list[torch.Tensor]) -> torch.Tensor:
        """Every agent's actor on its own observations ``[N, *obs]`` as one batched forward:
        ``policy_out [K, N, P]``. Each agent's are normalized with its own statistics, element
        for element as :meth:`ppokit.normalize.RunningMeanStd.normalize` does (after
        :meth:`begin_rollout`)."""
        if self.agent.actor_trunk[0].one_hot is not None:  # Discrete observations: each agent's one-hot
            x = torch.stack([learner.agent.actor_trunk[0](obs) for learner, obs in zip(self.learners, observations)])
            return policy_forward(self.agent, self.params, x)
        x = torch.stack(observations).to(torch.float32)  # [K, N, *obs]
        if self.obs_stats is not None:
            mean, std, bound = self.obs_stats
            x = (x - mean) / std
            if bound is not None:
                x = torch.clamp(x, -bound, bound)
        return policy_forward(self.agent, self.params, x.reshape(*x.shape[:2], -1))

    # ------------------------------------------------------------------ the update

    def update(self, members: list[Member], batches: list[Batch]) -> list[dict[str, float]]:
        """Step 3 of an iteration for ``members`` (each with its batch ``[B, ...]``): exactly this
        population's agents (:meth:`covers`; once some have ended, the loop updates each alone)."""
        progress = [m.progress.iteration / m.progress.total_iterations for m in members]
        if isinstance(self.algos[0], VPG):
            return self._vpg_update(members, batches, progress)
        if isinstance(self.algos[0], TRPO):
            return self._trpo_update(members, batches)
        return self._minibatch_update(members, batches, progress)

    def _minibatch_update(self, members: list[Member], batches: list[Batch],
                          progress: list[float]) -> list[dict[str, float]]:
        """PPO and PPO-KL: epochs of minibatch steps (:class:`ppokit.algos.minibatch.MinibatchActorCritic`)."""
        algos = self.algos
        cfg = algos[0].cfg
        hypers = [algo.hyperparameters(p) for algo, p in zip(algos, progress)]
        normalized = cfg.norm_adv and cfg.norm_adv_scope == "batch"
        data = self._stack(batches, normalize_advantages_over_batch=normalized)
        by_hand = isinstance(algos[0], PPO)  # PPO's loss gradient is hand-derived, PPO-KL's by autograd
        column = functools.partial(_per_agent, device=self.steps[0].flat_params.device, by_hand=by_hand)
        loss_cfg = replace(cfg, ent_coef=column([a.cfg.ent_coef for a in algos]),
                           vf_coef=column([a.cfg.vf_coef for a in algos]))
        hyper = {key: column([h[key] for h in hypers]) for key in hypers[0] if key != "lr"}
        head = self.agent.head
        if by_hand:
            grads: OutputGradients = lambda out, values, mb: output_gradients(loss_cfg, head, out, values, mb, hyper)  # noqa: E731
        else:
            grads = lambda out, values, mb: output_gradients_by_autograd(  # noqa: E731
                functools.partial(penalized_loss, loss_cfg), head, out, values, mb, hyper)
        per_agent = self._epochs(members, self.steps[0], data, cfg.update_epochs, cfg.minibatch_size, grads,
                                 [h["lr"] for h in hypers], [a.cfg.max_grad_norm for a in algos],
                                 targets=[a.target_kl for a in algos], normalized=normalized)
        for algo, hyper_k, batch, stats in zip(algos, hypers, batches, per_agent):
            stats["learning_rate"] = hyper_k["lr"]
            algo.after_epochs(batch, hyper_k, stats)
        return per_agent

    def _vpg_update(self, members: list[Member], batches: list[Batch], progress: list[float]) -> list[dict[str, float]]:
        """VPG: one policy-gradient step on each whole batch, then each agent's value fit."""
        algos: list[VPG] = self.algos  # type: ignore[assignment]
        cfg = algos[0].cfg
        if algos[0].critic is None:  # baseline none: the advantages are the rewards to go
            batches = [replace(b, advantages=reward_to_go(b, a.num_steps, a.gamma, a.cfg.reset_return_on_reward))
                       for a, b in zip(algos, batches)]
        data = self._stack(batches, normalize_advantages_over_batch=cfg.norm_adv)
        whole = Minibatch.of(data, advantages_normalized=cfg.norm_adv)
        lrs = [linear_schedule(a.cfg.learning_rate, p, a.cfg.anneal_lr) for a, p in zip(algos, progress)]
        policy = self.steps[0]
        stats = self._gradient(policy, whole, lambda out, values, mb: output_gradients_by_autograd(
            policy_gradient_loss, self.agent.head, out, values, mb, {}))
        norms = policy.apply(lrs, [a.cfg.max_grad_norm for a in algos], policy.steps[0].adam_eps, [True] * len(algos))
        per_agent = [{"policy_loss": float(stats["policy_loss"][k]), "grad_norm": float(norms[k])}
                     for k in range(len(algos))]
        for algo, batch, out in zip(algos, batches, per_agent):
            out.update(policy_change(algo.agent, batch))
        if algos[0].critic is not None:
            for out, fit in zip(per_agent, self._critic_fits(members, self.steps[1], batches)):
                out.update(fit)
        for out, lr in zip(per_agent, lrs):
            out.update(learning_rate=lr, clip_fraction=float("nan"))
        return per_agent

    def _trpo_update(self, members: list[Member], batches: list[Batch]) -> list[dict[str, float]]:
        """TRPO: every agent's natural-gradient step (conjugate gradient on its own Fisher-vector
        products, its own line search), then its value fit."""
        algos: list[TRPO] = self.algos  # type: ignore[assignment]
        per_agent = self._trpo_policy_steps(self._stack(batches, normalize_advantages_over_batch=algos[0].cfg.norm_adv))
        for algo, batch, out in zip(algos, batches, per_agent):
            out.update(policy_change(algo.agent, batch))
        for out, fit in zip(per_agent, self._critic_fits(members, self.steps[0], batches)):
            out.update(fit, clip_fraction=float("nan"), learning_rate=float("nan"))
        return per_agent

    def _critic_fits(self, members: list[Member], step: StackedStep, batches: list[Batch]) -> list[dict[str, float]]:
        """:meth:`ppokit.algos.common.CriticFit.fit` of every agent (TRPO's and VPG's value fits)."""
        critics = [algo.critic for algo in self.algos]
        fits = self._epochs(members, step, self._stack(batches), critics[0].epochs, critics[0].minibatch_size,
                            lambda out, values, mb: output_gradients_by_autograd(
                                critic_loss, self.agent.head, out, values, mb, {}),
                            [critic.learning_rate for critic in critics], [None] * len(critics))
        steps_per_epoch = math.ceil(len(batches[0]) / critics[0].minibatch_size)
        return [{"value_loss": fit["value_loss"], "value_grad_steps": fit["epochs"] * steps_per_epoch} for fit in fits]

    def _trpo_policy_steps(self, data: dict[str, torch.Tensor]) -> list[dict[str, float]]:
        """:meth:`ppokit.algos.trpo.TRPO.policy_step` of every agent, on ``theta [K, S]``."""
        algos: list[TRPO] = self.algos  # type: ignore[assignment]
        count, device = len(algos), self.policy_rows.device
        column = lambda name: torch.tensor([float(getattr(a.cfg, name)) for a in algos], device=device)  # noqa: E731
        max_kl, backtrack_coef = column("max_kl"), column("backtrack_coef")
        minibatch, head, names = Minibatch.of(data), self.agent.head, algos[0].names

        def surrogate_and_kl(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """``(E[r * A], E[KL(pi_old || pi_theta)])`` per agent, ``[K]`` each."""
            params = {**self.params, **dict(zip(names, self.policy_layout.views_of_rows(theta)))}
            policy_out = policy_forward(self.agent, params, minibatch.obs)
            _, ratio = importance_ratio(head, policy_out, minibatch)
            return (weighted_mean(ratio * minibatch.advantages, minibatch.weights),
                    mean_kl(head, minibatch.policy_outputs, policy_out, minibatch.weights))

        theta_old = self.policy_rows.detach().clone()
        theta = theta_old.clone().requires_grad_(True)
        surrogate, _ = surrogate_and_kl(theta)
        (gradient,) = torch.autograd.grad(surrogate.sum(), theta)
        surrogate_old = surrogate.detach()
        fvp = fisher_vector_product(lambda t: surrogate_and_kl(t)[1], theta_old, column("damping").unsqueeze(-1))
        direction = conjugate_gradient(fvp, gradient, algos[0].cfg.cg_iters)
        curvature = (direction * fvp(direction)).sum(-1).detach()  # x'(F + damping I)x, [K]
        full_step = torch.sqrt(2 * max_kl / curvature).unsqueeze(-1) * direction.detach()
        out = [{"line_search_steps": 0.0, "line_search_accepted": 0.0, "improvement": 0.0,
                "policy_loss": -float(surrogate_old[k])} for k in range(count)]
        pending = [k for k in range(count) if math.isfinite(float(curvature[k])) and float(curvature[k]) > 0]
        for k in sorted(set(range(count)) - set(pending)):
            log.warning("trpo (agent %d): no step this iteration (x'Fx = %g: the surrogate gradient is zero or not "
                        "finite); the policy is unchanged", k, float(curvature[k]))
        with torch.no_grad():
            for attempt in range(algos[0].cfg.backtrack_iters):
                if not pending:
                    break
                candidate = theta_old + (backtrack_coef ** attempt).unsqueeze(-1) * full_step
                new_surrogate, kl = surrogate_and_kl(candidate)
                for k in list(pending):
                    out[k]["line_search_steps"] = float(attempt + 1)
                    if float(kl[k]) <= float(max_kl[k]) and float(new_surrogate[k]) > float(surrogate_old[k]):
                        self.policy_rows[k].copy_(candidate[k])
                        out[k].update(line_search_accepted=1.0, policy_loss=-float(new_surrogate[k]),
                                      improvement=float(new_surrogate[k]) - float(surrogate_old[k]))
                        pending.remove(k)
        for k in pending:
            log.warning("trpo (agent %d): the line search rejected all %d steps; the policy is unchanged", k,
                        algos[0].cfg.backtrack_iters)
        return out

    # ------------------------------------------------------------------ shared by the updates

    def _stack(self, batches: list[Batch], normalize_advantages_over_batch: bool = False) -> dict[str, torch.Tensor]:
        """The agents' batches as ``[K, B, ...]`` tensors, observations already normalized and flat
        (the normalizers do not move during the update); advantages normalized over each agent's
        whole batch if asked."""
        data = {}
        for name in SAMPLE_FIELDS:
            if name == "obs":
                rows = [learner.agent.actor_trunk[0](learner.agent.preprocess(batch.obs))
                        for learner, batch in zip(self.learners, batches)]
            elif name == "advantages" and normalize_advantages_over_batch:
                rows = [normalize_advantages(batch.advantages, batch.weights, mean_fn=global_weighted_mean)
                        for batch in batches]
            else:
                rows = [getattr(batch, name) for batch in batches]
            data[name] = torch.stack(rows)
        return data

    @torch.no_grad()
    def _gradient(self, step: StackedStep, minibatch: Minibatch, grads: OutputGradients) -> dict[str, torch.Tensor]:
        """Every agent's gradient of its loss for ``step``'s parameters into ``step.grads``; stats ``[K]``."""
        agent = self.agent
        policy_out, values, cache = forward_cached(agent, self.params, minibatch.obs)
        grad_policy, grad_values, stats = grads(policy_out, values, minibatch)
        out = self.gradient_targets[self.steps.index(step)]
        backward_cached(agent, self.params, cache, grad_policy, grad_values, out)
        return stats

    def _epochs(self, members: list[Member], step: StackedStep, data: dict[str, torch.Tensor], epochs: int,
                minibatch_size: int, grads: OutputGradients, lrs: list[float], max_norms: list[float | None],
                targets: list[float | None] | None = None, normalized: bool = False) -> list[dict[str, float]]:
        """:func:`ppokit.algos.common.run_epochs` for every agent at once: ``epochs`` passes of
        minibatch steps, each agent in its own order; an agent whose epoch's mean approx KL
        exceeds its ``targets[k]`` stops (its later rows are not applied). Per-agent statistics."""
        count, size = data["obs"].shape[:2]
        targets = targets or [None] * count
        active, epochs_run, stopped = [True] * count, [0] * count, [False] * count
        history: list[tuple[list[bool], dict[str, torch.Tensor]]] = []
        whole = whole_batch(data, normalized) if minibatch_size >= size else None
        for epoch in range(epochs):
            first = len(history)
            want_stats = targets[0] is not None or epoch == epochs - 1
            if whole is not None:
                parts = [whole.with_stats(want_stats)]
            else:
                shuffled = self._shuffled(members, data, size)
                parts = [Minibatch.of({k: v[:, i:i + minibatch_size] for k, v in shuffled.items()}, want_stats,
                                      normalized) for i in range(0, size, minibatch_size)]
            for minibatch in parts:
                stats = self._gradient(step, minibatch, grads)
                stats["grad_norm"] = step.apply(lrs, max_norms, step.steps[0].adam_eps, active)
                history.append((list(active), stats))
            for k in range(count):
                epochs_run[k] += active[k]
            if targets[0] is not None:
                epoch_kl = torch.stack([stats["approx_kl"] for _, stats in history[first:]]).mean(0)  # [K]
                for k in range(count):
                    if active[k] and float(epoch_kl[k]) > targets[k]:  # type: ignore[operator]
                        active[k], stopped[k] = False, True
                if not any(active):
                    break
        return [_agent_stats(k, history, epochs_run[k], stopped[k]) for k in range(count)]

    def _shuffled(self, members: list[Member], data: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
        """The samples of each agent in a new random order from that agent's stream, ``[K, B, ...]``."""
        orders = []
        for member in members:
            with member.streams:
                orders.append(torch.randperm(size, device=data["obs"].device))
        order = torch.stack(orders)  # [K, B]
        rows = torch.arange(order.shape[0], device=order.device).unsqueeze(-1)
        return {name: value[rows, order] for name, value in data.items()}


def _stack_parameters(per_agent: list[list[torch.nn.Parameter]], names: list[str]
                      ) -> tuple[FlatLayout, torch.Tensor, dict[str, torch.Tensor]]:
    """Move the same parameters of K agents into the rows of one ``[K, S]`` buffer (each
    parameter becomes a view of its agent's row); the layout, the buffer and the ``[K, *shape]``
    view of each parameter by name."""
    layout = FlatLayout(per_agent[0])
    rows = layout.zeros(len(per_agent))
    with torch.no_grad():
        for k, parameters in enumerate(per_agent):
            for parameter, view in zip(parameters, layout.views(rows[k])):
                view.copy_(parameter)
                parameter.data = view
    return layout, rows, dict(zip(names, layout.views_of_rows(rows)))


def _per_agent(values: list[float], device: torch.device, by_hand: bool) -> torch.Tensor:
    """One value per agent: ``[K, 1]`` for a hand-derived gradient (it scales ``[K, M]`` samples),
    ``[K]`` for an autograd loss (it scales per-agent means)."""
    column = torch.tensor(values, dtype=torch.float32, device=device)
    return column.unsqueeze(-1) if by_hand else column


def _agent_stats(k: int, history: list[tuple[list[bool], dict[str, torch.Tensor]]], epochs: int,
                 stopped: bool) -> dict[str, float]:
    """Agent k's statistics as :func:`ppokit.algos.common.run_epochs` reports them."""
    mine = [stats for active, stats in history if active[k]]
    keys = sorted({key for stats in mine for key in stats})
    out = {key: float(torch.stack([stats[key][k] if stats[key].dim() else stats[key]
                                   for stats in mine if key in stats]).mean()) for key in keys}
    out["epochs"], out["grad_steps"], out["early_stop"] = float(epochs), float(len(mine)), float(stopped)
    return out
