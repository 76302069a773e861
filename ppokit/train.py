"""THE training loop: act (collect) -> judge (GAE) -> learn (algo.update) -> normalizer -> log.

Everything a run needs to continue exactly is in its ``checkpoints/latest``: weights,
optimizer state, normalizer statistics, global step, RNG states, the envs' state and the
in-progress episodes.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppokit import checkpoint, distributed, env_state
from ppokit.advantages import gae
from ppokit.agent import Agent
from ppokit.algos import ALGOS
from ppokit.algos.common import explained_variance
from ppokit.batch import flatten
from ppokit.config import Config, ConfigError, save_yaml, validate
from ppokit.envs import VectorEnvs, make_envs
from ppokit.evaluate import evaluate
from ppokit.metrics import EpisodeWindow, MetricsWriter, write_summary
from ppokit.rollout import CollectorState, Rollout, Timings, collect

log = logging.getLogger("ppokit")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite numbers, a failing env): exit code 1, summary "failed"."""


@dataclass
class RunResult:
    agent: Agent
    summary: dict[str, Any]
    run_dir: Path


def resolve_device(requested: str, cfg: Config) -> tuple[torch.device, str]:
    """The device to train on, and a sentence saying why."""
    from ppokit.networks import is_image_space  # noqa: F401  (documented rule below)

    if requested == "cpu":
        return torch.device("cpu"), "asked for cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: '{requested}' was asked for but no CUDA GPU is available (use cpu or auto)")
        return torch.device(requested), f"asked for {requested}"
    if not torch.cuda.is_available():
        return torch.device("cpu"), "auto: no GPU available"
    if cfg.env_id.startswith("ALE/") or "NoFrameskip" in cfg.env_id:
        return torch.device("cuda"), "auto: image observations (CNN) run faster on the GPU"
    return torch.device("cpu"), (
        "auto: small MLP policies step faster on the CPU (per-step GPU transfers cost more than the math); "
        "use --device cuda to override"
    )


def use_compile(cfg: Config, device: torch.device) -> bool:
    """Whether to torch.compile the update step (``compile: auto`` decides by workload)."""
    if cfg.compile != "auto":
        return cfg.compile == "on"
    return False


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env_id.replace('/', '-')}__{cfg.algo}__{cfg.seed}__{stamp}"


def _prepare_run_dir(run_dir: Path, cfg: Config, resume: bool) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"run folder '{run_dir}' is not writable ({error.strerror})") from None
    if not resume:
        if (run_dir / "checkpoints").exists() or (run_dir / "metrics.csv").exists():
            raise ConfigError(
                f"run folder '{run_dir}' already holds a run; continue it with --resume {run_dir} "
                "or pick another --run-dir"
            )
        save_yaml(cfg, run_dir / "config.yaml")


