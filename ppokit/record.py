"""Record episodes of a saved agent to a GIF or an MP4."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from ppokit.config import check_output_file
from ppokit.envs import ENV_FAILURES, FROM_ENV_ID, ReportErrors, agent_pixels, creation_error
from ppokit.errors import ConfigError, EnvError, first_line, quote
from ppokit.evaluate import DEFAULT_STEP_CAP, play_episodes, report_capped
from ppokit.extras import install_command, require
from ppokit.files import write_atomic_with
from ppokit.memory import available_bytes, format_bytes
from ppokit.spaces import check_agent_fits

if TYPE_CHECKING:
    from ppokit.agent import Agent

FORMATS = (".gif", ".mp4")

# What MuJoCo's renderer raises without an OpenGL context (no display and MUJOCO_GL unset, or a
# MUJOCO_GL backend that cannot start): mujoco.FatalError "gladLoadGL error" or "an OpenGL platform
# library has not been loaded ...", gymnasium's "No OpenGL backend could be imported", or an
# ImportError such as "Cannot initialize a headless EGL display".
NO_OPENGL_CONTEXT = re.compile(r"OpenGL|gladLoadGL|\bEGL\b|OSMesa|GLFW|MUJOCO_GL", re.IGNORECASE)


def record(path: str | Path, out: str | Path, episodes: int = 1, seed: int = 0, fps: int = 30,
           env_id: str | None = None, step_cap: int = DEFAULT_STEP_CAP) -> int:
    """Play ``episodes`` deterministic episodes with rgb_array rendering; returns the frame count.

    ``env_id`` (default: the checkpoint's env) is the env to play in; the checkpoint's
    ``env.kwargs`` apply only to its own env. An episode the env has not ended after ``step_cap``
    steps is stopped (with a warning), so the frames kept in memory are bounded. The agent sees its
    preprocessed observations (its config's ``pixels``); the video shows the env's own rendering."""
    from ppokit.agent import load_agent

    out = check_output_file(out, FORMATS)
    require("imageio", "video", "ppokit record")
    if out.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"--out {quote(out)}: MP4 needs imageio-ffmpeg ({install_command('video')}); or write a .gif"
            ) from None
    agent, _, meta = load_agent(path)
    env_id = env_id or meta["env_id"]
    kwargs = agent.config.env.kwargs if env_id == meta["env_id"] else {}
    with _offscreen_pygame():
        frames = _play(agent, env_id, kwargs, episodes, seed, step_cap)
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


def _play(agent: Agent, env_id: str, kwargs: dict, episodes: int, seed: int, step_cap: int) -> list[np.ndarray]:
    """The rendered frames of ``episodes`` deterministic episodes: each reset, then each step."""
    env = ReportErrors(FROM_ENV_ID.make(env_id, kwargs, render_mode="rgb_array", pixels=agent_pixels(agent)),
                       env_id, None)
    frames: list[np.ndarray] = []
    capped = 0
    try:
        check_agent_fits(agent, env_id, env.observation_space, env.action_space)
        for episode in range(episodes):
            _, (length,) = play_episodes(agent, [env], [seed + episode], step_cap=step_cap,
                                         after_step=lambda rendered: _frame(rendered, env_id, frames))
            capped += length >= step_cap
    finally:
        env.close()
    report_capped(capped, episodes, env_id, step_cap)
    return frames


def _frame(env: gym.Env, env_id: str, frames: list[np.ndarray]) -> None:
    """Append the env's rendered frame to ``frames``; ConfigError once the frames would take more
    than a quarter of the memory available (they are all held until the video is written)."""
    frame = _render(env, env_id)
    frames.append(frame)
    if frame.nbytes * len(frames) > available_bytes() // 4:
        raise ConfigError(f"the recording of env {quote(env_id)} would take more than "
                          f"{format_bytes(available_bytes() // 4)} of memory after {len(frames):,} frames; lower "
                          "--episodes or --max-episode-steps")


def _render(env: gym.Env, env_id: str) -> np.ndarray:
    try:
        frame = env.render()
    except ENV_FAILURES as error:  # translated into one line
        raise _render_error(env_id, error) from None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ConfigError(
            f"env {quote(env_id)} cannot render images (render_mode='rgb_array' gave {type(frame).__name__})"
        )
    return frame


def _render_error(env_id: str, error: BaseException) -> Exception:
    """One line for an env whose render() raised: no OpenGL context (ConfigError), a missing
    package such as pygame (ConfigError), or anything else (EnvError)."""
    cause = f"{type(error).__name__}: {first_line(error)}"
    if NO_OPENGL_CONTEXT.search(cause):
        backend = os.environ.get("MUJOCO_GL")
        tried = f"MUJOCO_GL={backend} did not work" if backend else "MUJOCO_GL is not set"
        return ConfigError(
            f"env {quote(env_id)} cannot render without an OpenGL context ({tried}; {cause}); without a display "
            "set MUJOCO_GL=egl (a GPU) or MUJOCO_GL=osmesa (CPU only), e.g. MUJOCO_GL=egl ppokit record ..."
        )
    if isinstance(error, (gym.error.DependencyNotInstalled, ImportError)):  # e.g. pygame for classic control
        return creation_error(env_id, error)
    return EnvError(f"env {quote(env_id)} raised in render: {cause}")


def _write(out: Path, frames: list[np.ndarray], fps: int) -> None:
    """The video, written beside ``out`` and renamed over it: a full disk leaves no partial file."""
    import imageio.v3 as iio

    if out.suffix.lower() == ".gif":
        write_atomic_with(out, lambda tmp: iio.imwrite(tmp, np.stack(frames), duration=1000 / fps, loop=0))
    else:
        try:
            write_atomic_with(out, lambda tmp: iio.imwrite(tmp, np.stack(frames), fps=fps, codec="libx264"))
        except (ImportError, ValueError) as error:
            raise ConfigError(
                f"--out {quote(out)}: cannot write MP4 ({error}); use .gif or {install_command('video')}"
            ) from None
