"""What tests/test_distributed.py runs in each of K gloo processes, and in one for reference: every
algorithm's update on one scripted rollout ``[T, N]``, each process holding the envs
``rank * N/K ...`` (as torchrun splits them), and the normalizers' merge of every process's data.

``python -m tests.distributed_cases OUT_DIR`` with torchrun's variables (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) writes ``OUT_DIR/rank{R}.pt``: ``{case: {"params", "stats", ...}}``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ppokit import distributed
from ppokit.agent import Agent
from ppokit.algos import ALGOS
from ppokit.batch import Batch
from ppokit.config import Config, EnvConfig, ModelConfig

T, N = 12, 4  # steps, envs: the batch of one process with all the envs
OBS_SPACE = gym.spaces.Box(-5.0, 5.0, (3,), np.float32)
ACTIONS = gym.spaces.Discrete(3)

# case -> (algo, {section: {field: value}}). One minibatch per epoch (minibatch sizes = T * N): K
# processes then see the data one process sees at every step (with several, each process shuffles
# its own share, which is another, equally valid, draw of the minibatches).
CASES: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "ppo": ("ppo", {"ppo": {"update_epochs": 6, "minibatch_size": T * N, "learning_rate": 1e-2,
                            "target_kl": 0.02, "anneal_lr": False}}),
    "ppo-batch-scope": ("ppo", {"ppo": {"update_epochs": 3, "minibatch_size": T * N, "norm_adv_scope": "batch",
                                        "learning_rate": 3e-3, "anneal_lr": False}}),
    "ppo-kl": ("ppo-kl", {"ppo_kl": {"update_epochs": 3, "minibatch_size": T * N, "learning_rate": 1e-2,
                                     "anneal_lr": False, "kl_target": 0.001}}),
    "trpo": ("trpo", {"trpo": {"value_minibatch_size": T * N, "value_epochs": 2}}),
    "vpg": ("vpg", {"vpg": {"value_minibatch_size": T * N, "value_epochs": 2, "learning_rate": 1e-2}}),
    "vpg-reinforce": ("vpg", {"vpg": {"baseline": "none", "learning_rate": 1e-2}}),
}


def config(algo: str, sections: dict[str, dict[str, Any]]) -> Config:
    cfg = Config(algo=algo)
    cfg.rollout.num_steps, cfg.rollout.num_envs = T, N
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    return cfg


def make_agent() -> Agent:
    """The same agent on every process: observation normalization on, with statistics already moved."""
    torch.manual_seed(0)
    agent = Agent(OBS_SPACE, ACTIONS, ModelConfig(hidden_sizes=[8]), EnvConfig(normalize_obs=True))
    with torch.no_grad():
        agent.policy_head.weight.normal_(0.0, 0.5)
        agent.obs_normalizer.update(2.0 + 3.0 * torch.randn(50, 3, generator=torch.Generator().manual_seed(3)))
    return agent


def scripted_rollout(agent: Agent) -> Batch:
    """One process's rollout of all N envs, flattened (sample ``t * N + n``). Env 0 has more invalid
    (NEXT_STEP reset) steps than the others, so the processes hold different numbers of samples."""
    generator = torch.Generator().manual_seed(1)
    obs = 2.0 + 3.0 * torch.randn(T * N, 3, generator=generator)
    with torch.no_grad():
        policy_out, values = agent(obs)
    actions = torch.multinomial(torch.softmax(policy_out, -1), 1, generator=generator)[:, 0]
    log_probs = agent.head.log_prob(policy_out, actions)
    advantages = torch.where(actions == 0, 1.0, -0.5) + 0.3 * torch.randn(T * N, generator=generator)
    weights = torch.ones(T, N)
    weights[[1, 4, 7, 9], 0] = 0.0
    weights[5, 3] = 0.0
    weights = weights.reshape(-1)
    rewards = torch.randn(T * N, generator=generator)
    terminated = torch.rand(T * N, generator=generator) < 0.1
    return Batch(obs, actions, log_probs, values, advantages, values + advantages, weights, policy_out,
                 rewards=rewards, terminated=terminated, truncated=torch.zeros(T * N, dtype=torch.bool))


def share(batch: Batch, rank: int, world_size: int) -> Batch:
    """Process ``rank``'s share of a flat ``[T * N]`` batch: envs ``rank * N/K ... (rank + 1) * N/K - 1``."""
    per = N // world_size
    return Batch(**{name: value.reshape(T, N, *value.shape[1:])[:, rank * per:(rank + 1) * per]
                    .reshape(T * per, *value.shape[1:]) for name, value in batch.as_dict().items()})


def run_cases(rank: int, world_size: int) -> dict[str, dict[str, Any]]:
    """Every case's update on this process's share; the parameters and statistics after it."""
    torch.set_num_threads(1)
    results: dict[str, dict[str, Any]] = {}
    for name, (algo, sections) in CASES.items():
        agent = make_agent()
        batch = share(scripted_rollout(agent), rank, world_size)
        update = ALGOS[algo](agent, config(algo, sections), path="eager")
        stats = update.update(batch, progress=0.0)
        results[name] = {"params": {k: v.detach().clone() for k, v in agent.state_dict().items()}, "stats": stats,
                         "beta": float(getattr(update, "beta", float("nan")))}
    results["normalizer"] = merged_statistics(rank, world_size)
    return results


def merged_statistics(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """A running normalizer after merging this process's share of ``[T, N, 3]`` observations whose
    envs differ in mean (the spread between the processes' means must count)."""
    agent = make_agent()
    generator = torch.Generator().manual_seed(5)
    data = torch.randn(T, N, 3, generator=generator) + torch.arange(N, dtype=torch.float32)[None, :, None] * 4
    per = N // world_size
    agent.obs_normalizer.update_over_processes(data[:, rank * per:(rank + 1) * per])
    return {k: v.clone() for k, v in agent.obs_normalizer.state_dict().items()}


def main() -> None:
    out = Path(sys.argv[1])
    rank, world_size = distributed.init(timeout_s=60)
    try:
        torch.save(run_cases(rank, world_size), out / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
