"""CPU cost of one ppokit PPO update on Atari-sized frames, with the image scaling before and after
the channels-last change (``ImageLayout.to_nchw``), interleaved in one process.

    python benchmarks/pixel_update.py [--repeats 3]

The agent and update of ``benchmarks/configs/pong_zoo.yaml`` (Nature CNN on 4 stacked 84x84 uint8
frames, 6 actions; 1024 samples, 4 epochs of minibatches of 256: 16 gradient steps), one torch
thread. ``before``: ``obs.float() / 255`` left in CHW memory; ``after``: ppokit's ``to_nchw`` (one-pass
division, channels-last memory). Prints CPU seconds per update (process time, so other jobs on
the machine inflate it less than wall time) for each repeat, and the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from ppokit.agent import Agent
from ppokit.algos import ALGOS
from ppokit.batch import Batch
from ppokit.networks import ImageLayout
from ppokit.presets import build_config

CONFIG = Path(__file__).resolve().parent / "configs" / "pong_zoo.yaml"


def chw_to_nchw(self: ImageLayout, obs: torch.Tensor) -> torch.Tensor:
    """``to_nchw`` as it was: float conversion, then division, CHW memory."""
    x = obs.to(torch.float32) / 255.0
    if self.stacked:
        x = x.permute(0, 1, 4, 2, 3).reshape(x.shape[0], self.channels, self.height, self.width)
    elif self.channels_last:
        x = x.permute(0, 3, 1, 2)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = build_config("ALE/Pong-v5", config_file=CONFIG)
    agent = Agent(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6), cfg.model, cfg.env)
    algo = ALGOS["ppo"].make(agent, cfg, "eager")
    samples = cfg.rollout.num_envs * cfg.rollout.num_steps
    obs = torch.randint(0, 256, (samples, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        policy_out, values = agent(obs)
    actions = agent.head.sample(policy_out)
    batch = Batch(obs, actions, agent.head.log_prob(policy_out, actions), values, torch.randn(samples),
                  values + torch.randn(samples), torch.ones(samples), policy_out)
    ways = {"before": chw_to_nchw, "after": ImageLayout.to_nchw}
    layout = agent.actor_trunk[0].layout
    assert torch.equal(chw_to_nchw(layout, obs[:8]), ImageLayout.to_nchw(layout, obs[:8]))  # the same values
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            ImageLayout.to_nchw = way  # type: ignore[method-assign]
            start = time.process_time()
            algo.update(batch, 0.0)
            seconds[name].append(time.process_time() - start)
    for name, runs in seconds.items():
        each = ", ".join(f"{s:.2f}" for s in runs)
        print(f"{name}: CPU s per update {each}; median {statistics.median(runs):.2f}")
    print(f"speed-up: {statistics.median(seconds['before']) / statistics.median(seconds['after']):.2f}x")


if __name__ == "__main__":
    main()
