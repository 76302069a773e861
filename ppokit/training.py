"""THE training loop: act (collect) -> judge (GAE) -> learn (algo.update) -> normalizer -> log.

Everything a run needs to continue exactly is in its ``checkpoints/latest``: weights,
optimizer state, normalizer statistics, global step, RNG states, the envs' state and the
in-progress episodes.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import signal
import sys
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
from ppokit.config import Config, save_yaml, to_dict, validate
from ppokit.envs import VectorEnvs, ensure_registered, make_envs
from ppokit.errors import CheckpointError, ConfigError, EnvError, TrainingError, quote
from ppokit.evaluate import evaluate
from ppokit.metrics import EpisodeWindow, MetricsWriter, write_summary
from ppokit.rollout import CollectorState, Rollout, Timings, collect
from ppokit.spaces import space_to_json

log = logging.getLogger("ppokit")


@dataclass
class RunResult:
    agent: Agent
    summary: dict[str, Any]
    run_dir: Path


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
    # Compiling costs ~5-10 s once and saves ~0.3 ms per gradient step on a small MLP (see
    # docs/performance.md): worth it only beyond ~50k gradient steps, and only for the
    # minibatch algorithms. On a GPU the eager kernels are already asynchronous.
    section = {"ppo": cfg.ppo, "ppo-kl": cfg.ppo_kl}.get(cfg.algo)
    if section is None or device.type != "cpu":
        return False
    per_iteration = section.update_epochs * math.ceil(cfg.batch_size / section.minibatch_size)
    return cfg.iterations * per_iteration >= 50_000


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env_id.replace('/', '-')}__{cfg.algo}__{cfg.seed}__{stamp}"


def _check_run_dir(run_dir: Path, resume: bool) -> bool:
    """Check, before any work, that ``run_dir`` can be written and does not already hold a run.

    Creates the folder; returns whether it was created (so a failed start can remove it again).
    """
    created = not run_dir.exists()
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {quote(run_dir)} is a file, not a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"run folder {quote(run_dir)} is not writable ({error.strerror or error})") from None
    if not resume and ((run_dir / "checkpoints").exists() or (run_dir / "metrics.csv").exists()):
        raise ConfigError(
            f"run folder {quote(run_dir)} already holds a run; continue it with --resume {run_dir} "
            "or pick another --run-dir"
        )
    return created


# Config fields a resumed run must keep: its checkpoint (weights, env state, collector state, the
# iteration counter) only makes sense with them. Everything else (total_steps, learning rates,
# checkpointing, device, ...) may change with --set.
FIXED_ON_RESUME = ("env_id", "algo", "seed", "rollout.num_envs", "rollout.num_steps", "env", "model")


def _field(cfg: Config, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return to_dict(value) if hasattr(value, "__dataclass_fields__") else value


def check_resume(saved: Config, cfg: Config, meta: dict, resume: str | Path) -> None:
    """ConfigError unless ``cfg`` can continue the run whose checkpoint holds ``saved`` and ``meta``."""
    if saved.env_id != cfg.env_id or saved.algo != cfg.algo:
        raise ConfigError(
            f"--resume {resume}: that run trains {saved.algo} on {saved.env_id}, not {cfg.algo} on {cfg.env_id}"
        )
    for name in FIXED_ON_RESUME:
        before, after = _field(saved, name), _field(cfg, name)
        if before != after:
            raise ConfigError(
                f"--resume {resume}: {name} cannot change when resuming (the run has {before}, asked for {after}); "
                "start a new run instead"
            )
    training = meta.get("training")
    if not isinstance(training, dict):
        raise ConfigError(
            f"--resume {resume}: the checkpoint holds an agent only (saved with Agent.save), not a training state"
        )
    needed = {"iteration": int, "wall_time_s": (int, float), "recent_returns": list, "recent_lengths": list,
              "numpy_rng": list}
    for key, kind in needed.items():
        if not isinstance(training.get(key), kind):
            raise CheckpointError(f"--resume {resume}: the checkpoint's training state lacks {key!r}")


def run_folder_of(resume: str | Path, folder: Path) -> Path:
    """The run folder to continue: ``resume`` itself, or the run that holds checkpoint ``folder``."""
    resume = Path(resume)
    if folder.resolve() != resume.resolve():
        return resume  # a run folder, resolved to its checkpoints/latest
    if folder.parent.name == "checkpoints":
        return folder.parent.parent  # RUN/checkpoints/latest (or best): continue RUN
    raise ConfigError(
        f"--resume {quote(resume)}: expected a run folder "
        "(a checkpoint outside a run folder has no metrics to continue)"
    )


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics.csv rows after ``last_step`` (logged after the checkpoint a run resumes from, or
    cut short by a kill), so the resumed run's rows follow on without duplicates."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    if not lines:
        return
    kept = [lines[0]]
    header = next(csv.reader([lines[0]]))
    for line in lines[1:]:
        row = next(csv.reader([line]), [])
        if not line.endswith("\n") or len(row) != len(header):
            break  # a row cut short by a kill
        try:
            if int(float(row[header.index("global_step")])) > last_step:
                break
        except (ValueError, IndexError):
            break
        kept.append(line)
    if len(kept) != len(lines):
        tmp = path.with_name(".metrics.csv.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


class _Stop:
    """Ctrl-C / SIGTERM: the first signal asks the loop to stop after the current iteration (so the
    checkpoint is exact); a second one abandons the iteration at once. While the run is being
    saved, signals only print a note; during the final evaluation they stop it at once."""

    def __init__(self) -> None:
        self.requested = False
        self.mode = "loop"  # loop | saving | eval
        self.previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.mode == "eval" or (self.mode == "loop" and self.requested):
            raise KeyboardInterrupt(name)
        if self.mode == "loop":
            print(f"ppokit: {name}: stopping after this iteration and saving (send it again to stop at once)",
                  file=sys.stderr, flush=True)
        self.requested = True

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[signum] = signal.signal(signum, self)
            except ValueError:  # not the main thread: leave signals alone
                return

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()


# ---------------------------------------------------------------------------- checkpoint state


def _state_tensors(agent: Agent, algo: Any, collector: CollectorState, envs: VectorEnvs) -> tuple[dict, dict]:
    tensors = {f"agent.{k}": v for k, v in agent.state_dict().items()}
    tensors.update({f"algo.{k}": v for k, v in algo.state_tensors().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    device = next(agent.parameters()).device
    if device.type == "cuda":  # actions are sampled on the GPU: its generator is state too
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    for name in ("obs", "next_is_reset", "episode_return", "episode_length", "discounted_return"):
        tensors[f"collector.{name}"] = torch.from_numpy(np.ascontiguousarray(getattr(collector, name)))
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    # The whole MT19937 state: the key array alone would restart at another position.
    extra: dict[str, Any] = {"numpy_rng": keys.tolist(), "numpy_rng_pos": int(pos),
                             "numpy_rng_gauss": [int(has_gauss), float(cached_gaussian)]}
    captured = env_state.capture(envs.env)
    if captured is not None:
        arrays, values = captured
        tensors.update({f"env.{k}": torch.from_numpy(v.copy()) for k, v in arrays.items()})
        extra["env_values"] = values
    return tensors, extra


def _restore_state(tensors: dict, meta: dict, agent: Agent, algo: Any, envs: VectorEnvs) -> CollectorState:
    try:
        algo.load_state_tensors({k[len("algo."):]: v for k, v in tensors.items() if k.startswith("algo.")})
        torch.set_rng_state(tensors["rng.torch"])
        device = next(agent.parameters()).device
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        collector = CollectorState(
            **{name: tensors[f"collector.{name}"].numpy().copy() for name in
               ("obs", "next_is_reset", "episode_return", "episode_length", "discounted_return")}
        )
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"--resume: the checkpoint's training state does not fit this run ({type(error).__name__}: {error})"
        ) from None
    if collector.obs.shape[:1] != (envs.num_envs,):
        raise CheckpointError("--resume: the checkpoint's collector state is for another number of envs")
    if distributed.rank() != 0:
        # Only rank 0's envs and episodes are in the checkpoint: the others start new episodes,
        # with a generator that still depends on the seed, the rank and the step.
        torch.manual_seed(meta["training"]["iteration"] * 1_000_003 + distributed.rank() + int(meta["config"]["seed"]))
        return CollectorState.start(envs.reset())
    if "env_values" in meta["training"]:
        arrays = {k[len("env."):]: v.numpy() for k, v in tensors.items() if k.startswith("env.")}
        envs.reset()
        env_state.restore(envs.env, arrays, meta["training"]["env_values"])
    else:
        log.warning("the env state was not saved (async envs): the resumed run starts new episodes")
        collector = CollectorState.start(envs.reset())
    return collector


# ---------------------------------------------------------------------------- the loop


def train(cfg: Config, run_dir: str | Path | None = None, resume: str | Path | None = None,
          quiet: bool = False) -> RunResult:
    """Train ``cfg`` into ``run_dir`` (or continue the run in ``resume``). The run folder is described in README.md.

    Bad input raises ConfigError before any work. Ctrl-C / SIGTERM finish the current iteration,
    save ``checkpoints/latest`` and raise :class:`Interrupted`; a non-finite number or a failing
    env keeps the last good checkpoint and raises :class:`TrainingFailed`. Both write summary.json.
    """
    stop = _Stop()
    stop.install()
    try:
        return _train(cfg, run_dir, resume, quiet, stop)
    finally:
        stop.restore()


def _train(cfg: Config, run_dir: str | Path | None, resume: str | Path | None, quiet: bool,
           stop: _Stop) -> RunResult:
    rank, world_size = distributed.init()
    is_main = rank == 0
    resume_tensors: dict | None = None
    resume_meta: dict | None = None
    if resume is not None:
        resume_tensors, resume_meta, folder = checkpoint.read(Path(resume))
        saved = checkpoint.config_of(resume_meta, folder)
        check_resume(saved, cfg, resume_meta, resume)
        run_dir = run_folder_of(resume, folder)
    validate(cfg, world_size)
    if cfg.algo not in ALGOS:
        raise ConfigError(f"algo {quote(cfg.algo)} is not available in this version of ppokit "
                          f"(available: {', '.join(sorted(ALGOS))})")
    ensure_registered(cfg.env_id)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)

    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed + rank)
    np.random.seed((cfg.seed + rank) % 2**32)
    device, device_reason = resolve_device(cfg.device, cfg)
    created_run_dir = _check_run_dir(run_dir, resume is not None) if is_main else False
    started = time.perf_counter()  # wall time counts env and agent construction too
    try:
        envs = make_envs(cfg, rank, world_size)
    except ConfigError:
        if created_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
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
        if space_to_json(envs.observation_space) != resume_meta["observation_space"] or \
                space_to_json(envs.action_space) != resume_meta["action_space"]:
            envs.close()
            raise ConfigError(f"--resume {resume}: the env's spaces differ from the checkpoint's")
        try:
            agent.load_state_dict({k[6:]: v for k, v in resume_tensors.items() if k.startswith("agent.")})
        except RuntimeError as error:
            envs.close()
            raise CheckpointError(
                f"--resume {resume}: the checkpoint's weights do not fit ({str(error).splitlines()[0]})"
            ) from None
        progress = resume_meta["training"]
        start_iteration = progress["iteration"]
        elapsed_before = progress["wall_time_s"]
        episodes = EpisodeWindow(progress["recent_returns"], progress["recent_lengths"])
        best_return = progress.get("best_return") if progress.get("best_return") is not None else -math.inf
        solved_at_step, solved_at_time = progress.get("solved_at_step"), progress.get("solved_at_time_s")
        gauss = progress.get("numpy_rng_gauss", [0, 0.0])
        np.random.set_state(("MT19937", np.array(progress["numpy_rng"], dtype=np.uint32),
                             progress.get("numpy_rng_pos", 624), gauss[0], gauss[1]))

    global_batch = cfg.rollout.num_steps * cfg.rollout.num_envs
    total_iterations = cfg.iterations
    if is_main:
        save_yaml(cfg, run_dir / "config.yaml")
        if resume is not None:
            _truncate_metrics(run_dir / "metrics.csv", start_iteration * global_batch)
        log.info("device %s (%s)", device, device_reason)
    writer = MetricsWriter(run_dir, total_iterations * global_batch, start_iteration * global_batch,
                           enabled=is_main, quiet=quiet)
    timings = Timings()
    iteration = start_iteration
    status = "completed"
    error_message = None
    unexpected: BaseException | None = None
    last_checkpoint_time = started
    saved_step: int | None = start_iteration * global_batch if resume is not None else None
    collector: CollectorState | None = None
    in_iteration = False  # True while the state is mid-iteration (not a consistent checkpoint)

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def save(name: str) -> None:
        nonlocal saved_step
        if not is_main or collector is None:
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
        if name == "latest":
            saved_step = iteration * global_batch

    try:
        if resume_tensors is not None and resume_meta is not None:
            collector = _restore_state(resume_tensors, resume_meta, agent, algo, envs)
        else:
            collector = CollectorState.start(envs.reset())
        while iteration < total_iterations:
            in_iteration = True
            progress_fraction = iteration / total_iterations
            # Exact --resume: a resumed run starts from a contiguous copy of the last observations, and
            # matmul rounding depends on memory layout (vector envs may return transposed views).
            collector.obs = np.ascontiguousarray(collector.obs)
            finished = collect(agent, envs, collector, storage, cfg.rollout.gamma, timings)
            _check_rollout(iteration, cfg.env_id, storage, collector, agent)
            update_start = time.perf_counter()
            advantages, returns = gae(storage.rewards, storage.values, storage.next_values, storage.terminated,
                                      storage.truncated, cfg.rollout.gamma, cfg.rollout.gae_lambda)
            batch = flatten(storage, advantages, returns)
            stats = algo.update(batch, progress_fraction)
            _check_update(iteration, stats, agent)
            if agent.obs_normalizer is not None:  # after the update: the policy acted with the old stats
                agent.obs_normalizer.update(storage.obs[storage.valid])
                distributed.mean_(list(agent.obs_normalizer.buffers()))
            stats["explained_variance"] = explained_variance(batch.values, batch.returns, batch.weights)
            timings.update += time.perf_counter() - update_start
            iteration += 1

            gathered = distributed.gather_objects((finished.returns, finished.lengths))
            for returns_list, lengths_list in gathered:  # type: ignore[misc]
                episodes.add(returns_list, lengths_list)
            in_iteration = False
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
            if due and iteration < total_iterations and not stop.requested:
                save("latest")
                if recent is not None and recent > best_return and len(episodes.returns) >= 1:
                    best_return = recent
                    save("best")
                last_checkpoint_time = time.perf_counter()
            if stop.requested:
                break
    except KeyboardInterrupt:
        status = "interrupted"
    except (TrainingError, EnvError) as error:
        status, error_message = "failed", str(error)
        if isinstance(error, EnvError):
            error_message += f" (iteration {iteration + 1})"
    except OSError as error:  # e.g. the disk filled up while writing metrics or a checkpoint
        status, error_message = "failed", f"cannot write the run folder: {error}"
    except Exception as error:  # a bug: record the failure, then let the traceback through
        status, error_message, unexpected = "failed", f"{type(error).__name__}: {error}", error
    stop.mode = "saving"
    if stop.requested and status == "completed":
        status = "interrupted"  # stopped after the last iteration: the final evaluation is still to do
    try:
        if status != "failed" and not in_iteration:
            recent = episodes.mean_return()
            save("latest")
            if recent is not None and recent > best_return:
                best_return = recent
                save("best")
            elif not (run_dir / "checkpoints" / "best").exists():
                save("best")
        elif status == "interrupted":
            log.info("abandoned iteration %d; checkpoints/latest is %s", iteration + 1,
                     f"from step {saved_step:,}" if saved_step is not None else "not written yet")
    except OSError as error:
        status, error_message = "failed", f"cannot write the checkpoint: {error}"
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
        "checkpoint_step": saved_step,
    }
    if error_message:
        summary["error"] = error_message
    writer.close()
    try:
        envs.close()
    except Exception as error:  # noqa: BLE001  (a crashed async worker can make closing fail)
        log.warning("closing the envs failed: %s", error)
    if status == "completed" and cfg.eval_episodes > 0 and is_main:
        stop.mode = "eval"
        try:
            result = evaluate(agent, cfg.env_id, cfg.eval_episodes, seed=cfg.seed + 1_000_000,
                              env_kwargs=cfg.env.kwargs)
            summary.update(eval_return_mean=result["mean"], eval_return_std=result["std"],
                           eval_episodes=result["episodes"])
        except KeyboardInterrupt:
            summary["status"] = status = "interrupted"  # --resume runs the evaluation again
        except Exception as error:  # noqa: BLE001  (the run itself completed and is saved)
            log.warning("the evaluation after training failed: %s", error)
            summary["eval_error"] = str(error)
        stop.mode = "saving"
    if is_main:
        try:
            write_summary(run_dir, summary)
        except OSError as error:
            log.warning("cannot write summary.json: %s", error)
    if unexpected is not None:
        raise unexpected
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


def _first_non_finite(values: torch.Tensor) -> tuple[int, int, float] | None:
    """``(t, n, value)`` of the first non-finite entry of a ``[T, N, ...]`` float tensor, or None."""
    if not values.is_floating_point():
        return None
    bad = ~torch.isfinite(values)
    if not bool(bad.any()):
        return None
    per_step = bad.reshape(bad.shape[0], bad.shape[1], -1).any(-1)
    t, n = (int(i) for i in per_step.nonzero()[0])
    return t, n, float(values[t, n][bad[t, n]].reshape(-1)[0])


def _check_rollout(iteration: int, env_id: str, storage: Rollout, collector: CollectorState, agent: Agent) -> None:
    """TrainingError naming the sub-env, step and iteration of the first non-finite observation or reward.

    One vectorized check per iteration over the stored rollout (nothing per env step). Rollout
    step t is the t-th ``envs.step`` call of the iteration: it returned ``obs[t + 1]`` and
    ``rewards[t]`` (and, on a time-limit truncation, the final observation behind ``next_values[t]``).
    """
    where = f"of iteration {iteration + 1}"
    found: list[tuple[int, int, int, str]] = []  # (step, order, sub-env, what)
    bad = _first_non_finite(storage.obs)
    if bad is not None:
        t, n, value = bad
        found.append((t - 1, 0, n, f"observation ({value})"))
    if bool(storage.truncated.any()):
        # V(final observation) is non-finite while the network is finite: the final observation is not.
        final = _first_non_finite(torch.where(storage.truncated, storage.next_values, 0.0)[..., None])
        if final is not None:
            found.append((final[0], 0, final[1], "final observation (at a time-limit truncation)"))
    bad = _first_non_finite(storage.rewards)
    if bad is not None and agent.return_normalizer is None:
        t, n, value = bad
        found.append((t, 1, n, f"reward ({value})"))
    if found:
        step, _, n, what = min(found)
        at = "from reset" if step < 0 else f"at rollout step {step}"
        raise TrainingError(f"env {quote(env_id)} sub-env {n} returned a non-finite {what} {at} {where}")
    if bad is not None:
        # Reward scaling spreads one bad reward over the whole batch; the raw episode sums still show which env.
        sums = np.asarray(collector.episode_return, dtype=np.float64)
        culprits = np.flatnonzero(~np.isfinite(sums))
        who = f"sub-env {int(culprits[0])}" if culprits.size else "a sub-env"
        raise TrainingError(f"env {quote(env_id)} {who} returned a non-finite reward during iteration "
                            f"{iteration + 1} (reward normalization is on, so the step is not known)")
    last = np.asarray(collector.obs)
    if np.issubdtype(last.dtype, np.floating) and not np.isfinite(last).all():
        n = int(np.flatnonzero(~np.isfinite(last.reshape(last.shape[0], -1)).all(-1))[0])
        raise TrainingError(f"env {quote(env_id)} sub-env {n} returned a non-finite observation "
                            f"at the last rollout step {where}")
    for values in (storage.values, storage.next_values):
        bad = _first_non_finite(values)
        if bad is not None:
            t, n, value = bad
            raise TrainingError(f"the value network returned a non-finite value ({value}) for sub-env {n} "
                                f"at rollout step {t} {where}")


# Statistics from update() that must be finite, in the order they are reported; the first one
# that is not names where the fault appeared.
WATCHED_STATS = {
    "policy_loss": "policy loss", "value_loss": "value loss", "loss": "loss", "entropy": "entropy",
    "approx_kl": "approximate KL", "kl": "KL divergence", "grad_norm": "gradient norm (the gradients)",
    "improvement": "surrogate improvement",
}


def _check_update(iteration: int, stats: dict[str, float], agent: Agent) -> None:
    """TrainingError naming the first non-finite loss, gradient statistic or parameter after an update."""
    where = f"iteration {iteration + 1}"
    for key, label in WATCHED_STATS.items():
        value = stats.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise TrainingError(f"non-finite {label} ({key} = {value}) in the update of {where}")
    for key, value in stats.items():
        if isinstance(value, float) and math.isinf(value):
            raise TrainingError(f"non-finite {key} ({value}) in the update of {where}")
    for name, param in agent.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise TrainingError(f"parameter {name} became non-finite in the update of {where}")
