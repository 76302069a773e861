"""A run around the loop: the run folder, resume, signals, checkpoints, the final evaluation and summary.json.

:func:`train` builds what :mod:`ppokit.loop` iterates on (envs, agent, algorithm, storage),
restores a resumed run, runs the iterations and then, whatever happened, saves what can be
saved and writes the summary. The run folder is described in README.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ppokit import checkpoint, distributed, memory, run_folder, tracking, training_state
from ppokit.agent import Agent, shape_only
from ppokit.algos import ALGOS
from ppokit.algos.common import CRITIC_PREFIXES
from ppokit.algos.minibatch import gradient_steps_per_iteration
from ppokit.config import Config, save_yaml, to_dict, validate
from ppokit.envs import FROM_ENV_ID, EnvSource, ReportErrors, ensure_registered, make_envs
from ppokit.errors import ConfigError, EnvError, PeerLost
from ppokit.evaluate import evaluate
from ppokit.evaluations import FILE as EVALUATIONS_FILE
from ppokit.evaluations import PeriodicEvaluation
from ppokit.fast.stacked import StackedPopulation, stackable
from ppokit.loop import Callback, Learner, Member, Progress, RandomStreams, run_iterations
from ppokit.metrics import MetricsWriter, columns_for
from ppokit.rollout import CollectorState, Rollout
from ppokit.signals import StopRequest
from ppokit.spaces import check_spaces

log = logging.getLogger("ppokit")


@dataclass
class RunResult:
    agent: Agent
    summary: dict[str, Any]
    run_dir: Path
    main_process: bool = True  # rank 0 (or the only process): the one that wrote the run folder and reports


class Interrupted(KeyboardInterrupt):
    """Raised after an interrupted run has saved its checkpoint and summary."""

    def __init__(self, result: RunResult):
        super().__init__("interrupted")
        self.result = result


class TrainingFailed(RuntimeError):
    """Raised after a failed run wrote its summary (the last good checkpoint is kept)."""

    def __init__(self, message: str, result: RunResult):
        super().__init__(message)
        self.result = result


def resolve_device(requested: str, cfg: Config) -> tuple[torch.device, str]:
    """The device to train on, and a sentence saying why."""
    if requested == "cpu":
        return torch.device("cpu"), "asked for cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: '{requested}' was asked for but no CUDA GPU is available (use cpu or auto)")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device: '{requested}' does not exist; this machine has "
                              f"{torch.cuda.device_count()} GPU(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return torch.device(requested), f"asked for {requested}"
    if not torch.cuda.is_available():
        return torch.device("cpu"), "auto: no GPU available"
    if cfg.env_id.startswith("ALE/") or "NoFrameskip" in cfg.env_id or cfg.pixels.preprocess in ("atari", "image"):
        return torch.device("cuda"), "auto: image observations (CNN) run faster on the GPU"
    return torch.device("cpu"), (
        "auto: small MLP policies step faster on the CPU (per-step GPU transfers cost more than the math); "
        "use --device cuda to override"
    )


def update_path(cfg: Config, device: torch.device) -> str:
    """The gradient path for this run (:data:`ppokit.algos.common.PATHS`): ``update_path``, with
    ``auto`` deciding by workload between ``compile`` and ``eager`` (fast path where it applies)."""
    if cfg.update_path != "auto":
        return cfg.update_path
    # Compiling costs ~5-10 s once and saves ~0.3 ms per gradient step on a small MLP (see
    # docs/performance.md): worth it only beyond ~50k gradient steps, and only for the
    # minibatch algorithms. On a GPU the eager kernels are already asynchronous.
    per_iteration = gradient_steps_per_iteration(cfg.algo_section(), cfg.batch_size)
    if per_iteration is None or device.type != "cpu":
        return "eager"
    return "compile" if cfg.iterations * per_iteration >= 50_000 else "eager"


def check_memory(cfg: Config, source: EnvSource, networks: dict[str, torch.nn.Module] | None,
                 world_size: int) -> None:
    """ConfigError if this process's share of the run cannot fit in memory (:func:`ppokit.memory.estimate`).

    The spaces come from one probe env; the agent is built on the ``meta`` device (no memory)."""
    probe = source.make(cfg.env_id, cfg.env.kwargs, pixels=cfg.pixels)
    try:
        check_spaces(cfg.env_id, probe.observation_space, probe.action_space)
        skeleton = shape_only(probe.observation_space, probe.action_space, cfg.model, cfg.env, networks,
                              cfg.fits_critic_apart())
    finally:
        probe.close()
    if skeleton is None:  # the user's own networks: their size is theirs to know
        return
    parts = memory.estimate(cfg, skeleton, cfg.rollout.num_envs // world_size)
    biggest = max(parts, key=parts.__getitem__)
    memory.check_fits(sum(parts.values()), "this config",
                      f"; most of it for the {biggest} ({memory.format_bytes(parts[biggest])}): lower {LOWER[biggest]}")


# What shrinks each part of the estimate.
LOWER = {"rollout": "rollout.num_envs or rollout.num_steps",
         "activations": "rollout.num_envs, rollout.num_steps or model.hidden_sizes",
         "networks": "model.hidden_sizes", "envs": "rollout.num_envs"}


class Checkpoints:
    """When to write ``checkpoints/latest`` and ``checkpoints/best`` (only rank 0 writes).

    ``best`` is the agent with the highest score so far: the mean return of an evaluation during
    training when those run (``by_evaluation``, see :meth:`after_evaluation`), else the mean of
    the last 20 training returns, considered after every iteration. Either way it is saved as soon
    as the score improves, not only when ``latest`` is due."""

    def __init__(self, run_dir: Path, learner: Learner, progress: Progress, enabled: bool,
                 by_evaluation: bool = False):
        self.folder = run_dir / "checkpoints"
        self.learner, self.progress, self.enabled = learner, progress, enabled
        self.by_evaluation = by_evaluation
        self.last_time = time.perf_counter()

    def save(self, name: str) -> None:
        """Write checkpoint ``name`` (rank 0); every process notes the step of ``latest``."""
        if self.enabled:
            training_state.save(self.folder / name, self.learner, self.progress)
        if name == "latest":
            self.progress.saved_step = self.progress.step

    def consider_best(self, score: float | None) -> bool:
        """Save ``best`` if ``score`` beats the best so far (ties keep the earlier agent)."""
        if score is None or not math.isfinite(score) or score <= self.progress.best_return:
            return False
        self.progress.best_return = score
        self.save("best")
        return True

    def after_evaluation(self, score: float) -> None:
        """An evaluation during training scored ``score`` (its mean return)."""
        self.consider_best(score)

    def save_latest(self) -> None:
        self.save("latest")
        self.last_time = time.perf_counter()

    def after_iteration(self) -> None:
        """``best`` by training return (without evaluations); ``latest`` every ``checkpoint_every``
        iterations and at least every ``checkpoint_interval_s`` seconds (not after the last
        iteration: the end of the run saves that one)."""
        cfg, progress = self.learner.cfg, self.progress
        if not self.by_evaluation:
            self.consider_best(progress.episodes.mean_return())
        due = cfg.checkpoint_every is not None and progress.iteration % cfg.checkpoint_every == 0
        due = due or time.perf_counter() - self.last_time > cfg.checkpoint_interval_s
        if due and progress.iteration < progress.total_iterations:
            self.save_latest()

    def at_end(self) -> None:
        """The final ``latest``; ``best`` too if it improved or was never written."""
        self.save_latest()
        if not self.by_evaluation:
            self.consider_best(self.progress.episodes.mean_return())
        if not (self.folder / "best").exists():
            self.save("best")


def evaluation_hook(cfg: Config, source: EnvSource, agent: Agent, run_dir: Path, checkpoints: Checkpoints,
                    enabled: bool) -> tuple[Callable[[Progress], dict[str, Any]] | None, Callable[[], None]]:
    """The evaluation during training for :func:`ppokit.loop.run_iterations` (None when off or not
    rank 0), and the function that closes its envs. Each result is logged and offered as ``best``."""
    if not enabled or cfg.eval.every_steps <= 0:
        return None, lambda: None
    def make_env() -> Any:
        return ReportErrors(source.make(cfg.env_id, cfg.env.kwargs, pixels=cfg.pixels), cfg.env_id, None)

    periodic = PeriodicEvaluation(cfg.eval, make_env, cfg.seed, run_dir / EVALUATIONS_FILE,
                                  cfg.eval_max_episode_steps)

    def evaluate_if_due(progress: Progress) -> dict[str, Any]:
        last = progress.iteration >= progress.total_iterations
        if not periodic.due(progress.step - progress.global_batch, progress.step, last):
            return {}
        result = periodic.run(agent, progress.step, progress.elapsed())
        checkpoints.after_evaluation(result.mean)
        return {key: value for key, value in result.row().items() if key.startswith("eval_")}

    return evaluate_if_due, periodic.close


@dataclass
class MemberRun:
    """What one agent's training needs beside its config: where it goes, or what it resumes."""

    cfg: Config
    run_dir: str | Path | None = None
    resume: str | Path | None = None


