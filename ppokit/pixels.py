"""Image observations: the preprocessing every env of a run gets, from the config's ``pixels`` section.

The same wrappers are applied wherever ppokit makes an env for an agent (the training envs, the
evaluations during and after training, ``ppokit eval``, ``ppokit record``, ``ppokit.evaluate``),
so an agent always sees the observations it was trained on, and a checkpoint (which saves the
config) evaluates and records on the env id alone. Two sets of wrappers differ between training
and evaluation, and only in what the learner is told, never in the observations:

* ``episodic_life`` (Atari, training only): a lost life ends the learner's episode (the game goes
  on), so the value of losing a life is learned as the end of the future rewards;
* ``clip_reward`` (training only): rewards clipped to [-1, 1], one scale for every game.

``pong`` (Karpathy's "Pong from pixels"): :class:`DifferenceFrames` of 80x80 binarized frames, no
other wrapper. Evaluations play full games and return raw scores. During training the returns in metrics.csv,
the progress line and summary.json are full-game raw scores too: :class:`GameScore` records them
below the training-only wrappers (``info["game"]``), and the rollout reports those.

The wrappers are gymnasium's own (AtariPreprocessing, ResizeObservation, GrayscaleObservation,
FrameStackObservation, ClipReward, RecordEpisodeStatistics) except two that gymnasium does not
have: :class:`FireReset` and :class:`EpisodicLife`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import (
    AtariPreprocessing,
    ClipReward,
    FrameStackObservation,
    GrayscaleObservation,
    RecordEpisodeStatistics,
    ResizeObservation,
)

from ppokit.errors import ConfigError, quote

if TYPE_CHECKING:
    from ppokit.config import PixelsConfig

GAME_KEY = "game"  # info key of the full-game statistics (RecordEpisodeStatistics' "r", "l", "t")
FIRE = "FIRE"


def mode_for(pixels: PixelsConfig, env_id: str, made_from_id: bool = True) -> str:
    """The preprocessing for ``env_id``: ``pixels.preprocess``, with ``auto`` resolved: ``atari`` for
    ``ALE/`` ids that ppokit makes itself (``made_from_id``; not an env of a user's factory), else ``none``."""
    if pixels.preprocess != "auto":
        return pixels.preprocess
    return "atari" if made_from_id and env_id.startswith("ALE/") else "none"


def make_kwargs(pixels: PixelsConfig, env_id: str, kwargs: dict[str, Any], made_from_id: bool = True) -> dict[str, Any]:
    """``env.kwargs`` for ``gymnasium.make``: in atari mode the env skips no frames itself
    (``frameskip=1``; AtariPreprocessing repeats each action ``pixels.frame_skip`` times)."""
    if mode_for(pixels, env_id, made_from_id) != "atari":
        return kwargs
    if not env_id.startswith("ALE/"):
        raise _not_atari(env_id)
    frameskip = kwargs.get("frameskip", 1)
    if frameskip != 1 and pixels.frame_skip != 1:
        raise ConfigError(
            f"env.kwargs.frameskip={frameskip!r} and pixels.frame_skip={pixels.frame_skip} would both skip frames: "
            "drop env.kwargs.frameskip (pixels.frame_skip repeats each action) or set pixels.frame_skip=1"
        )
    return {**kwargs, "frameskip": frameskip}


def _not_atari(env_id: str) -> ConfigError:
    return ConfigError(f"pixels.preprocess=atari: env {quote(env_id)} is not an Atari env of ale-py (ALE/ ids); "
                       "use pixels.preprocess=image for other image envs, or none")


def wrap(env: gym.Env, pixels: PixelsConfig, env_id: str, training: bool, made_from_id: bool = True) -> gym.Env:
    """``env`` with the preprocessing of :func:`mode_for` (``training`` adds the training-only
    wrappers, see the module docstring); ConfigError, one line, if the env does not fit it."""
    mode = mode_for(pixels, env_id, made_from_id)
    if mode == "none":
        return env
    if mode == "atari":
        env = _atari(env, pixels, env_id, training)
    elif mode == "pong":
        env = _pong(env, env_id, training)
    else:
        env = _image(env, pixels, env_id, training)
    if pixels.frame_stack > 1:
        env = FrameStackObservation(env, pixels.frame_stack)
    return env


def _atari(env: gym.Env, pixels: PixelsConfig, env_id: str, training: bool) -> gym.Env:
    """AtariPreprocessing (no-op starts, frame skip with max-pooling, resize, grayscale), FIRE at
    the start of each game and after each lost life, then the training-only wrappers."""
    if getattr(env.unwrapped, "ale", None) is None:
        raise _not_atari(env_id)
    if pixels.size <= 0:
        raise ConfigError("pixels.size: atari preprocessing resizes frames; expected a positive size such as 84")
    env = AtariPreprocessing(env, noop_max=pixels.noop_max, frame_skip=pixels.frame_skip,
                             screen_size=pixels.size, grayscale_obs=pixels.grayscale, grayscale_newaxis=False,
                             terminal_on_life_loss=False, scale_obs=False)
    meanings = env.unwrapped.get_action_meanings()
    if pixels.fire_reset and len(meanings) >= 3 and meanings[1] == FIRE:
        env = FireReset(env)
    if training:
        env = RecordEpisodeStatistics(env, stats_key=GAME_KEY)  # full games, raw scores (before the two below)
        if pixels.episodic_life:
            env = EpisodicLife(env)
        if pixels.clip_reward:
            env = ClipReward(env, -1.0, 1.0)
    return env


def _image(env: gym.Env, pixels: PixelsConfig, env_id: str, training: bool) -> gym.Env:
    """ResizeObservation, GrayscaleObservation (keeping a channel axis), ClipReward in training."""
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.shape[-1] in (1, 3)
            and space.dtype.name == "uint8"):
        raise ConfigError(f"pixels.preprocess=image: env {quote(env_id)} has observation space {space}; it needs "
                          "uint8 frames of shape (height, width, 1 or 3)")
    if pixels.size > 0 and space.shape[:2] != (pixels.size, pixels.size):
        env = ResizeObservation(env, (pixels.size, pixels.size))
    if pixels.grayscale and env.observation_space.shape[-1] == 3:
        env = GrayscaleObservation(env, keep_dim=True)
    if training:
        env = RecordEpisodeStatistics(env, stats_key=GAME_KEY)
        if pixels.clip_reward:
            env = ClipReward(env, -1.0, 1.0)
    return env


