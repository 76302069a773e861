"""The training state in a checkpoint: what ``checkpoints/latest`` holds beyond the agent, so that
``--resume`` continues exactly (optimizer state, RNG states, the envs' own state, open episodes,
counters), and the checks that a resumed run may continue it.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ppokit import checkpoint, distributed, env_state
from ppokit.config import to_dict
from ppokit.errors import CheckpointError, ConfigError, quote
from ppokit.files import open_regular
from ppokit.metrics import MAX_LINE, EpisodeWindow, parse_line
from ppokit.rollout import CollectorState, Timings
from ppokit.spaces import space_to_json

if TYPE_CHECKING:
    from ppokit.config import Config
    from ppokit.loop import Learner, Progress

log = logging.getLogger("ppokit")

COLLECTOR_FIELDS = ("obs", "next_is_reset", "episode_return", "episode_length", "discounted_return")


def save(path: Path, learner: Learner, progress: Progress) -> None:
    """Write a resumable checkpoint of the run at ``path`` (the agent plus the training state)."""
    agent, collector = learner.agent, learner.collector
    tensors = {f"algo.{k}": v for k, v in learner.algo.state_tensors().items()}
    tensors["rng.torch"] = torch.get_rng_state()
    device = next(agent.parameters()).device
    if device.type == "cuda":  # actions are sampled on the GPU: its generator is state too
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    for name in COLLECTOR_FIELDS:
        tensors[f"collector.{name}"] = torch.from_numpy(np.ascontiguousarray(getattr(collector, name)))
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    timings = learner.timings
    training: dict[str, Any] = {
        "iteration": progress.iteration, "wall_time_s": progress.elapsed(),
        "best_return": progress.best_return if math.isfinite(progress.best_return) else None,
        "recent_returns": list(progress.episodes.returns), "recent_lengths": list(progress.episodes.lengths),
        "solved_at_step": progress.solved_at_step, "solved_at_time_s": progress.solved_at_time,
        "timings": {"env": timings.env, "inference": timings.inference, "update": timings.update},
        # The whole MT19937 state: the key array alone would restart at another position.
        "numpy_rng": keys.tolist(), "numpy_rng_pos": int(pos),
        "numpy_rng_gauss": [int(has_gauss), float(cached_gaussian)],
    }
    captured = env_state.capture(learner.envs.env)
    if captured is not None:
        arrays, values = captured
        tensors.update({f"env.{k}": torch.from_numpy(v.copy()) for k, v in arrays.items()})
        training["env_values"] = values
    agent.global_step = progress.step
    checkpoint.save_agent(path, agent, learner.cfg, progress.step, tensors, training)


def restore(tensors: dict[str, torch.Tensor], meta: dict, learner: Learner, progress: Progress,
            resume: str | Path) -> None:
    """Put the run saved in ``tensors``/``meta`` back into ``learner`` and ``progress``."""
    agent, envs = learner.agent, learner.envs
    if space_to_json(envs.observation_space) != meta["observation_space"] or \
            space_to_json(envs.action_space) != meta["action_space"]:
        raise ConfigError(f"--resume {resume}: the env's spaces differ from the checkpoint's")
    try:
        agent.load_state_dict({k[len("agent."):]: v for k, v in tensors.items() if k.startswith("agent.")})
    except RuntimeError as error:
        raise CheckpointError(
            f"--resume {resume}: the checkpoint's weights do not fit ({str(error).splitlines()[0]})"
        ) from None
    saved = meta["training"]
    progress.iteration = progress.start_iteration = saved["iteration"]
    progress.saved_step = progress.step
    progress.wall_time_before = saved["wall_time_s"]
    progress.episodes = EpisodeWindow(saved["recent_returns"], saved["recent_lengths"])
    progress.best_return = saved["best_return"] if saved.get("best_return") is not None else -math.inf
    progress.solved_at_step, progress.solved_at_time = saved.get("solved_at_step"), saved.get("solved_at_time_s")
    learner.timings = Timings(**saved.get("timings", {}))  # absent before wave 2: counted from this session
    gauss = saved.get("numpy_rng_gauss", [0, 0.0])
    np.random.set_state(("MT19937", np.array(saved["numpy_rng"], dtype=np.uint32),
                         saved.get("numpy_rng_pos", 624), gauss[0], gauss[1]))
    try:
        learner.algo.load_state_tensors({k[len("algo."):]: v for k, v in tensors.items() if k.startswith("algo.")})
        torch.set_rng_state(tensors["rng.torch"])
        device = next(agent.parameters()).device
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        collector = CollectorState(**{name: tensors[f"collector.{name}"].numpy().copy() for name in COLLECTOR_FIELDS})
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"--resume: the checkpoint's training state does not fit this run ({type(error).__name__}: {error})"
        ) from None
    if collector.obs.shape[:1] != (envs.num_envs,):
        raise CheckpointError("--resume: the checkpoint's collector state is for another number of envs")
    if distributed.rank() != 0:
        # Only rank 0's envs and episodes are in the checkpoint: the others start new episodes,
        # with a generator that still depends on the seed, the rank and the step.
        torch.manual_seed(saved["iteration"] * 1_000_003 + distributed.rank() + int(meta["config"]["seed"]))
        learner.collector = CollectorState.start(envs.reset())
    elif "env_values" in saved:
        arrays = {k[len("env."):]: v.numpy() for k, v in tensors.items() if k.startswith("env.")}
        envs.reset()
        try:
            env_state.restore(envs.env, arrays, saved["env_values"])
        except env_state.StateMismatch as error:
            raise CheckpointError(f"--resume {resume}: the checkpoint's env state does not fit this env ({error})") \
                from None
        learner.collector = collector
    else:
        log.warning("the env state was not saved (async envs): the resumed run starts new episodes")
        learner.collector = CollectorState.start(envs.reset())


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


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics.csv rows after ``last_step`` (logged after the checkpoint a run resumes from, or
    cut short by a kill), so the resumed run's rows follow on without duplicates.

    Reads line by line (a line is at most :data:`ppokit.metrics.MAX_LINE` bytes), never through a
    link, and cuts the file in place after the last row kept."""
    if not os.path.lexists(path):
        return
    with open_regular(path, "r+b") as handle:
        header = parse_line(handle.readline(MAX_LINE))
        if not header:
            return
        keep = handle.tell()
        for line in iter(lambda: handle.readline(MAX_LINE), b""):
            row = parse_line(line)
            if row is None or len(row) != len(header):
                break  # a row cut short by a kill
            try:
                if int(float(row[header.index("global_step")])) > last_step:
                    break
            except (ValueError, IndexError, OverflowError):
                break
            keep = handle.tell()
        handle.seek(0, os.SEEK_END)
        if handle.tell() > keep:
            handle.truncate(keep)
