"""``ppokit info`` and ``ppokit watch``: what a saved agent is, and the agent playing live.

:func:`describe` gathers what a run folder or checkpoint says about its agent (env, spaces,
algorithm, layers with parameter counts, steps, normalizer statistics, evaluations) into a dict;
:func:`format_info` lays it out for a terminal. :func:`watch` plays episodes in a window
(``render_mode="human"``) where there is a display.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from torch import nn

from ppokit.errors import ConfigError, EnvError, quote
from ppokit.evaluations import read_evaluations


def checkpoint_folder(path: str | Path, prefer: str = "latest") -> Path:
    """A run folder's ``checkpoints/<prefer>`` when it has one, else ``path`` itself."""
    path = Path(path)
    chosen = path / "checkpoints" / prefer
    return chosen if chosen.is_dir() else path


def _layer(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features} -> {module.out_features}"
    return f"{type(module).__name__}({module.extra_repr()})"


def layers(agent: nn.Module) -> list[dict[str, Any]]:
    """Every module that holds parameters, with what it is and its parameter count; parameters the
    agent holds itself (a Gaussian's log-std) by their own name."""
    rows = []
    for name, module in agent.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        if module is agent:
            rows += [{"name": key, "layer": f"Parameter {list(p.shape)}", "parameters": p.numel()} for key, p in own]
        else:
            rows.append({"name": name, "layer": _layer(module), "parameters": sum(p.numel() for _, p in own)})
    return rows


def _stats(values: Any) -> list[float] | float:
    array = np.asarray(values, dtype=np.float64)
    return float(array) if array.ndim == 0 else [float(v) for v in array.reshape(-1)]


def describe(path: str | Path) -> dict[str, Any]:
    """What ``path`` (a run folder or a checkpoint folder) holds about its agent."""
    from ppokit.agent import load_agent

    run_dir = Path(path)
    agent, _, meta = load_agent(checkpoint_folder(path))
    cfg = agent.config
    total = sum(p.numel() for p in agent.parameters())
    critic = sum(p.numel() for name, p in agent.named_parameters() if name.startswith(("critic_trunk", "value_head")))
    info: dict[str, Any] = {
        "path": str(run_dir), "env_id": meta["env_id"], "algo": cfg.algo,
        "observation_space": str(agent.observation_space), "action_space": str(agent.action_space),
        "global_step": agent.global_step, "layers": layers(agent),
        "parameters": {"total": total, "actor": total - critic, "critic": critic},
        "normalizer": None, "reward_scaling": None,
    }
    if agent.obs_normalizer is not None:
        n = agent.obs_normalizer
        info["normalizer"] = {"count": float(n.count), "mean": _stats(n.mean), "std": _stats(n.var.sqrt()),
                              "clip": n.clip}
    if agent.return_normalizer is not None:
        n = agent.return_normalizer
        info["reward_scaling"] = {"count": float(n.count), "return_std": float(n.var.sqrt()), "clip": n.clip}
    evaluations = read_evaluations(run_dir) if run_dir.is_dir() else []
    if evaluations:
        best = max(evaluations, key=lambda row: row["eval_return_mean"])  # max keeps the first of ties
        info["evaluations"] = {"count": len(evaluations), "best": best, "latest": evaluations[-1]}
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            data = json.loads(summary.read_text())
            info["summary"] = {key: data.get(key) for key in ("status", "total_steps", "wall_time_s", "sps",
                                                                "train_return_last20", "eval_return_mean",
                                                                "eval_return_std", "eval_episodes", "solved_at_step")}
        except (OSError, ValueError):
            pass
    return info


def _numbers(values: list[float] | float, limit: int = 6) -> str:
    if not isinstance(values, list):
        return f"{values:.3g}"
    shown = " ".join(f"{v:.3g}" for v in values[:limit])
    return f"[{shown}{' ...' if len(values) > limit else ''}]"


def _evaluation(row: dict[str, float]) -> str:
    return (f"{row['eval_return_mean']:.1f} +/- {row.get('eval_return_std', float('nan')):.1f} at step "
            f"{int(row['global_step']):,}")


def format_info(info: dict[str, Any]) -> str:
    """:func:`describe`'s dict as aligned text lines."""
    p = info["parameters"]
    lines = [
        f"env          {info['env_id']}",
        f"observation  {info['observation_space']}",
        f"action       {info['action_space']}",
        f"algorithm    {info['algo']}",
        f"steps        {info['global_step']:,} (the checkpoint shown)",
        f"parameters   {p['total']:,} (actor {p['actor']:,}, critic {p['critic']:,})",
    ]
    width = max(len(row["name"]) for row in info["layers"])
    lines += [f"  {row['name']:<{width}}  {row['layer']:<20} {row['parameters']:>9,}" for row in info["layers"]]
    n = info["normalizer"]
    lines.append("obs norm     off" if n is None else
                 f"obs norm     mean {_numbers(n['mean'])} std {_numbers(n['std'])} over {n['count']:,.0f} "
                 f"observations, clip {n['clip']}")
    if info["reward_scaling"] is not None:
        r = info["reward_scaling"]
        lines.append(f"reward norm  return std {r['return_std']:.3g} over {r['count']:,.0f} steps, clip {r['clip']}")
    if "evaluations" in info:
        e = info["evaluations"]
        lines.append(f"evaluations  best {_evaluation(e['best'])}; latest {_evaluation(e['latest'])} "
                     f"({e['count']} during training)")
    if "summary" in info:
        s = info["summary"]
        final = (f"; final eval {s['eval_return_mean']:.1f} +/- {s['eval_return_std']:.1f} over {s['eval_episodes']}"
                 if s.get("eval_return_mean") is not None else "")
        lines.append(f"run          {s.get('status')}, {s.get('total_steps') or 0:,} steps in "
                     f"{s.get('wall_time_s') or 0:.1f} s{final}")
    return "\n".join(lines)


def has_display() -> bool:
    """Whether a window can open: always on macOS and Windows; on Linux and the BSDs, when X11 or
    Wayland is named in the environment."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def watch(path: str | Path, episodes: int = 1, seed: int = 0) -> list[float]:
    """Play ``episodes`` deterministic episodes in a window; returns their returns."""
    from ppokit.agent import load_agent
    from ppokit.envs import FROM_ENV_ID, ReportErrors, agent_pixels, creation_error
    from ppokit.evaluate import play_episodes
    from ppokit.spaces import check_agent_fits

    if not has_display():
        raise ConfigError(f"no display to watch on (neither DISPLAY nor WAYLAND_DISPLAY is set); record a video "
                          f"instead: ppokit record {quote(path)} --out agent.gif")
    agent, _, meta = load_agent(checkpoint_folder(path))
    env_id = meta["env_id"]
    env = ReportErrors(FROM_ENV_ID.make(env_id, agent.config.env.kwargs, render_mode="human",
                                        pixels=agent_pixels(agent)), env_id, None)
    try:
        check_agent_fits(agent, env_id, env.observation_space, env.action_space)
        return [play_episodes(agent, [env], [seed + episode])[0][0] for episode in range(episodes)]
    except EnvError as error:  # a package the window needs (pygame for classic control) is bad setup, not a crash
        if isinstance(error.__cause__, (gym.error.DependencyNotInstalled, ImportError)):
            raise creation_error(env_id, error.__cause__) from None
        raise
    finally:
        env.close()
