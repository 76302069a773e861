"""PPO for a population: the acting forward and the minibatch steps of K agents as batched operations.

On a CPU a minibatch step of a small MLP costs per-operation overhead, not arithmetic
(docs/performance.md), so K agents stacked into the same operations (``torch.baddbmm`` for
``addmm``, ``torch.bmm`` for ``mm``: :mod:`ppokit.fast.network`) cost little more than one.

The agents' parameters, gradients and Adam moments move into the rows of ``[K, S]`` buffers
(:meth:`ppokit.algos.common.GradientStep.adopt_storage`): each agent's own tensors are views of
its row, so checkpoints, evaluation and export see ordinary agents, and the stacked views
``[K, *shape]`` of each parameter feed the batched operations. Everything that is per agent stays
per agent: its minibatch order (drawn from its own random stream), advantage normalization,
global-norm gradient clipping, learning-rate and clip schedules, the swept coefficients
(learning rate, clip, entropy and value coefficients), and the target-KL stop (a mask: a stopped
agent's rows are computed but not applied).

Agent k then follows the single run with seed k up to float rounding (a batched matrix product
and a per-row norm may round differently from their one-agent forms; tests/test_population.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from ppokit import distributed
from ppokit.algos.common import global_weighted_mean
from ppokit.algos.ppo import PPO
from ppokit.algos.ppo_kl import PPOKL, penalized_loss
from ppokit.batch import SAMPLE_FIELDS, Minibatch, masked_mean, normalize_advantages
from ppokit.fast.network import backward_cached, forward_cached, policy_forward
from ppokit.fast.ppo import output_gradients
from ppokit.optim import adam_steps_

if TYPE_CHECKING:
    from ppokit.batch import Batch
    from ppokit.loop import Learner, Member

# Config fields that shape the update loop: the agents of one stacked update share them (the
# float coefficients may differ). Missing fields (PPO-KL has no clip_vloss) count as None.
SHARED_FIELDS = ("update_epochs", "minibatch_size", "norm_adv", "norm_adv_scope", "clip_vloss", "adam_eps", "adaptive")
STACKABLE = (PPO, PPOKL)  # the minibatch algorithms (TRPO and VPG update agent by agent)


def stackable(learners: list[Learner]) -> bool:
    """True when the learners' updates can run as one: all PPO or all PPO-KL, on the fast path
    (not compiled, one process), the same network and action space, the same batch and loop shape."""
    if len(learners) < 2 or distributed.active():
        return False
    algos = [learner.algo for learner in learners]
    if type(algos[0]) not in STACKABLE or any(type(algo) is not type(algos[0]) for algo in algos):
        return False
    steps = [algo.gradient_step for algo in algos]
    if any(step.mode != "fast" or step.compiled for step in steps):
        return False
    first = learners[0]

    def signature(learner: Learner) -> tuple:
        cfg, step = learner.algo.cfg, learner.algo.gradient_step
        return (step.names, [tuple(p.shape) for p in step.parameters], str(step.flat_params.device),
                learner.cfg.rollout.num_envs, learner.cfg.rollout.num_steps, learner.agent.action_space,
                learner.agent.observation_space, learner.agent.obs_normalizer is None,
                learner.agent.obs_normalizer is not None and learner.agent.obs_normalizer.clip is None,
                getattr(cfg, "clip_coef", None) is None, learner.algo.target_kl is None, cfg.max_grad_norm is None,
                *(getattr(cfg, name, None) for name in SHARED_FIELDS))

    return all(signature(learner) == signature(first) for learner in learners[1:])


class StackedPPO:
    """Acting and the PPO (or PPO-KL) update of K learners, each as one set of batched operations
    (a :class:`ppokit.loop.Stacked`). Build it with :func:`stackable` learners; it takes their
    parameters into its ``[K, S]`` buffers."""

    def __init__(self, learners: list[Learner]):
        self.learners = learners
        self.algos: list[PPO] = [learner.algo for learner in learners]  # type: ignore[misc]
        self.rows = {id(learner): k for k, learner in enumerate(learners)}
        steps = [algo.gradient_step for algo in self.algos]
        layout = steps[0].layout
        count = len(learners)
        self.params, self.grad = layout.zeros(count), layout.zeros(count)
        exp_avg, exp_avg_sq = layout.zeros(count), layout.zeros(count)
        for k, step in enumerate(steps):
            step.adopt_storage(self.params[k], self.grad[k], exp_avg[k], exp_avg_sq[k])
        # Each parameter as a [K, *shape] view of the rows, by the agent's parameter names.
        def stacked(buffer: torch.Tensor) -> dict[str, torch.Tensor]:
            return {name: buffer[:, offset:offset + numel].view(count, *shape)
                    for name, offset, numel, shape in zip(steps[0].names, layout.offsets, layout.numels, layout.shapes)}

        self.stacked_params, self.stacked_grads = stacked(self.params), stacked(self.grad)
        self.agent = learners[0].agent  # the structure (layers, head); every agent's is the same
        # PPO's loss has a hand-derived gradient (per sample: coefficients [K, 1]); PPO-KL's is
        # differentiated by autograd on the outputs (per agent: coefficients [K]).
        self.by_hand = type(self.algos[0]) is PPO
        norms = [algo.cfg.max_grad_norm for algo in self.algos]  # each agent's (it may be swept)
        self.max_norms = None if norms[0] is None else torch.tensor(norms, device=self.params.device)
        self.obs_stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

    # ------------------------------------------------------------------ acting

    def covers(self, members: list[Member]) -> bool:
        """True when ``members`` are exactly this population's agents, in order (none has ended)."""
        return [self.rows.get(id(m.learner)) for m in members] == list(range(len(self.learners)))

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
            return policy_forward(self.agent, self.stacked_params, x)
        x = torch.stack(observations).to(torch.float32)  # [K, N, *obs]
        if self.obs_stats is not None:
            mean, std, bound = self.obs_stats
            x = (x - mean) / std
            if bound is not None:
                x = torch.clamp(x, -bound, bound)
        return policy_forward(self.agent, self.stacked_params, x.reshape(*x.shape[:2], -1))

    # ------------------------------------------------------------------ one update

    def update(self, members: list[Member], batches: list[Batch]) -> list[dict[str, float]]:
        """Step 3 of an iteration for ``members`` (each with its batch ``[B, ...]``)."""
        if not self.covers(members):
            return self._one_by_one(members, batches)  # some agents ended: each updates alone
        progress = [m.progress.iteration / m.progress.total_iterations for m in members]
        hypers = [algo.hyperparameters(p) for algo, p in zip(self.algos, progress)]
        data, normalized = self._stack(batches)
        per_agent = self._epochs(members, data, normalized, hypers)
        results = []
        for algo, hyper, batch, stats in zip(self.algos, hypers, batches, per_agent):
            stats["learning_rate"] = hyper["lr"]
            algo.after_epochs(batch, hyper, stats)
            results.append(stats)
        return results

    def _one_by_one(self, members: list[Member], batches: list[Batch]) -> list[dict[str, float]]:
        out = []
        for member, batch in zip(members, batches):
            progress = member.progress
            with member.streams:
                out.append(member.learner.algo.update(batch, progress.iteration / progress.total_iterations))
        return out

    def _per_agent(self, values: list[float]) -> torch.Tensor:
        """One value per agent: ``[K, 1]`` for the hand-derived gradient (it scales ``[K, M]``
        samples), ``[K]`` for autograd's loss (it scales per-agent means)."""
        column = torch.tensor(values, dtype=torch.float32, device=self.params.device)
        return column.unsqueeze(-1) if self.by_hand else column

    def _loss_config(self) -> Any:
        """The first agent's section with the coefficients that may differ as per-agent tensors."""
        cfgs = [algo.cfg for algo in self.algos]
        return replace(cfgs[0], ent_coef=self._per_agent([c.ent_coef for c in cfgs]),
                       vf_coef=self._per_agent([c.vf_coef for c in cfgs]))

    def _stack(self, batches: list[Batch]) -> tuple[dict[str, torch.Tensor], bool]:
        """The agents' batches as ``[K, B, ...]`` tensors, observations already normalized and flat
        (the normalizers do not move during the update); advantages normalized over each agent's
        whole batch when ``norm_adv_scope`` is ``batch``."""
        cfg = self.algos[0].cfg
        normalized = cfg.norm_adv and cfg.norm_adv_scope == "batch"
        data = {}
        for name in SAMPLE_FIELDS:
            if name == "obs":
                rows = [learner.agent.actor_trunk[0](learner.agent.preprocess(batch.obs))
                        for learner, batch in zip(self.learners, batches)]
            elif name == "advantages" and normalized:
                rows = [normalize_advantages(batch.advantages, batch.weights, mean_fn=global_weighted_mean)
                        for batch in batches]
            else:
                rows = [getattr(batch, name) for batch in batches]
            data[name] = torch.stack(rows)
        return data, normalized

    def _epochs(self, members: list[Member], data: dict[str, torch.Tensor], normalized: bool,
                hypers: list[dict[str, float]]) -> list[dict[str, float]]:
        """``update_epochs`` passes of minibatch steps, each agent in its own order; an agent whose
        epoch's mean approx KL exceeds its ``target_kl`` stops (its later rows are not applied)."""
        count, size = data["obs"].shape[:2]
        cfg = self._loss_config()
        minibatch_size = cfg.minibatch_size
        targets = [algo.target_kl for algo in self.algos]
        hyper = {key: self._per_agent([h[key] for h in hypers]) for key in hypers[0] if key != "lr"}
        active = [True] * count
        epochs_run, stopped = [0] * count, [False] * count
        history: list[tuple[list[bool], dict[str, torch.Tensor]]] = []
        whole = None
        if minibatch_size >= size:
            whole = Minibatch.of(data, advantages_normalized=normalized)
            if whole.normalized_advantages is None:
                whole.normalized_advantages = normalize_advantages(whole.advantages, whole.mean_weights,
                                                                   mean_fn=masked_mean)
        for epoch in range(cfg.update_epochs):
            first = len(history)
            want_stats = targets[0] is not None or epoch == cfg.update_epochs - 1
            if whole is not None:
                parts = [whole.with_stats(want_stats)]
            else:
                shuffled = self._shuffled(members, data, size)
                parts = [Minibatch.of({k: v[:, i:i + minibatch_size] for k, v in shuffled.items()}, want_stats,
                                      normalized) for i in range(0, size, minibatch_size)]
            for minibatch in parts:
                history.append((list(active), self._step(minibatch, cfg, hyper, hypers, active)))
            for k in range(count):
                epochs_run[k] += active[k]
            if targets[0] is not None:
                epoch_kl = torch.stack([stats["approx_kl"] for _, stats in history[first:]]).mean(0)  # [K]
                for k in range(count):
                    if active[k] and float(epoch_kl[k]) > targets[k]:
                        active[k], stopped[k] = False, True
                if not any(active):
                    break
        return [self._agent_stats(k, history, epochs_run[k], stopped[k]) for k in range(count)]

    def _shuffled(self, members: list[Member], data: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
        """The samples of each agent in a new random order from that agent's stream, ``[K, B, ...]``."""
        orders = []
        for member in members:
            with member.streams:
                orders.append(torch.randperm(size, device=self.params.device))
        order = torch.stack(orders)  # [K, B]
        rows = torch.arange(order.shape[0], device=order.device).unsqueeze(-1)
        return {name: value[rows, order] for name, value in data.items()}

    @torch.no_grad()
    def _step(self, minibatch: Minibatch, cfg: Any, hyper: dict[str, torch.Tensor], hypers: list[dict[str, float]],
              active: list[bool]) -> dict[str, torch.Tensor]:
        """One minibatch step of every agent; only the ``active`` ones apply it. Stats ``[K]`` each."""
        agent = self.agent
        policy_out, values, cache = forward_cached(agent, self.stacked_params, minibatch.obs)
        grad_policy, grad_values, stats = self._output_gradients(cfg, policy_out, values, minibatch, hyper)
        backward_cached(agent, self.stacked_params, cache, grad_policy, grad_values, self.stacked_grads)
        norms = torch.linalg.vector_norm(self.grad, dim=1)  # [K]: each agent's global norm
        if self.max_norms is not None:
            self.grad.mul_(torch.clamp(self.max_norms / (norms + 1e-6), max=1.0).unsqueeze(-1))
        by_lr: dict[float, list[int]] = {}
        for k, h in enumerate(hypers):
            if active[k]:
                by_lr.setdefault(h["lr"], []).append(k)
        for lr, rows in by_lr.items():
            adam_steps_([self.params[k] for k in rows], [self.grad[k] for k in rows],
                        [self.algos[k].gradient_step.adam for k in rows], lr, eps=cfg.adam_eps)
        return {**stats, "grad_norm": norms}

    def _output_gradients(self, cfg: Any, policy_out: torch.Tensor, values: torch.Tensor, minibatch: Minibatch,
                          hyper: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Every agent's ``dLoss/dpolicy_out [K, M, P]`` and ``dLoss/dvalues [K, M]``, and its stats ``[K]``."""
        head = self.agent.head
        if self.by_hand:
            return output_gradients(cfg, head, policy_out, values, minibatch, hyper)
        policy_out, values = policy_out.detach().requires_grad_(), values.detach().requires_grad_()
        with torch.enable_grad():
            loss, stats = penalized_loss(cfg, head, policy_out, values, minibatch, hyper)  # [K]
            grad_policy, grad_values = torch.autograd.grad(loss.sum(), [policy_out, values])  # agents are independent
        return grad_policy, grad_values, stats

    @staticmethod
    def _agent_stats(k: int, history: list[tuple[list[bool], dict[str, torch.Tensor]]], epochs: int,
                     stopped: bool) -> dict[str, float]:
        """Agent k's statistics as :func:`ppokit.algos.common.run_epochs` reports them."""
        mine = [stats for active, stats in history if active[k]]
        keys = sorted({key for stats in mine for key in stats})
        out = {key: float(torch.stack([stats[key][k] if stats[key].dim() else stats[key]
                                       for stats in mine if key in stats]).mean()) for key in keys}
        out["epochs"], out["grad_steps"], out["early_stop"] = float(epochs), float(len(mine)), float(stopped)
        return out

