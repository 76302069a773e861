"""Do EnvPool's Atari frames equal ppokit's (gymnasium's AtariPreprocessing + FrameStackObservation)?

    python benchmarks/envpool_atari_frames.py [--env Pong] [--steps 60]

Both made as alike as the two allow: no no-op starts, no sticky actions, no episodic life, no
reward clipping, no FIRE on reset, 4 frames skipped (max over the last two), 84x84 grayscale, 4
stacked; seed 0; the same random actions. Prints, at the reset and every 10 steps, the largest
difference of one pixel (0-255) and the fraction of pixels that differ. Needs envpool and ale-py
(the dev extra). What the difference means for training on EnvPool: docs/atari.md.
"""

from __future__ import annotations

import argparse

import ale_py
import envpool
import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation


def difference(a: np.ndarray, b: np.ndarray) -> str:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return f"max {int(diff.max())}, {100 * float((diff > 0).mean()):.3f}% of pixels"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pong", help="game name (EnvPool's NAME-v5, gymnasium's ALE/NAME-v5)")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    gym.register_envs(ale_py)
    pool = envpool.make(f"{args.env}-v5", env_type="gymnasium", num_envs=1, seed=0, noop_max=1,
                        repeat_action_probability=0.0, episodic_life=False, reward_clip=False,
                        use_fire_reset=False, stack_num=4, frame_skip=4, img_height=84, img_width=84, gray_scale=True)
    env = gym.make(f"ALE/{args.env}-v5", frameskip=1, repeat_action_probability=0.0)
    env = FrameStackObservation(AtariPreprocessing(env, noop_max=0, frame_skip=4, screen_size=84,
                                                   grayscale_obs=True, scale_obs=False), 4)
    ours, _ = env.reset(seed=0)
    theirs, _ = pool.reset()
    print(f"reset: {difference(theirs[0], ours)}")
    rng = np.random.default_rng(0)
    for t in range(1, args.steps + 1):
        action = int(rng.integers(env.action_space.n))
        theirs = pool.step(np.array([action]))[0]
        ours = env.step(action)[0]
        if t % 10 == 0:
            print(f"step {t}: {difference(theirs[0], ours)}")


if __name__ == "__main__":
    main()