class _Terminate(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminate()


# ---------------------------------------------------------------------------- checkpoint state


def _state_tensors(agent: Agent, algo: Any, collector: CollectorState, envs: VectorEnvs) -> tuple[dict, dict]:
    tensors = {f"agent.{k}": v for k, v in agent.state_dict().items()}
    tensors.update({f"algo.{k}": v for k, v in algo.state_tensors().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    for name in ("obs", "next_is_reset", "episode_return", "episode_length", "discounted_return"):
        tensors[f"collector.{name}"] = torch.from_numpy(np.ascontiguousarray(getattr(collector, name)))
    extra: dict[str, Any] = {"numpy_rng": np.random.get_state()[1].tolist()}
    captured = env_state.capture(envs.env)
    if captured is not None:
        arrays, values = captured
        tensors.update({f"env.{k}": torch.from_numpy(v.copy()) for k, v in arrays.items()})
        extra["env_values"] = values
    return tensors, extra


def _restore_state(tensors: dict, meta: dict, agent: Agent, algo: Any, envs: VectorEnvs) -> CollectorState:
    algo.load_state_tensors({k[len("algo."):]: v for k, v in tensors.items() if k.startswith("algo.")})
    torch.set_rng_state(tensors["rng.torch"])
    collector = CollectorState(
        **{name: tensors[f"collector.{name}"].numpy().copy() for name in
           ("obs", "next_is_reset", "episode_return", "episode_length", "discounted_return")}
    )
    if "training" not in meta:
        raise ConfigError("--resume: the checkpoint holds an agent only (saved with Agent.save), not a training state")
    if "env_values" in meta["training"]:
        arrays = {k[len("env."):]: v.numpy() for k, v in tensors.items() if k.startswith("env.")}
        envs.env.reset(seed=envs.seed)
        env_state.restore(envs.env, arrays, meta["training"]["env_values"])
    else:
        log.warning("the env state was not saved (async envs): the resumed run starts new episodes")
        collector = CollectorState.start(envs.reset())
    return collector


# ---------------------------------------------------------------------------- the loop


def train(cfg: Config, run_dir: str | Path | None = None, resume: str | Path | None = None,
          quiet: bool = False) -> RunResult:
    """Train ``cfg`` into ``run_dir`` (or continue the run in ``resume``). See CONTRACTS.md."""
    rank, world_size = distributed.init()
    is_main = rank == 0
    resume_tensors: dict | None = None
    resume_meta: dict | None = None
    if resume is not None:
        resume_tensors, resume_meta, folder = checkpoint.read(Path(resume))
        saved = checkpoint.config_of(resume_meta, folder)
        if saved.env_id != cfg.env_id or saved.algo != cfg.algo:
            raise ConfigError(
                f"--resume {resume}: that run trains {saved.algo} on {saved.env_id}, not {cfg.algo} on {cfg.env_id}"
            )
        run_dir = Path(resume)
    validate(cfg, world_size)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)

    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed + rank)
    np.random.seed((cfg.seed + rank) % 2**32)
    device, device_reason = resolve_device(cfg.device, cfg)
    envs = make_envs(cfg, rank, world_size)
    agent = Agent(envs.observation_space, envs.action_space, cfg.model, cfg.env).to(device)
    agent.config = cfg
    distributed.broadcast_module(agent)
    algo = ALGOS[cfg.algo](agent, cfg, compile=use_compile(cfg, device))
    storage = Rollout.allocate(agent, envs, cfg.rollout.num_steps, device)

    start_iteration, elapsed_before = 0, 0.0
    episodes = EpisodeWindow()
    best_return = -math.inf
    solved_at_step = solved_at_time = None
    if resume_tensors is not None and resume_meta is not None:
        if checkpoint.space_to_json(envs.observation_space) != resume_meta["observation_space"] or \
                checkpoint.space_to_json(envs.action_space) != resume_meta["action_space"]:
            raise ConfigError(f"--resume {resume}: the env's spaces differ from the checkpoint's")
        agent.load_state_dict({k[6:]: v for k, v in resume_tensors.items() if k.startswith("agent.")})
        collector = _restore_state(resume_tensors, resume_meta, agent, algo, envs)
        progress = resume_meta["training"]
        start_iteration = progress["iteration"]
        elapsed_before = progress["wall_time_s"]
        episodes = EpisodeWindow(progress["recent_returns"], progress["recent_lengths"])
        best_return = progress["best_return"] if progress["best_return"] is not None else -math.inf
        solved_at_step, solved_at_time = progress["solved_at_step"], progress["solved_at_time_s"]
        np.random.set_state(("MT19937", np.array(progress["numpy_rng"], dtype=np.uint32), 0, 0, 0.0))
    else:
        collector = CollectorState.start(envs.reset())

    global_batch = cfg.rollout.num_steps * cfg.rollout.num_envs
    total_iterations = cfg.iterations
    if is_main:
        _prepare_run_dir(run_dir, cfg, resume is not None)
        if resume is not None:
            save_yaml(cfg, run_dir / "config.yaml")
        log.info("device %s (%s)", device, device_reason)
    writer = MetricsWriter(run_dir, total_iterations * global_batch, start_iteration * global_batch,
                           enabled=is_main, quiet=quiet)
    timings = Timings()
    started = time.perf_counter()
    iteration = start_iteration
    status = "completed"
    error_message = None
    last_checkpoint_time = started

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def save(name: str) -> None:
        if not is_main:
            return
        tensors, extra = _state_tensors(agent, algo, collector, envs)
        training = {
            "iteration": iteration, "wall_time_s": elapsed(), "best_return": _finite_or_none(best_return),
            "recent_returns": list(episodes.returns), "recent_lengths": list(episodes.lengths),
            "solved_at_step": solved_at_step, "solved_at_time_s": solved_at_time, **extra,
        }
        agent.global_step = iteration * global_batch
        checkpoint.save_agent(run_dir / "checkpoints" / name, agent, cfg, iteration * global_batch,
                              {k: v for k, v in tensors.items() if not k.startswith("agent.")}, training)

    previous_handler = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM alone
        previous_handler = None
    try:
        while iteration < total_iterations:
            progress_fraction = iteration / total_iterations
            finished = collect(agent, envs, collector, storage, cfg.rollout.gamma, timings)
            _check_finite(iteration, rewards=storage.rewards, observations=storage.obs)
            update_start = time.perf_counter()
            advantages, returns = gae(storage.rewards, storage.values, storage.next_values, storage.terminated,
                                      storage.truncated, cfg.rollout.gamma, cfg.rollout.gae_lambda)
            batch = flatten(storage, advantages, returns)
            stats = algo.update(batch, progress_fraction)
            _check_finite(iteration, losses=stats, parameters=agent)
            if agent.obs_normalizer is not None:  # after the update: the policy acted with the old stats
                agent.obs_normalizer.update(storage.obs[storage.valid])
                distributed.mean_(list(agent.obs_normalizer.buffers()))
            stats["explained_variance"] = explained_variance(batch.values, batch.returns, batch.weights)
            timings.update += time.perf_counter() - update_start
            iteration += 1

            gathered = distributed.gather_objects((finished.returns, finished.lengths))
            for returns_list, lengths_list in gathered:  # type: ignore[misc]
                episodes.add(returns_list, lengths_list)
            step = iteration * global_batch
            recent = episodes.mean_return()
            if (cfg.solved_threshold is not None and solved_at_step is None and len(episodes.returns) >= 20
                    and recent is not None and recent >= cfg.solved_threshold):
                solved_at_step, solved_at_time = step, elapsed()
            wall = elapsed()
            this_session = time.perf_counter() - started
            writer.log({
                "global_step": step, "wall_time_s": wall, "sps": (step - start_iteration * global_batch) / this_session,
                "episodic_return_mean": recent, "episodic_length_mean": episodes.mean_length(),
                "episodes": sum(len(r) for r, _ in gathered),  # type: ignore[misc]
                "iteration": iteration, "time_env_s": timings.env, "time_inference_s": timings.inference,
                "time_update_s": timings.update,
                "time_other_s": this_session - timings.env - timings.inference - timings.update,
                **stats,
            })
            due = (iteration % cfg.checkpoint_every == 0) if cfg.checkpoint_every else False
            due = due or time.perf_counter() - last_checkpoint_time > cfg.checkpoint_interval_s
            if due and iteration < total_iterations:
                save("latest")
                if recent is not None and recent > best_return and len(episodes.returns) >= 1:
                    best_return = recent
                    save("best")
                last_checkpoint_time = time.perf_counter()
    except KeyboardInterrupt:
        status = "interrupted"
    except TrainingError as error:
        status, error_message = "failed", str(error)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    if status != "failed":
        recent = episodes.mean_return()
        save("latest")
        if recent is not None and recent > best_return:
            best_return = recent
            save("best")
        elif not (run_dir / "checkpoints" / "best").exists():
            save("best")
    wall = elapsed()
    total_steps_done = iteration * global_batch
    this_session = time.perf_counter() - started
    summary: dict[str, Any] = {
        "status": status, "env_id": cfg.env_id, "algo": cfg.algo, "seed": cfg.seed,
        "total_steps": total_steps_done, "wall_time_s": wall,
        "sps": (total_steps_done - start_iteration * global_batch) / this_session if this_session > 0 else None,
        "train_return_last20": episodes.mean_return(20),
        "eval_return_mean": None, "eval_return_std": None, "eval_episodes": 0,
        "solved_threshold": cfg.solved_threshold, "solved_at_step": solved_at_step, "solved_at_time_s": solved_at_time,
        "versions": checkpoint.versions(), "device": str(device), "device_reason": device_reason,
        "compiled_update": bool(getattr(getattr(algo, "gradient_step", None), "compiled", False)),
        "torch_threads": cfg.torch_threads,
        "time_env_s": timings.env, "time_inference_s": timings.inference, "time_update_s": timings.update,
        "time_other_s": this_session - timings.env - timings.inference - timings.update,
    }
    if error_message:
        summary["error"] = error_message
    writer.close()
    envs.close()
    if status == "completed" and cfg.eval_episodes > 0 and is_main:
        result = evaluate(agent, cfg.env_id, cfg.eval_episodes, seed=cfg.seed + 1_000_000, env_kwargs=cfg.env.kwargs)
        summary.update(eval_return_mean=result["mean"], eval_return_std=result["std"], eval_episodes=result["episodes"])
    if is_main:
        write_summary(run_dir, summary)
    if status == "interrupted":
        raise Interrupted(RunResult(agent, summary, run_dir))
    if status == "failed":
        raise TrainingFailed(error_message or "training failed", RunResult(agent, summary, run_dir))
    return RunResult(agent, summary, run_dir)


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


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _check_finite(iteration: int, **named: Any) -> None:
    """TrainingError naming the first non-finite tensor, stat or parameter."""
    for name, value in named.items():
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise TrainingError(f"non-finite {name} at iteration {iteration + 1}")
        elif isinstance(value, dict):
            for key, number in value.items():
                if isinstance(number, float) and math.isinf(number) or (
                        isinstance(number, float) and math.isnan(number) and key in ("policy_loss", "value_loss")):
                    raise TrainingError(f"non-finite {key} in {name} at iteration {iteration + 1}")
        elif isinstance(value, torch.nn.Module):
            for param_name, param in value.named_parameters():
                if not bool(torch.isfinite(param).all()):
                    raise TrainingError(
                        f"non-finite parameter {param_name} after the update at iteration {iteration + 1}"
                    )