# Karpathy's "Pong from pixels" (2016) preprocessing of ALE Pong's 210x160 RGB frames.
PONG_CROP = (35, 195)  # the rows of the playing field (no score, no borders)
PONG_BACKGROUND = (144, 109)  # the red channel of the two background colours, erased
PONG_SIZE = 80  # the 160x160 field, every second row and column


def pong_frame(frame: np.ndarray) -> np.ndarray:
    """One RGB frame ``[210, 160, 3]`` uint8 -> ``[80, 80]`` float32 in {0, 1}: crop the playing
    field (rows 35..194), keep every second row and column of the red channel, erase the
    background (red 144 or 109), and set everything else (paddles, ball) to 1."""
    field = frame[PONG_CROP[0]:PONG_CROP[1]:2, ::2, 0]
    return (~np.isin(field, PONG_BACKGROUND)).astype(np.float32)


class DifferenceFrames(gym.Wrapper):
    """Observations ``[80, 80]`` float32 in {-1, 0, 1}: :func:`pong_frame` of this frame minus that
    of the previous one (zeros after a reset, where there is no previous frame), so a still image
    is 0 and the ball's motion shows (Karpathy, "Deep Reinforcement Learning: Pong from Pixels")."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (PONG_SIZE, PONG_SIZE), np.float32)
        self.previous: np.ndarray | None = None

    def _difference(self, frame: np.ndarray) -> np.ndarray:
        current = pong_frame(frame)
        difference = current - self.previous if self.previous is not None else np.zeros_like(current)
        self.previous = current
        return difference

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.previous = None
        return self._difference(obs), info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._difference(obs), reward, terminated, truncated, info


def _pong(env: gym.Env, env_id: str, training: bool) -> gym.Env:
    """:class:`DifferenceFrames` on the env's own RGB frames (its own frame skip); full-game
    statistics in training (no wrapper changes the rewards or episodes)."""
    space = env.observation_space
    if getattr(env.unwrapped, "ale", None) is None or space.shape != (210, 160, 3):
        raise ConfigError(f"pixels.preprocess=pong: env {quote(env_id)} has observation space {space}; it needs an "
                          "ALE env of 210x160 RGB frames (obs_type rgb), such as ALE/Pong-v5")
    env = DifferenceFrames(env)
    if training:
        env = RecordEpisodeStatistics(env, stats_key=GAME_KEY)
    return env


class FireReset(gym.Wrapper):
    """Press FIRE (action 1) after a reset and after each lost life: games such as Breakout wait for
    it and would otherwise stand still. The FIRE step's reward and end are passed on."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0

    def _lives(self) -> int:
        return int(self.env.unwrapped.ale.lives())

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:  # the game ended on its first step: start again without FIRE
            obs, info = self.env.reset(**kwargs)
        self.lives = self._lives()
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self._lives()
        if 0 < lives < self.lives and not (terminated or truncated):
            obs, fire_reward, terminated, truncated, info = self.env.step(1)
            reward = float(reward) + float(fire_reward)
        self.lives = lives
        return obs, reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """Training only: a lost life *terminates* the episode the learner sees, but the next reset
    goes on with the same game (one no-op step) until the game is over (Mnih et al. 2015)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = int(self.env.unwrapped.ale.lives())
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)  # the game goes on after the lost life
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = int(self.env.unwrapped.ale.lives())
        return obs, info