def train(cfg: Config, run_dir: str | Path | None = None, resume: str | Path | None = None,
          quiet: bool = False, callbacks: list[Callback] | None = None,
          source: EnvSource = FROM_ENV_ID, networks: dict[str, torch.nn.Module] | None = None,
          log_every: int = 0, track: str | None = None) -> RunResult:
    """Train ``cfg`` into ``run_dir`` (or continue the run in ``resume``).

    Bad input raises ConfigError before any work. Ctrl-C / SIGTERM finish the current iteration,
    save ``checkpoints/latest`` and raise :class:`Interrupted`; a non-finite number or a failing
    env keeps the last good checkpoint and raises :class:`TrainingFailed`. Both write summary.json.
    ``callbacks`` run after every iteration (see :data:`ppokit.loop.Callback`); ``source`` makes
    the envs when they are not simply ``cfg.env_id`` (an env factory, wrappers); ``networks`` are
    custom modules for the agent (see :func:`ppokit.agent.check_networks`). Progress shows as a
    bar on a terminal unless ``quiet``; otherwise as a plain line every ``log_every`` iterations
    (0: nothing; see :mod:`ppokit.progress`). ``track`` names a Weights & Biases project to log
    the run to (:mod:`ppokit.tracking`; the ``wandb`` extra).
    """
    result = train_members([MemberRun(cfg, run_dir, resume)], quiet=quiet, callbacks=callbacks, source=source,
                           networks=networks, log_every=log_every, track=track)[0]
    _raise_unless_completed(result)
    return result


