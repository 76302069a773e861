"""Record episodes of a saved agent to a GIF or an MP4."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from ppokit.config import ConfigError, check_output_file, quote
from ppokit.envs import ReportErrors, creation_error, make_env
from ppokit.spaces import check_agent_fits

if TYPE_CHECKING:
    from ppokit.agent import Agent

FORMATS = (".gif", ".mp4")


def record(path: str | Path, out: str | Path, episodes: int = 1, seed: int = 0, fps: int = 30) -> int:
    """Play ``episodes`` deterministic episodes with rgb_array rendering; returns the frame count."""
    from ppokit.agent import load_agent

    out = check_output_file(out, FORMATS)
    if out.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"--out {quote(out)}: MP4 needs imageio-ffmpeg (pip install 'ppokit[video]'); or write a .gif"
            ) from None
    agent, _, meta = load_agent(path)
    env_id = meta["env_id"]
    with _offscreen_pygame():
        frames = _play(agent, env_id, episodes, seed)
    _write(out, frames, fps)
    return len(frames)


@contextlib.contextmanager
def _offscreen_pygame() -> Iterator[None]:
    """pygame (classic-control rendering) with SDL's dummy video driver, unless one is chosen:
    rgb_array frames need no display, and probing for one prints errors on a headless machine."""
    chosen = os.environ.get("SDL_VIDEODRIVER")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        yield
    finally:
        if chosen is None:
            os.environ.pop("SDL_VIDEODRIVER", None)


def _play(agent: Agent, env_id: str, episodes: int, seed: int) -> list[np.ndarray]:
    """The rendered frames of ``episodes`` deterministic episodes: each reset, then each step."""
    env = ReportErrors(make_env(env_id, agent.config.env.kwargs, render_mode="rgb_array"), env_id, None)
    frames: list[np.ndarray] = []
    try:
        check_agent_fits(agent, env_id, env.observation_space, env.action_space)
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            frames.append(_frame(env, env_id))
            done = False
            while not done:
                obs, _, terminated, truncated, _ = env.step(agent.act(obs, deterministic=True))
                frames.append(_frame(env, env_id))
                done = terminated or truncated
    finally:
        env.close()
    return frames


def _frame(env: gym.Env, env_id: str) -> np.ndarray:
    try:
        frame = env.render()
    except (gym.error.DependencyNotInstalled, ImportError) as error:  # e.g. pygame for classic control
        raise creation_error(env_id, error) from None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ConfigError(
            f"env {quote(env_id)} cannot render images (render_mode='rgb_array' gave {type(frame).__name__})"
        )
    return frame


def _write(out: Path, frames: list[np.ndarray], fps: int) -> None:
    import imageio.v3 as iio

    if out.suffix.lower() == ".gif":
        iio.imwrite(out, np.stack(frames), duration=1000 / fps, loop=0)
    else:
        try:
            iio.imwrite(out, np.stack(frames), fps=fps, codec="libx264")
        except (ImportError, OSError, ValueError) as error:
            raise ConfigError(
                f"--out {quote(out)}: cannot write MP4 ({error}); use .gif or pip install 'ppokit[video]'"
            ) from None
