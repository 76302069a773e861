"""How much memory a run needs, estimated before anything is allocated, and how much there is.

The estimate is deliberately simple (see :func:`estimate`): it counts what grows with the config
(the rollout storage, the batch copies, the networks and their optimizer state, the envs), not
Python's and torch's fixed overhead. A config whose estimate exceeds the memory this process may
use (:func:`available_bytes`) is refused with one line before the envs or the agent are made, so
``--num-envs 1000000000`` or ``model.hidden_sizes=[100000,100000]`` cannot exhaust the machine.
"""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path
from typing import Any

from ppokit.errors import ConfigError

# A vector env's own bookkeeping per sub-env (the env object, its wrappers, observation buffers),
# a floor measured on the classic-control envs; MuJoCo and Atari envs hold more.
PER_ENV_BYTES = 64 * 1024
# The rollout storage [T, N, ...] is held once, flattened into the batch and copied into
# minibatches: about three copies alive at the peak of an update.
ROLLOUT_COPIES = 3
# Parameters, gradients, Adam's two moments, the fast path's flat copies and a TRPO step's
# vectors: at most about eight tensors of the size of the networks.
PARAMETER_COPIES = 8


def available_bytes() -> int:
    """The memory this process may use: the smallest of physical memory, the address-space limit
    (``ulimit -v``) and the cgroup's ``memory.max`` (a container's limit), whichever are known."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover  (not POSIX)
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    return min(limits) if limits else 2**63


def format_bytes(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if count < 1024 or unit == "PB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} EB"  # pragma: no cover


def check_fits(needed: float, what: str, advice: str = "") -> None:
    """ConfigError if ``needed`` bytes exceed :func:`available_bytes`; ``what`` names the consumer."""
    available = available_bytes()
    if needed > available:
        raise ConfigError(f"{what} needs about {format_bytes(needed)} of memory, more than the "
                          f"{format_bytes(available)} this process may use{advice}")


def observation_bytes(space: Any) -> int:
    """Bytes of one observation as the rollout stores it (uint8 images stay uint8, else float32)."""
    shape = getattr(space, "shape", None) or ()
    itemsize = 1 if str(getattr(space, "dtype", "")) == "uint8" else 4
    return math.prod(shape) * itemsize


def estimate(cfg: Any, agent: Any, num_envs: int) -> dict[str, int]:
    """Bytes a run of ``cfg`` needs on this process, by part, before anything is allocated.

    ``agent`` is the run's agent built on the ``meta`` device (shapes without memory); ``num_envs``
    is this process's share of ``rollout.num_envs``. Per step and env the rollout stores the
    observation, the action, the policy's outputs and seven scalars (``ppokit.rollout.Rollout``);
    an update holds each MLP layer's activations (and their gradients) for the whole batch at most
    (TRPO and VPG do; PPO's minibatches need less). Not counted: Python's, torch's and the env
    library's fixed overhead (a few hundred MB), and a CNN's activations.
    """
    steps = cfg.rollout.num_steps * num_envs
    action_size = max(1, math.prod(getattr(agent.action_space, "shape", None) or (1,)))
    per_step = observation_bytes(agent.observation_space) + 8 * action_size + 4 * agent.head.num_outputs + 7 * 4
    parameters = sum(t.numel() for t in agent.state_dict().values())
    model = cfg.model
    widths = sum(model.hidden_sizes) + sum(model.actor_hidden_sizes or ()) + sum(model.critic_hidden_sizes or ())
    return {
        "rollout": ROLLOUT_COPIES * steps * per_step,
        "activations": 2 * 4 * steps * widths,  # float32 activations and their gradients
        "networks": PARAMETER_COPIES * 4 * parameters,
        "envs": num_envs * (PER_ENV_BYTES + 2 * observation_bytes(agent.observation_space)),
    }