def _raise_unless_completed(result: RunResult) -> None:
    status = result.summary["status"]
    if status == "interrupted":
        raise Interrupted(result)
    if status == "failed":
        raise TrainingFailed(result.summary.get("error") or "training failed", result)


def train_members(runs: list[MemberRun], quiet: bool = False, callbacks: list[Callback] | None = None,
                  source: EnvSource = FROM_ENV_ID, networks: dict[str, torch.nn.Module] | None = None,
                  log_every: int = 0, track: str | None = None) -> list[RunResult]:
    """Train several agents in one process, iteration by iteration in turn (a population, see
    :mod:`ppokit.population`); one agent is the single run of :func:`train`. Each writes its own
    run folder as :func:`train` does. Returns one result per agent, whatever its status: a failing
    agent (a non-finite number, an env error) stops alone; Ctrl-C stops and saves them all. A bug
    (an unexpected exception) is raised after every agent's summary is written."""
    with StopRequest() as stop, contextlib.ExitStack() as cleanup:
        sessions: list[Session] = []
        try:
            for run in runs:
                sessions.append(_open(run, quiet, source, networks, cleanup, log_every, track))
        except BaseException:
            for session in sessions:
                session.abandon()
            raise
        members = [session.member for session in sessions]
        learners = [member.learner for member in members]
        joint = StackedPopulation(learners) if stackable(learners) else None  # batched acting and updates
        status, error_message, unexpected = "completed", None, None

        def stop_requested() -> bool:
            """A stop asked of any process (Ctrl-C, SIGTERM) stops them all after the same iteration."""
            stop.requested = distributed.any_true(stop.requested)
            return stop.requested

        try:
            run_iterations(members, list(callbacks or []), stop_requested, joint)
        except KeyboardInterrupt:
            status = "interrupted"
        except PeerLost as error:  # another process died or hangs: this one cannot go on alone
            status, error_message = "failed", str(error)
        except OSError as error:  # e.g. the disk filled up while writing metrics or a checkpoint
            status, error_message = "failed", f"cannot write the run folder: {error}"
        except Exception as error:  # a bug: record the failure, then let the traceback through
            status, error_message, unexpected = "failed", f"{type(error).__name__}: {error}", error
        stop.mode = "saving"
        if stop.requested and status == "completed":
            status = "interrupted"  # stopped after the last iteration: the final evaluation is still to do
        results = []
        for session in sessions:
            with session.member.streams:
                results.append(session.close(status, error_message, stop))
        if unexpected is not None:
            raise unexpected
        return results


