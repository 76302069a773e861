"""Demo environments shipped with ppokit (registered on import, under the ``ppokit-demo/`` namespace).

``ppokit-demo/Catch-v0``: a small pixel env that PPO solves in about a minute on a CPU, to test
and show the image pipeline (a CNN on uint8 frames) without Atari. A dot falls from the top row,
one row per step, from a random column; the agent moves a three-pixel paddle along the bottom row
(left, stay, right; its centre stays on the frame) and gets +1 when the dot lands on the paddle,
-1 when it misses; the episode then ends (``size - 1`` steps). One frame shows everything, so no
frame stacking is needed. A random policy scores about -0.5 on 16x16 frames, the best one +1.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

CATCH_ID = "ppokit-demo/Catch-v0"
ON = 255  # the dot's and the paddle's pixels; the rest is 0


class CatchEnv(gym.Env):
    """Observations ``(size, size, 1)`` uint8 frames (HWC); actions ``Discrete(3)``: 0 left, 1 stay, 2 right."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, size: int = 16, render_mode: str | None = None):
        if not (isinstance(size, int) and 3 <= size <= 256):
            raise ValueError(f"size must be an integer in [3, 256], got {size!r}")
        self.size = size
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 1), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self.ball = np.zeros(2, np.int64)  # row, column
        self.paddle = 0  # the column of its centre, on the bottom row

    def _frame(self) -> np.ndarray:
        frame = np.zeros((self.size, self.size, 1), np.uint8)
        frame[self.ball[0], self.ball[1], 0] = ON
        frame[self.size - 1, max(self.paddle - 1, 0):self.paddle + 2, 0] = ON
        return frame

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.ball = np.array([0, self.np_random.integers(self.size)])
        self.paddle = int(self.np_random.integers(self.size))
        return self._frame(), {}

    def step(self, action: Any):
        self.paddle = int(np.clip(self.paddle + int(action) - 1, 0, self.size - 1))
        self.ball[0] += 1
        terminated = bool(self.ball[0] == self.size - 1)
        reward = (1.0 if abs(int(self.ball[1]) - self.paddle) <= 1 else -1.0) if terminated else 0.0
        return self._frame(), reward, terminated, False, {}

    def render(self) -> np.ndarray:
        """The frame in colour, 8x larger: ``(8 * size, 8 * size, 3)`` uint8."""
        return np.repeat(np.repeat(np.repeat(self._frame(), 3, axis=2), 8, axis=0), 8, axis=1)


if CATCH_ID not in gym.envs.registry:
    gym.register(CATCH_ID, entry_point=CatchEnv)
