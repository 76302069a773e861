"""What an algorithm is to the rest of ppokit: one :class:`AlgoSpec`, declared at the end of its own file.

Adding an algorithm is one new module in ``ppokit/algos/`` that ends with ``ALGORITHM =
AlgoSpec(...)``: the package finds it (:mod:`ppokit.algos`), the config gains its section, the
CLI its ``--algo`` choice and metrics.csv its columns. Nothing else names algorithms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from ppokit.agent import Agent
    from ppokit.batch import Batch


class Algorithm(Protocol):
    """The interface the training loop uses. Rollout, GAE and batching are shared; only this differs."""

    def update(self, batch: Batch, progress: float) -> dict[str, float]:
        """Learn from one iteration's batch ``[B, ...]``; ``progress`` in [0, 1) drives annealing.
        Returns statistics keyed by metrics.csv column."""
        ...

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Optimizer (and other) state for checkpoints."""
        ...

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` returned."""
        ...


@dataclass(frozen=True)
class SectionCheck:
    """What a section's range check may need to know besides the section itself."""

    name: str  # the section's name in the config ("ppo_kl"), for messages
    global_batch: int  # rollout.num_steps * rollout.num_envs, over all processes
    world_size: int  # number of processes (torchrun)
    active: bool  # the run uses this algorithm (batch-size relations are checked only then)

    @property
    def per_process_batch(self) -> int:
        return self.global_batch // self.world_size


@dataclass(frozen=True)
class AlgoSpec:
    """One algorithm: its name, its config section and checks, how to build it, what it logs."""

    name: str  # the --algo value, e.g. "ppo-kl"
    section: str  # its config section (a YAML key), e.g. "ppo_kl"
    config: type  # the section's dataclass (defaults = the algorithm's defaults)
    make: Callable[[Agent, Any, str], Algorithm]  # (agent, full Config, update path) -> the algorithm
    check: Callable[[Any, SectionCheck], None]  # ConfigError naming the first bad field of the section
    metrics: tuple[str, ...] = ()  # metrics.csv columns it reports beyond the contract's, in order
    # Whether, with this section, it fits the value function apart from the policy (then it needs
    # separate actor and critic networks: no shared trunk, so no image observations).
    separate_critic: Callable[[Any], bool] = lambda section: False

    def __call__(self, agent: Agent, cfg: Any, path: str = "eager") -> Algorithm:
        """Build the algorithm for ``agent`` from the run's config; ``path``: how its gradient
        steps compute gradients (``ppokit.algos.common.PATHS``)."""
        return self.make(agent, cfg, path)