@dataclass
class Session:
    """One agent's run between :func:`_open` and :meth:`close`: its folder, the loop's member,
    and what the end of the run needs."""

    cfg: Config
    run_dir: Path
    member: Member
    checkpoints: Checkpoints
    envs: Any
    close_evaluation: Callable[[], None]
    source: EnvSource
    device: torch.device
    device_reason: str
    is_main: bool

    def abandon(self) -> None:
        """Close what a session that never ran holds (another agent failed to start)."""
        self.close_evaluation()
        self.envs.close()
        self.member.writer.close()

    def close(self, status: str, error_message: str | None, stop: StopRequest) -> RunResult:
        """Save what can be saved, run the final evaluation and write summary.json; the result."""
        member, cfg = self.member, self.cfg
        learner, progress = member.learner, member.progress
        if member.failure is not None:  # this agent failed before the others stopped (or were stopped)
            status, error_message = "failed", str(member.failure)
            if isinstance(member.failure, EnvError):
                error_message += f" (iteration {progress.iteration + 1})"
        try:
            if status != "failed" and not progress.in_iteration:
                self.checkpoints.at_end()
            elif status == "interrupted":
                log.info("abandoned iteration %d; checkpoints/latest is %s", progress.iteration + 1,
                         f"from step {progress.saved_step:,}" if progress.saved_step is not None
                         else "not written yet")
        except OSError as error:
            status, error_message = "failed", f"cannot write the checkpoint: {error}"
        summary = _summary(cfg, learner, progress, status, self.device, self.device_reason, learner.algo)
        if error_message:
            summary["error"] = error_message
        member.writer.close()
        try:
            self.close_evaluation()
            self.envs.close()
        except Exception as error:  # noqa: BLE001  (a crashed async worker can make closing fail)
            log.warning("closing the envs failed: %s", error)
        if status == "completed" and cfg.eval_episodes > 0 and self.is_main:
            summary["status"] = _final_evaluation(learner.agent, cfg, self.source, summary, stop)
        if self.is_main:
            try:
                member.writer.finish(summary)
            except OSError as error:
                log.warning("cannot write summary.json: %s", error)
        return RunResult(learner.agent, summary, self.run_dir, self.is_main)


def _open(run: MemberRun, quiet: bool, source: EnvSource, networks: dict[str, torch.nn.Module] | None,
          cleanup: contextlib.ExitStack, log_every: int, track: str | None) -> Session:
    """Check, create and lock the run folder, make the envs, the agent, the algorithm and the
    storage, restore a resumed run: everything before the first iteration. Bad input raises
    ConfigError before any work."""
    cfg, run_dir, resume = run.cfg, run.run_dir, run.resume
    run_folder.check_run_dir_argument(run_dir)
    if track is not None:
        tracking.check_project(track)
        tracking.require_wandb()
    saved: tuple[dict, dict, Path] | None = None
    if resume is not None:
        tensors, meta, folder = checkpoint.read(Path(resume))
        training_state.check_resume(checkpoint.config_of(meta, folder), cfg, meta, resume)
        run_dir = training_state.run_folder_of(resume, folder)
        saved = (tensors, meta, folder)
    validate(cfg, distributed.launched_world_size())
    rank, world_size = distributed.init(cfg.dist_timeout_s)
    is_main = rank == 0
    if source.factory is None:
        ensure_registered(cfg.env_id)
    run_dir = Path(run_dir) if run_dir is not None else run_folder.default_run_dir(cfg)

    torch.set_num_threads(cfg.torch_threads)
    distributed.seed_streams(distributed.stream_seeds(cfg.seed, rank))  # rank 0: exactly cfg.seed
    device, device_reason = resolve_device(cfg.device, cfg)
    check_memory(cfg, source, networks, world_size)  # before the envs, the agent or the storage exist
    created_run_dir = False
    if is_main:  # only rank 0 writes: it alone checks and locks the folder, until the summary is written
        lock = run_folder.prepare(run_dir, resuming=saved is not None)
        cleanup.callback(lock.release)
        created_run_dir = lock.created
    started = time.perf_counter()  # wall time counts env and agent construction too
    try:
        envs = make_envs(cfg, rank, world_size, source=source)
    except ConfigError:
        if created_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        agent = Agent(envs.observation_space, envs.action_space, cfg.model, cfg.env, networks,
                      cfg.fits_critic_apart()).to(device)
        agent.config = cfg
        distributed.broadcast_module(agent)
        algo = ALGOS[cfg.algo].make(agent, cfg, update_path(cfg, device))
        storage = Rollout.allocate(agent, envs, cfg.rollout.num_steps, device)
        learner = Learner(cfg, agent, algo, envs, storage, CollectorState.start(envs.reset()))
        global_batch = cfg.rollout.num_steps * cfg.rollout.num_envs
        progress = Progress(cfg.iterations, global_batch, cfg.solved_threshold, cfg.stop_when_solved,
                            session_start=started)
        if saved is not None:
            tensors, meta, folder = saved
            training_state.restore(tensors, meta, learner, progress, resume, folder)
        tracker = tracking.Tracker(track, to_dict(cfg), run_dir, quiet) if is_main and track is not None else None
    except ConfigError:
        envs.close()
        raise
    streams = RandomStreams(device)  # this agent's generators from here on (seeded, or restored)

    if is_main:
        save_yaml(cfg, run_dir / "config.yaml")
        if saved is not None:
            training_state.truncate_metrics(run_dir / "metrics.csv", progress.step)
            training_state.truncate_metrics(run_dir / EVALUATIONS_FILE, progress.step)
        if not quiet:
            log.info("device %s (%s)", device, device_reason)
            if cfg.log_parameter_counts:
                log.info("%s", parameter_counts(agent))
    writer = MetricsWriter(run_dir, columns_for(ALGOS[cfg.algo]), progress.total_iterations * global_batch,
                           progress.step, enabled=is_main, quiet=quiet, log_every=log_every, tracker=tracker)
    checkpoints = Checkpoints(run_dir, learner, progress, enabled=is_main,
                              by_evaluation=cfg.eval.every_steps > 0)
    evaluation, close_evaluation = evaluation_hook(cfg, source, agent, run_dir, checkpoints, is_main)
    member = Member(learner, progress, writer, streams, checkpoints.after_iteration, evaluation)
    return Session(cfg, run_dir, member, checkpoints, envs, close_evaluation, source, device, device_reason, is_main)


