"""pong-vpg's two options (docs/tutorials.md): Karpathy's 80x80 difference frames
(``pixels.preprocess: pong``, saved with the config so eval and record see them too) and the
discounted return reset at each point (``vpg.reset_return_on_reward``), each against a hand
computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppokit
from ppokit.algos.vpg import reward_to_go
from ppokit.batch import Batch
from ppokit.config import PixelsConfig
from ppokit.envs import FROM_ENV_ID
from ppokit.errors import ConfigError
from ppokit.pixels import DifferenceFrames, pong_frame
from ppokit.presets import build_config


def synthetic_frame(ball: tuple[int, int], paddle_row: int) -> np.ndarray:
    """A 210x160 RGB frame: background colour 144 (red) everywhere, the other background colour
    109 in a stripe, a 2x2 ball of red 236 at the ``ball`` pixel (row, column) and a paddle of red 92
    rows ``paddle_row..+15`` in columns 140, 141; the score area (rows < 35) drawn over."""
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 144, 72, 17
    frame[100:104, :, 0] = 109
    frame[:35, :, 0] = 236  # the score: cropped away
    frame[195:, :, 0] = 236  # below the field: cropped away
    row, column = ball
    frame[row:row + 2, column:column + 2, 0] = 236
    frame[paddle_row:paddle_row + 16, 140:142, 0] = 92
    return frame


def test_pong_frame_crops_downsamples_erases_and_binarizes():
    frame = synthetic_frame(ball=(60, 20), paddle_row=120)
    out = pong_frame(frame)
    assert out.shape == (80, 80) and out.dtype == np.float32
    expected = np.zeros((80, 80), np.float32)
    # Kept: rows 35, 37, ..., 193 (row 35 + 2i is index i) and columns 0, 2, ..., 158.
    expected[13, 10] = 1.0  # the 2x2 ball on rows 60-61, columns 20-21: row 61, column 20
    expected[43:51, 70] = 1.0  # the paddle on rows 120-135, columns 140-141: rows 121..135, column 140
    np.testing.assert_array_equal(out, expected)


def test_difference_frames_are_this_frame_minus_the_previous_and_zero_after_reset():
    import gymnasium as gym

    first, second = synthetic_frame((60, 20), 120), synthetic_frame((64, 24), 124)

    class Frames(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
        action_space = gym.spaces.Discrete(6)

        def reset(self, *, seed=None, options=None):
            self.queue = [second, first]
            return first, {}

        def step(self, action):
            return self.queue.pop(0), 0.0, False, False, {}

    env = DifferenceFrames(Frames())
    obs, _ = env.reset()
    assert obs.shape == (80, 80) and not obs.any()  # no previous frame
    obs = env.step(0)[0]
    expected = np.zeros((80, 80), np.float32)
    expected[13, 10], expected[15, 12] = -1.0, 1.0  # the ball left rows 60-61 (index 13) for 64-65 (15)
    expected[43:51, 70] -= 1.0  # the paddle left rows 120..135 (indices 43..50) ...
    expected[45:53, 70] += 1.0  # ... for 124..139 (45..52)
    np.testing.assert_array_equal(obs, expected)
    assert set(np.unique(obs)) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(env.step(0)[0], -expected)  # and back
    assert env.observation_space.shape == (80, 80) and env.observation_space.dtype == np.float32


def test_pong_preprocessing_on_ale_pong_for_training_and_evaluation():
    pytest.importorskip("ale_py")
    pixels = PixelsConfig(preprocess="pong", frame_stack=1)
    for training in (True, False):
        env = FROM_ENV_ID.make("ALE/Pong-v5", {}, pixels=pixels, training=training)
        try:
            obs, _ = env.reset(seed=0)
            assert obs.shape == (80, 80) and not obs.any()
            moved = False
            for _ in range(60):
                obs = env.step(0)[0]
                assert set(np.unique(obs)) <= {-1.0, 0.0, 1.0}
                moved |= bool(obs.any())
            assert moved  # the ball and the opponent's paddle move
        finally:
            env.close()
    with pytest.raises(ConfigError, match=r"^pixels.preprocess=pong: env 'CartPole-v1'"):
        FROM_ENV_ID.make("CartPole-v1", {}, pixels=pixels, training=True)


def test_the_checkpoint_keeps_the_pong_preprocessing():
    cfg = build_config("ALE/Pong-v5", preset="pong-vpg")
    assert (cfg.pixels.preprocess, cfg.vpg.reset_return_on_reward, cfg.vpg.baseline) == ("pong", True, "none")
    assert ppokit.config.from_dict(ppokit.config.to_dict(cfg)).pixels.preprocess == "pong"  # config.yaml / meta.json


# ---------------------------------------------------------------------------- the return reset at each point


def test_return_resets_at_each_nonzero_reward():
    """One env, T = 7, gamma 0.5: rewards [0, 0, -1, 0, 0, 0, 1] (two points). Karpathy's
    discount_rewards: running = 0 at each nonzero reward, then running = running * gamma + r."""
    rewards = torch.tensor([0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]).reshape(7, 1)
    none = torch.zeros(7, 1, dtype=torch.bool)
    batch = Batch(*[torch.zeros(7)] * 7, torch.zeros(7, 2), rewards=rewards.reshape(-1),
                  terminated=none.reshape(-1), truncated=none.reshape(-1))
    reset = reward_to_go(batch, num_steps=7, gamma=0.5, reset_on_reward=True)
    assert reset.tolist() == [-0.25, -0.5, -1.0, 0.125, 0.25, 0.5, 1.0]
    plain = reward_to_go(batch, num_steps=7, gamma=0.5)  # without: the later point leaks into earlier steps
    assert plain.tolist() == [-0.25 + 2**-6, -0.5 + 2**-5, -1.0 + 2**-4, 0.125, 0.25, 0.5, 1.0]


def test_return_reset_needs_reinforce():
    with pytest.raises(ConfigError, match=r"^vpg.reset_return_on_reward: .* needs vpg.baseline=none"):
        ppokit.config.validate(build_config("CartPole-v1", algo="vpg", sets=["vpg.reset_return_on_reward=true"]))
