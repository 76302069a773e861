"""The training state in a checkpoint: what ``checkpoints/latest`` holds beyond the agent, so that
``--resume`` continues exactly (optimizer state, RNG states, the envs' own state, open episodes,
counters), and the checks that a resumed run may continue it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ppokit import checkpoint, distributed, env_state
from ppokit.agent import state_problem
from ppokit.config import to_dict
from ppokit.errors import CheckpointError, ConfigError, first_line, quote
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
        # The processes that trained it: the collector and env state are rank 0's share of the envs.
        "world_size": distributed.world_size(),
    }
    captured = env_state.capture(learner.envs.env)
    if captured is not None:
        arrays, values = captured
        tensors.update({f"env.{k}": torch.from_numpy(v.copy()) for k, v in arrays.items()})
        training["env_values"] = values
    agent.global_step = progress.step
    checkpoint.save_agent(path, agent, learner.cfg, progress.step, tensors, training)


def _infos(tensors: dict[str, torch.Tensor], prefix: str = "") -> dict[str, checkpoint.TensorInfo]:
    return {name[len(prefix):]: checkpoint.tensor_info(t) for name, t in tensors.items() if name.startswith(prefix)}


def _check_tensors(tensors: dict[str, torch.Tensor], learner: Learner, folder: Path, same_envs: bool) -> None:
    """CheckpointError unless the agent's, the algorithm's and (``same_envs``: the envs are split as
    when it was saved) the collector's tensors in the file have exactly the names, dtypes and shapes
    of this run's (a float64 1e300 is not copied into a float32 parameter), and hold finite numbers
    where training could only have produced them."""
    collector = {name: torch.from_numpy(np.asarray(getattr(learner.collector, name))) for name in COLLECTOR_FIELDS}
    found = _infos(tensors)
    ours = [("agent.", learner.agent.state_dict()), ("algo.", learner.algo.state_tensors())]
    for prefix, own in ours + ([("collector.", collector)] if same_envs else []):
        checkpoint.check_header(folder, found, _infos(own), prefix)
    for name, tensor in tensors.items():
        if name.startswith(("algo.", "collector.")) and tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"checkpoint {quote(folder)}: tensor {quote(name)} holds NaN or infinity")
            if name.endswith(("exp_avg_sq", ".step")) and bool((tensor < 0).any()):
                raise CheckpointError(f"checkpoint {quote(folder)}: tensor {quote(name)} is negative")


def restore(tensors: dict[str, torch.Tensor], meta: dict, learner: Learner, progress: Progress,
            resume: str | Path, folder: Path | None = None) -> None:
    """Put the run saved in ``tensors``/``meta`` back into ``learner`` and ``progress``.

    ``meta["training"]`` was checked by :func:`check_resume`; the tensors are checked here against
    this run's (:func:`_check_tensors`) before anything is copied.

    Any number of processes may resume it: the agent, its normalizers, the optimizers, counters and
    episode statistics are the same for all. Rank 0 of a run with as many processes as the saved
    one also continues its open episodes (the checkpoint holds rank 0's envs); every other process
    starts new episodes, from a fresh stream (:func:`ppokit.distributed.stream_seeds`)."""
    agent, envs = learner.agent, learner.envs
    folder = folder or Path(resume)
    if space_to_json(envs.observation_space) != meta["observation_space"] or \
            space_to_json(envs.action_space) != meta["action_space"]:
        raise ConfigError(f"--resume {resume}: the env's spaces differ from the checkpoint's")
    saved = meta["training"]
    continues_episodes = distributed.rank() == 0 and saved.get("world_size", 1) == distributed.world_size()
    _check_tensors(tensors, learner, folder, same_envs=continues_episodes)
    agent.load_state_dict({k[len("agent."):]: v for k, v in tensors.items() if k.startswith("agent.")})
    problem = state_problem(agent)
    if problem is not None:
        raise CheckpointError(f"checkpoint {quote(folder)}: {problem}")
    progress.iteration = progress.start_iteration = saved["iteration"]
    progress.saved_step = progress.step
    progress.wall_time_before = saved["wall_time_s"]
    progress.episodes = EpisodeWindow(saved["recent_returns"], saved["recent_lengths"])
    progress.best_return = saved["best_return"] if saved.get("best_return") is not None else -math.inf
    progress.solved_at_step, progress.solved_at_time = saved.get("solved_at_step"), saved.get("solved_at_time_s")
    learner.timings = Timings(**saved.get("timings", {}))  # absent before wave 2: counted from this session
    gauss = saved.get("numpy_rng_gauss", [0, 0.0])
    try:
        np.random.set_state(("MT19937", np.array(saved["numpy_rng"], dtype=np.uint32),
                             saved.get("numpy_rng_pos", 624), gauss[0], gauss[1]))
        learner.algo.load_state_tensors({k[len("algo."):]: v for k, v in tensors.items() if k.startswith("algo.")})
        torch.set_rng_state(tensors["rng.torch"])
        device = next(agent.parameters()).device
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        collector = None
        if continues_episodes:
            collector = CollectorState(**{name: tensors[f"collector.{name}"].numpy().copy()
                                          for name in COLLECTOR_FIELDS})
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"--resume: the checkpoint's training state does not fit this run ({type(error).__name__}: "
            f"{first_line(error)})"
        ) from None
    if collector is None:
        # Only rank 0's envs and episodes are in the checkpoint: the others start new episodes,
        # with generators of their own (rank 0's, restored above, are the saved run's).
        if distributed.rank() != 0:
            distributed.seed_streams(distributed.stream_seeds(int(meta["config"]["seed"]), distributed.rank(),
                                                              resumed_at=saved["iteration"]))
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
        log.warning("the env state was not saved (env.vector=%s keeps it out of reach): the resumed run starts "
                    "new episodes on fresh envs", learner.cfg.env.vector)
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
    check_training(training, meta, saved, resume)


def _integer(value: Any, low: int = 0, high: int = 2**63) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def _number(value: Any, low: float = -math.inf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low


def _optional(check):
    return lambda value: value is None or check(value)


def _list_of(check, length: int | None = None):
    return lambda value: isinstance(value, list) and (length is None or len(value) == length) and all(
        check(item) for item in value)


# What a training state written by save() holds: key -> (required, check, what is accepted).
TRAINING_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "iteration": (True, _integer, "an integer >= 0"),
    "wall_time_s": (True, lambda x: _number(x, 0), "a number >= 0"),
    "recent_returns": (True, _list_of(_number), "a list of finite numbers"),
    "recent_lengths": (True, _list_of(_integer), "a list of integers >= 0"),
    "numpy_rng": (True, _list_of(lambda x: _integer(x, 0, 2**32), 624), "624 integers in [0, 2**32)"),
    "numpy_rng_pos": (False, lambda x: _integer(x, 0, 625), "an integer in [0, 624]"),
    "numpy_rng_gauss": (False, lambda x: isinstance(x, list) and len(x) == 2 and x[0] in (0, 1)
                        and not isinstance(x[0], bool) and _number(x[1]), "[0 or 1, a finite number]"),
    "best_return": (False, _optional(_number), "a finite number or null"),
    "solved_at_step": (False, _optional(_integer), "an integer >= 0 or null"),
    "solved_at_time_s": (False, _optional(lambda x: _number(x, 0)), "a number >= 0 or null"),
    "timings": (False, lambda x: isinstance(x, dict) and set(x) <= {"env", "inference", "update"}
                and all(_number(v, 0) for v in x.values()), "env/inference/update seconds >= 0"),
    "env_values": (False, lambda x: isinstance(x, dict), "a mapping"),
    "world_size": (False, lambda x: _integer(x, 1), "an integer >= 1"),
}


def check_training(training: dict, meta: dict, saved: Config, resume: str | Path) -> None:
    """CheckpointError unless the training state holds every field save() writes, each of the
    right type and range, and its step agrees with its iteration."""
    for key, (required, ok, accepted) in TRAINING_FIELDS.items():
        if key not in training and not required:
            continue
        if key not in training:
            raise CheckpointError(f"--resume {resume}: the checkpoint's training state lacks {key!r}")
        if not ok(training[key]):
            shown = json.dumps(training[key])[:60] if not isinstance(training[key], (dict, list)) else \
                type(training[key]).__name__
            raise CheckpointError(f"--resume {resume}: the checkpoint's training state has a bad {key!r} "
                                  f"({shown}; expected {accepted})")
    if len(training["recent_returns"]) != len(training["recent_lengths"]):
        raise CheckpointError(f"--resume {resume}: the checkpoint's training state has "
                              "recent_returns and recent_lengths of different lengths")
    expected_step = training["iteration"] * saved.rollout.num_steps * saved.rollout.num_envs
    if meta.get("global_step", 0) != expected_step:
        raise CheckpointError(f"--resume {resume}: the checkpoint's global_step ({meta.get('global_step')}) does not "
                              f"match its iteration ({training['iteration']} iterations of "
                              f"{saved.rollout.num_steps * saved.rollout.num_envs} steps)")


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