def parameter_counts(agent: Agent) -> str:
    """``number of parameters: pi 4,610, v 4,545`` (as Spinning Up says it at the start): the
    policy's (a shared trunk included) and the critic's own (``config.log_parameter_counts``)."""
    critic = sum(p.numel() for name, p in agent.named_parameters() if name.startswith(CRITIC_PREFIXES))
    policy = sum(p.numel() for p in agent.parameters()) - critic
    shared = " (with the shared trunk)" if agent.shared_trunk else ""
    return f"number of parameters: pi {policy:,}{shared}, v {critic:,}"


def _summary(cfg: Config, learner: Learner, progress: Progress, status: str, device: torch.device,
             device_reason: str, algo: Any) -> dict[str, Any]:
    """summary.json (CONTRACTS.md), before the final evaluation fills in its fields."""
    wall = progress.elapsed()
    summary: dict[str, Any] = {
        "status": status, "env_id": cfg.env_id, "algo": cfg.algo, "seed": cfg.seed,
        "total_steps": progress.step, "wall_time_s": wall, "sps": progress.step / wall if wall > 0 else None,
        "train_return_last20": progress.episodes.mean_return(20),
        "train_return_last100": progress.episodes.mean_return(100),  # the PPO paper's score (Table 1)
        "eval_return_mean": None, "eval_return_std": None, "eval_episodes": 0,
        "solved_threshold": cfg.solved_threshold, "solved_at_step": progress.solved_at_step,
        "solved_at_time_s": progress.solved_at_time,
        "versions": checkpoint.versions(), "device": str(device), "device_reason": device_reason,
        "compiled_update": bool(getattr(getattr(algo, "gradient_step", None), "compiled", False)),
        "update_path": getattr(getattr(algo, "gradient_step", None), "mode", None),
        "torch_threads": cfg.torch_threads, **learner.timings.split(wall),
        "checkpoint_step": progress.saved_step,
    }
    if progress.stop_reason is not None:
        summary["stop_reason"] = progress.stop_reason
    return summary


def _final_evaluation(agent: Agent, cfg: Config, source: EnvSource, summary: dict[str, Any],
                      stop: StopRequest) -> str:
    """Deterministic evaluation on fresh envs into ``summary``; returns the run's status after it."""
    stop.mode = "eval"
    try:
        result = evaluate(agent, source.factory or cfg.env_id, cfg.eval_episodes, seed=cfg.seed + 1_000_000,
                          env_kwargs=cfg.env.kwargs, wrappers=source.wrappers, step_cap=cfg.eval_max_episode_steps)
        summary.update(eval_return_mean=result["mean"], eval_return_std=result["std"], eval_episodes=result["episodes"],
                       eval_capped_episodes=result["capped_episodes"])
    except KeyboardInterrupt:
        return "interrupted"  # --resume runs the evaluation again
    except Exception as error:  # noqa: BLE001  (the run itself completed and is saved)
        log.warning("the evaluation after training failed: %s", error)
        summary["eval_error"] = str(error)
    finally:
        stop.mode = "saving"
    return "completed"
