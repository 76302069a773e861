"""THE training loop: act -> judge -> learn -> normalizer -> log, repeated. Read this file first.

One iteration of PPO-family training for one agent is :func:`act_and_judge` (1. act, 2. judge),
the algorithm's update (3. learn) and :func:`after_learning` (4. the normalizer);
:func:`run_iterations` takes every agent being trained through them (a single run is a
population of one: :class:`Member`) and does the bookkeeping after each iteration (episode
statistics, metrics row, callbacks, checkpoints).
Everything around the loop lives elsewhere: the run folder, resume and the summary in
:mod:`ppokit.run`, the saved training state in :mod:`ppokit.training_state`, Ctrl-C in
:mod:`ppokit.signals`, the numerical checks in :mod:`ppokit.health`, a population's batched
acting and updates in :mod:`ppokit.fast.stacked`.

Shapes: T = ``rollout.num_steps``, N = this process's envs, B = T * N.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from ppokit import distributed
from ppokit.advantages import gae
from ppokit.algos.common import explained_variance
from ppokit.batch import flatten
from ppokit.errors import EnvError, TrainingError
from ppokit.health import check_rollout, check_update
from ppokit.metrics import EpisodeWindow
from ppokit.rollout import Collection, CollectorState, Episodes, Rollout, Timings, collect

if TYPE_CHECKING:
    from ppokit.agent import Agent
    from ppokit.algos.registry import Algorithm
    from ppokit.batch import Batch
    from ppokit.config import Config
    from ppokit.envs import VectorEnvs
    from ppokit.metrics import MetricsWriter

# ``callback(row, agent)`` after every iteration: ``row`` is that iteration's metrics.csv row (a
# dict); returning False stops the run cleanly (saved, summary "completed" with a stop_reason).
Callback = Callable[[dict[str, Any], "Agent"], Any]


@dataclass
class Learner:
    """What one iteration reads and changes."""

    cfg: Config
    agent: Agent
    algo: Algorithm
    envs: VectorEnvs
    storage: Rollout  # [T, N, ...], refilled every iteration
    collector: CollectorState  # what carries over between iterations: last observations, open episodes
    timings: Timings = field(default_factory=Timings)


def act_and_judge(learner: Learner, index: int) -> tuple[Episodes, Batch]:
    """Steps 1 and 2 of an iteration: the finished episodes and the flat batch ``[B, ...]`` to learn from."""
    cfg = learner.cfg
    # A C-ordered copy: vector envs may return transposed views, and matmul rounding depends on the
    # memory layout, which would make a resumed run (whose observations a checkpoint restored) differ.
    learner.collector.obs = np.ascontiguousarray(learner.collector.obs)

    # 1. Act: step every env T times with the current policy, filling storage [T, N, ...].
    finished = collect(learner.agent, learner.envs, learner.collector, learner.storage, cfg.rollout.gamma,
                       learner.timings)
    return finished, judge(learner, index)


def judge(learner: Learner, index: int) -> Batch:
    """Step 2 of an iteration, after the rollout was collected: the flat batch ``[B, ...]``."""
    cfg, agent, storage = learner.cfg, learner.agent, learner.storage
    check_rollout(index, cfg.env_id, storage, learner.collector, agent)

    start = time.perf_counter()
    # 2. Judge: GAE advantages and the critic's targets, [T, N] (GAE paper eq. 16; time limits bootstrap).
    advantages, returns = gae(storage.rewards, storage.values, storage.next_values, storage.terminated,
                              storage.truncated, cfg.rollout.gamma, cfg.rollout.gae_lambda)
    batch = flatten(storage, advantages, returns)
    learner.timings.update += time.perf_counter() - start
    return batch


def after_learning(learner: Learner, index: int, batch: Batch, stats: dict[str, float]) -> None:
    """Step 4 of an iteration, after the update gave ``stats`` (completed in place)."""
    start = time.perf_counter()
    agent, storage = learner.agent, learner.storage
    check_update(index, stats, agent)
    # 4. Only now move the observation normalizer: the policy acted and learned with the old
    #    statistics. Every process merges the observations of all (exactly, not an average of theirs).
    if agent.obs_normalizer is not None:
        agent.obs_normalizer.update_over_processes(storage.obs[storage.valid])
    stats["explained_variance"] = explained_variance(batch.values, batch.returns, batch.weights)
    learner.timings.update += time.perf_counter() - start


@dataclass
class Progress:
    """Where a run stands: iterations done, recent episodes, the best return, when it was solved."""

    total_iterations: int
    global_batch: int  # env steps per iteration, over all processes
    solved_threshold: float | None = None
    stop_when_solved: bool = False  # end the run once solved (stop_reason says so)
    iteration: int = 0
    start_iteration: int = 0  # where this session started (later than 0 when resumed)
    wall_time_before: float = 0.0  # seconds spent in earlier sessions of this run
    session_start: float = field(default_factory=time.perf_counter)
    episodes: EpisodeWindow = field(default_factory=EpisodeWindow)
    best_return: float = -math.inf  # best mean of the last 20 training returns at a checkpoint
    solved_at_step: int | None = None
    solved_at_time: float | None = None
    saved_step: int | None = None  # global step of checkpoints/latest, None before the first save
    in_iteration: bool = False  # mid-iteration: the state is not a consistent checkpoint
    stop_reason: str | None = None  # why the run ended before total_iterations (a callback, solved)

    @property
    def step(self) -> int:
        """Environment steps done, over all processes."""
        return self.iteration * self.global_batch

    def elapsed(self) -> float:
        """Wall-clock seconds of the whole run, earlier sessions included."""
        return self.wall_time_before + time.perf_counter() - self.session_start

    def record(self, gathered: list[tuple[list[float], list[int]]], stats: dict[str, float],
               timings: Timings) -> dict[str, Any]:
        """Add the finished episodes of every process; the metrics.csv row of this iteration."""
        for returns, lengths in gathered:
            self.episodes.add(returns, lengths)
        recent = self.episodes.mean_return()
        wall = self.elapsed()
        if (self.solved_threshold is not None and self.solved_at_step is None and len(self.episodes.returns) >= 20
                and recent is not None and recent >= self.solved_threshold):
            self.solved_at_step, self.solved_at_time = self.step, wall
        return {
            "global_step": self.step, "wall_time_s": wall, "sps": self.step / wall,
            "episodic_return_mean": recent, "episodic_length_mean": self.episodes.mean_length(),
            "episodes": sum(len(returns) for returns, _ in gathered), "iteration": self.iteration,
            **timings.split(wall), **stats,
        }


class RandomStreams:
    """One agent's random number generators: torch's (and the GPU's) and numpy's global ones.

    Every agent of a population draws from its own streams, exactly as a single run with its
    seed would: ``with member.streams:`` puts them in place for that agent's work and keeps
    where they stopped. (The global generators are what a checkpoint saves and restores.)"""

    def __init__(self, device: torch.device):
        self.device = device
        self.capture()

    def capture(self) -> None:
        self._capture_torch()
        self.numpy = np.random.get_state()

    def _capture_torch(self) -> None:
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    def _restore_torch(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)

    def __enter__(self) -> RandomStreams:
        self._restore_torch()
        np.random.set_state(self.numpy)
        return self

    def __exit__(self, *exc: object) -> None:
        self.capture()

    @contextlib.contextmanager
    def torch_only(self) -> Iterator[None]:
        """Only torch's generators (what sampling an action draws from): cheap enough for every
        env step (numpy's state costs ~65 us to swap, torch's ~1 us)."""
        self._restore_torch()
        try:
            yield
        finally:
            self._capture_torch()


@dataclass
class Member:
    """One agent being trained: a single run is a population of one.

    ``evaluation(progress)`` runs after each iteration and returns the fields it adds to the row
    (``{}`` when it was not due; see :mod:`ppokit.evaluations`); ``after_iteration`` runs after
    each iteration's row is logged (periodic checkpoints)."""

    learner: Learner
    progress: Progress
    writer: MetricsWriter
    streams: RandomStreams
    after_iteration: Callable[[], None] = lambda: None
    evaluation: Callable[[Progress], dict[str, Any]] | None = None
    failure: Exception | None = None  # why this agent stopped early (a non-finite number, an env error)
    finished: Episodes = field(default_factory=Episodes)  # the episodes that ended in this iteration

    def running(self) -> bool:
        progress = self.progress
        return (self.failure is None and progress.stop_reason is None
                and progress.iteration < progress.total_iterations)


# The errors that end one agent of a population (its run fails; the others go on). Anything
# else (Ctrl-C, a full disk, a bug) ends them all.
MemberError = (TrainingError, EnvError)


class Stacked(Protocol):
    """Several agents' acting forward and update as batched operations
    (:class:`ppokit.fast.stacked.StackedPopulation`) instead of one per agent."""

    def covers(self, members: list[Member]) -> bool: ...

    def begin_rollout(self) -> None: ...

    def policy(self, observations: list[torch.Tensor]) -> torch.Tensor: ...

    def update(self, members: list[Member], batches: list[Batch]) -> list[dict[str, float]]: ...


def run_iterations(members: list[Member], callbacks: list[Callback], should_stop: Callable[[], bool],
                   joint: Stacked | None = None) -> None:
    """Iterate every member until its ``total_iterations``, its failure or a callback returning
    False; all stop when ``should_stop()``. Each iteration: every member acts and judges (steps 1-2,
    with its own random streams), all learn (step 3), then each finishes its iteration and
    bookkeeping; ``joint``, when given, does the acting forward and the update of all the members
    as batched operations. An error of :data:`MemberError` ends that member only."""
    while True:
        active = [member for member in members if member.running()]
        if not active:
            return
        for member in active:
            member.progress.in_iteration = True
        if joint is not None and len(active) > 1 and joint.covers(active):
            batches = _act_together(active, joint)  # 1-2
        else:
            batches = {}
            for member in active:  # 1-2
                with member.streams:
                    try:
                        member.finished, batches[id(member)] = act_and_judge(member.learner,
                                                                             member.progress.iteration)
                    except MemberError as error:
                        member.failure = error
        ready = [member for member in active if id(member) in batches]
        for member, stats in zip(ready, _learn(ready, [batches[id(m)] for m in ready], joint)):  # 3
            with member.streams:
                _finish_iteration(member, batches[id(member)], stats, callbacks, should_stop)  # 4
        if should_stop():
            return


def _act_together(members: list[Member], joint: Stacked) -> dict[int, Batch]:
    """Steps 1-2 for members that act together: per env step one batched forward of every actor,
    then each samples (from its own stream) and steps its own envs. Returns the batches by member id."""
    rollouts = []
    for member in members:
        learner = member.learner
        learner.collector.obs = np.ascontiguousarray(learner.collector.obs)  # as act_and_judge does
        rollouts.append(Collection(learner.agent, learner.envs, learner.collector, learner.storage,
                                   learner.cfg.rollout.gamma, learner.timings))
    going = list(range(len(members)))  # the members whose envs have not failed
    joint.begin_rollout()
    with torch.inference_mode():
        for t in range(rollouts[0].num_steps):
            start = time.perf_counter()
            policy_out = joint.policy([rollout.storage.obs[t] for rollout in rollouts])  # [K, N, P]
            share = (time.perf_counter() - start) / len(going)
            for k in list(going):
                member = members[k]
                member.learner.timings.inference += share
                with member.streams.torch_only():
                    action = member.learner.agent.head.sample(policy_out[k])
                try:
                    rollouts[k].step(t, action)
                except MemberError as error:
                    member.failure = error
                    going.remove(k)
        for k in going:
            with members[k].streams:
                members[k].finished = rollouts[k].finish()
    batches = {}
    for k in going:
        member = members[k]
        with member.streams:
            try:
                batches[id(member)] = judge(member.learner, member.progress.iteration)
            except MemberError as error:
                member.failure = error
    return batches


def _learn(members: list[Member], batches: list[Batch], joint: Stacked | None) -> list[dict[str, float]]:
    """Step 3 of an iteration for every member: the joint update, or each member's own."""
    start = time.perf_counter()
    if joint is not None and len(members) > 1 and joint.covers(members):
        stats = joint.update(members, batches)
        for member in members:
            member.learner.timings.update += (time.perf_counter() - start) / len(members)
        return stats
    stats = []
    for member, batch in zip(members, batches):
        progress = member.progress
        with member.streams:
            stats.append(member.learner.algo.update(batch, progress.iteration / progress.total_iterations))
        member.learner.timings.update += time.perf_counter() - start
        start = time.perf_counter()
    return stats


def _finish_iteration(member: Member, batch: Batch, stats: dict[str, float], callbacks: list[Callback],
                      should_stop: Callable[[], bool]) -> None:
    """Step 4 of one member's iteration and its bookkeeping: statistics, metrics row, evaluation,
    callbacks, checkpoints."""
    learner, progress = member.learner, member.progress
    try:
        after_learning(learner, progress.iteration, batch, stats)
    except MemberError as error:
        member.failure = error
        return
    finished = member.finished
    progress.iteration += 1
    gathered = distributed.gather_objects((finished.returns, finished.lengths))
    progress.in_iteration = False

    row = progress.record(gathered, stats, learner.timings)  # type: ignore[arg-type]
    if member.evaluation is not None:
        row.update(member.evaluation(progress))
    member.writer.log(row)
    stopped_by = [fn for fn in callbacks if fn(row, learner.agent) is False]
    if distributed.any_true(bool(stopped_by)):
        name = getattr(stopped_by[0], "__name__", repr(stopped_by[0])) if stopped_by else "another process"
        progress.stop_reason = f"callback {name} returned False at step {progress.step}"
        return
    if progress.stop_when_solved and progress.solved_at_step is not None:
        progress.stop_reason = (f"solved at step {progress.solved_at_step} (the mean of the last 20 training "
                                f"returns reached {progress.solved_threshold}; stop_when_solved)")
        return
    if not should_stop():
        member.after_iteration()
