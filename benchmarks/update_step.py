"""Cost of one PPO minibatch step (64x64 tanh actor + critic, CartPole spaces) by gradient path.

    python benchmarks/update_step.py [--minibatch 256] [--repeats 5] [--clock wall|cpu]

Paths (the config's ``update_path``): ``fast`` (ppokit's default for MLPs: ppokit.fast's
hand-written MLP backward + analytic PPO gradients, flat gradient, fused Adam), ``autograd``
(autograd through the module, same loss), ``compile`` (the fast gradient under torch.compile;
first-call compile time reported separately), and ``torch.optim``
(loss.backward + clip_grad_norm_ + torch.optim.Adam(foreach), the plain PyTorch way).
Prints microseconds per step: median and min over repeats of 300 steps, one torch thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch

from ppokit.agent import Agent
from ppokit.algos.common import hyperparameters
from ppokit.algos.ppo import PPO
from ppokit.batch import Minibatch
from ppokit.config import Config


def make(minibatch: int, path: str):
    torch.manual_seed(0)
    cfg = Config()
    env = gym.make("CartPole-v1")
    agent = Agent(env.observation_space, env.action_space, cfg.model, cfg.env)
    algo = PPO(agent, cfg, path)
    batch = Minibatch.of({
        "obs": torch.randn(minibatch, 4), "actions": torch.randint(0, 2, (minibatch,)),
        "log_probs": torch.full((minibatch,), -0.69), "values": torch.randn(minibatch),
        "advantages": torch.randn(minibatch), "returns": torch.randn(minibatch),
        "weights": torch.ones(minibatch), "policy_outputs": torch.zeros(minibatch, 2),
    })
    return cfg, agent, algo, batch, hyperparameters(lr=1e-3, clip_coef=0.2)


def measure(step, repeats: int, clock=time.perf_counter, n: int = 300) -> tuple[float, float]:
    for _ in range(30):
        step()
    times = []
    for _ in range(repeats):
        start = clock()
        for _ in range(n):
            step()
        times.append((clock() - start) / n * 1e6)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minibatch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (steadier on a loaded machine)")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    rows = []
    for path in ("fast", "autograd", "compile", "torch.optim"):
        cfg, agent, algo, batch, hyper = make(args.minibatch, "eager" if path == "torch.optim" else path)
        gradient_step = algo.gradient_step
        if path == "torch.optim":
            optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5, foreach=True)

            def step(agent=agent, algo=algo, batch=batch, optimizer=optimizer, cfg=cfg, hyper=hyper) -> None:
                policy_out, values = agent(batch.obs)
                loss, _ = algo.loss(agent.head, policy_out, values, batch, hyper)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.ppo.max_grad_norm)
                optimizer.step()
        else:
            def step(gradient_step=gradient_step, batch=batch, hyper=hyper) -> None:
                gradient_step.step(batch, hyper)
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start
        median, best = measure(step, args.repeats, clock)
        rows.append((path, median, best, first))
    print(f"| path | us/step median | min | first call (s) |  minibatch {args.minibatch}")
    print("| --- | --- | --- | --- |")
    for path, median, best, first in rows:
        print(f"| {path} | {median:.0f} | {best:.0f} | {first:.2f} |")


if __name__ == "__main__":
    main()
