"""The algorithm registry. Each algorithm is a class with

``__init__(agent, cfg, compile)``, ``update(batch, progress) -> dict[str, float]`` (keys are
metrics.csv columns, plus extras), ``state_tensors()`` / ``load_state_tensors(tensors)`` for
checkpoints. They differ only in ``update``: rollout, GAE and batching are shared.
"""

from __future__ import annotations

from ppokit.algos.ppo import PPO
from ppokit.algos.ppo_kl import PPOKL
from ppokit.algos.trpo import TRPO
from ppokit.algos.vpg import VPG

ALGOS: dict[str, type] = {"ppo": PPO, "ppo-kl": PPOKL, "trpo": TRPO, "vpg": VPG}
