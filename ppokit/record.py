"""Record episodes of a saved agent to a GIF or an MP4."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from ppokit.config import ConfigError

FORMATS = (".gif", ".mp4")


def record(path: str | Path, out: str | Path, episodes: int = 1, seed: int = 0, fps: int = 30) -> int:
    """Play ``episodes`` deterministic episodes with rgb_array rendering; returns the frame count."""
    from ppokit.checkpoint import load_agent

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out '{out}': expected a .gif or .mp4 file name")
    if not out.parent.exists():
        raise ConfigError(f"--out '{out}': folder '{out.parent}' does not exist")
    agent, _, meta = load_agent(path)
    env = gym.make(meta["env_id"], render_mode="rgb_array", **agent.config.env.kwargs)
    frames: list[np.ndarray] = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            frames.append(env.render())
            done = False
            while not done:
                obs, _, terminated, truncated, _ = env.step(agent.act(obs, deterministic=True))
                frames.append(env.render())
                done = terminated or truncated
    finally:
        env.close()
    _write(out, frames, fps)
    return len(frames)


def _write(out: Path, frames: list[np.ndarray], fps: int) -> None:
    import imageio.v3 as iio

    if out.suffix.lower() == ".gif":
        iio.imwrite(out, np.stack(frames), duration=1000 / fps, loop=0)
    else:
        try:
            iio.imwrite(out, np.stack(frames), fps=fps, codec="libx264")
        except (ImportError, OSError, ValueError) as error:
            raise ConfigError(
                f"--out '{out}': MP4 needs imageio-ffmpeg ({error}); use .gif or pip install imageio-ffmpeg"
            ) from None
