"""Does an Atari agent play as well on EnvPool's frames as on gymnasium's? (the frames differ a little)

    python benchmarks/envpool_atari_transfer.py RUN_DIR [--games 10] [--out FILE.json]

Plays ``--games`` full games with the agent of ``RUN_DIR`` (an Atari run folder; deterministic
actions, raw scores) on gymnasium's env (``ppokit.evaluate``, what evaluations and ``ppokit eval``
use) and on the EnvPool envs that ``env.vector=envpool`` trains on (``ppokit.envs.make_envs``: the
run's preprocessing translated into EnvPool's options; a lost life ends the learner's episode
there, the game's raw score is what the rollout reports). Prints both means and standard
deviations. Needs envpool and ale-py (the dev extra).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import numpy as np
import torch

import ppokit
from ppokit.envs import make_envs
from ppokit.pixels import GAME_KEY


def envpool_scores(agent: ppokit.Agent, games: int, seed: int) -> list[float]:
    """The raw score of the first full game of each of ``games`` EnvPool envs (seeds ``seed`` on)."""
    cfg = copy.deepcopy(agent.config)
    cfg.env.vector = "envpool"
    envs = make_envs(cfg, num_envs=games, seed=seed)
    obs = envs.reset()
    scores: list[float | None] = [None] * games
    while any(score is None for score in scores):
        obs, _, _, _, info = envs.step(agent.act(obs))
        ended = info.get("final_info", {})
        for i in np.flatnonzero(ended.get(f"_{GAME_KEY}", [])):
            if scores[i] is None:
                scores[i] = float(ended[GAME_KEY]["r"][i])
    envs.close()
    return [float(score) for score in scores if score is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--games", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the scores here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    agent = ppokit.load(args.run_dir)
    results = {
        "gymnasium": ppokit.evaluate(agent, episodes=args.games, seed=args.seed)["returns"],
        "envpool": envpool_scores(agent, args.games, args.seed),
    }
    for name, scores in results.items():
        print(f"{name}: {statistics.fmean(scores):.1f} +/- {statistics.pstdev(scores):.1f} over {len(scores)} games "
              f"({', '.join(f'{s:g}' for s in scores)})")
    if args.out:
        args.out.write_text(json.dumps({"run_dir": str(args.run_dir), "games": args.games, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
