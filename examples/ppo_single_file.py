"""PPO in one file, CleanRL style, built from ppokit's own parts: read it top to bottom.

``ppokit train`` does exactly this (plus checkpoints, resume, logging and a faster gradient step);
``tests/test_single_file_example.py`` checks that both give the same metrics on the same config
and seed. The parts it uses: ``make_envs`` (vector envs, autoreset mode chosen), ``Agent`` (an
nn.Module: observation normalizer, actor and critic), ``collect`` (the rollout, storage
``[T, N, ...]``), ``gae`` (advantages), ``flatten``/``minibatches`` and the PPO loss terms.

    python examples/ppo_single_file.py --env CartPole-v1 --total-steps 100000 --seed 0
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ppokit.advantages import gae
from ppokit.agent import Agent
from ppokit.algos.common import clipped_surrogate, explained_variance, importance_ratio
from ppokit.batch import Minibatch, flatten, minibatches, weighted_mean
from ppokit.config import Config
from ppokit.distributions import approx_kl
from ppokit.envs import make_envs
from ppokit.metrics import EpisodeWindow
from ppokit.presets import build_config
from ppokit.rollout import CollectorState, Rollout, Timings, collect


def ppo_loss(agent: Agent, minibatch: Minibatch, clip_coef: float, cfg: Config):
    """PPO paper eq. 9: ``-L^CLIP + c1 * L^VF - c2 * H`` on one minibatch (every tensor ``[M, ...]``)."""
    policy_out, values = agent(minibatch.obs)
    weights = minibatch.weights  # 0 for the reset transitions of NEXT_STEP autoreset: never learned from
    log_ratio, ratio = importance_ratio(agent.head, policy_out, minibatch)
    advantages = minibatch.advantages
    if cfg.ppo.norm_adv:  # per minibatch, over its valid samples
        mean = weighted_mean(advantages, weights)
        std = weighted_mean((advantages - mean).square(), weights).sqrt()
        advantages = (advantages - mean) / (std + 1e-8)
    policy_loss = -weighted_mean(clipped_surrogate(ratio, advantages, clip_coef), weights)
    value_loss = 0.5 * weighted_mean((values - minibatch.returns).square(), weights)
    entropy = weighted_mean(agent.head.entropy(policy_out), weights)
    loss = policy_loss + cfg.ppo.vf_coef * value_loss - cfg.ppo.ent_coef * entropy
    with torch.no_grad():
        stats = {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(), "entropy": entropy.detach(),
                 "approx_kl": weighted_mean(approx_kl(log_ratio), weights),
                 "clip_fraction": weighted_mean(((ratio - 1).abs() > clip_coef).float(), weights)}
    return loss, stats


def train(cfg: Config) -> list[dict[str, float]]:
    """Train PPO as ``cfg`` says; returns one row of metrics per iteration."""
    assert cfg.algo == "ppo" and cfg.ppo.clip_coef is not None and not cfg.ppo.clip_vloss
    assert cfg.ppo.target_kl is None and cfg.ppo.minibatch_size < cfg.batch_size, "kept out of the example"
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    envs = make_envs(cfg)
    agent = Agent(envs.observation_space, envs.action_space, cfg.model, cfg.env)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.ppo.learning_rate, eps=cfg.ppo.adam_eps)
    storage = Rollout.allocate(agent, envs, cfg.rollout.num_steps, torch.device("cpu"))  # [T, N, ...]
    collector = CollectorState.start(envs.reset())  # last observations and open episodes, [N]
    episodes, rows = EpisodeWindow(), []

    for iteration in range(cfg.iterations):
        progress = iteration / cfg.iterations
        lr = cfg.ppo.learning_rate * (1 - progress) if cfg.ppo.anneal_lr else cfg.ppo.learning_rate
        clip_coef = cfg.ppo.clip_coef * (1 - progress) if cfg.ppo.anneal_clip else cfg.ppo.clip_coef
        for group in optimizer.param_groups:
            group["lr"] = lr

        # 1. Act: T steps of every env with the current policy (time limits keep V(final obs)).
        collector.obs = np.ascontiguousarray(collector.obs)
        finished = collect(agent, envs, collector, storage, cfg.rollout.gamma, Timings())

        # 2. Judge: GAE advantages and returns, [T, N].
        advantages, returns = gae(storage.rewards, storage.values, storage.next_values, storage.terminated,
                                  storage.truncated, cfg.rollout.gamma, cfg.rollout.gae_lambda)
        batch = flatten(storage, advantages, returns)  # [B = T * N, ...]

        # 3. Learn: epochs of shuffled minibatches, one clipped Adam step each.
        for _ in range(cfg.ppo.update_epochs):
            epoch_stats = []
            for samples in minibatches(batch.as_dict(), cfg.ppo.minibatch_size):
                loss, stats = ppo_loss(agent, Minibatch.of(samples), clip_coef, cfg)
                optimizer.zero_grad()
                loss.backward()
                if cfg.ppo.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.ppo.max_grad_norm)
                optimizer.step()
                epoch_stats.append(stats)

        # 4. Only now update the observation statistics: the policy acted and learned with the old ones.
        if agent.obs_normalizer is not None:
            agent.obs_normalizer.update(storage.obs[storage.valid])

        # 5. Log: the last epoch's mean loss statistics and the last 20 training episodes.
        episodes.add(finished.returns, finished.lengths)
        row = {key: float(torch.stack([s[key] for s in epoch_stats]).mean()) for key in epoch_stats[0]}
        row.update(global_step=(iteration + 1) * cfg.batch_size, episodic_return_mean=episodes.mean_return(),
                   explained_variance=explained_variance(batch.values, batch.returns, batch.weights),
                   learning_rate=lr)
        rows.append(row)
        print(f"step {row['global_step']:>8,}  return {row['episodic_return_mean'] or float('nan'):7.1f}  "
              f"policy loss {row['policy_loss']:+.4f}  value loss {row['value_loss']:.4f}")
    envs.close()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1", help="a Gymnasium id (its ppokit preset is used)")
    parser.add_argument("--total-steps", type=int, default=100_000, help="environment steps")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    train(build_config(args.env, algo="ppo", overrides={"total_steps": args.total_steps, "seed": args.seed}))
