"""The reproduction's report: Table 1 in Markdown with bootstrap intervals, raw returns, time, curves.

Intervals are rliable's (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"):
95% stratified bootstrap confidence intervals over runs, resampling seeds within each env, for
the mean and the interquartile mean (IQM) of the normalized scores of a setting's runs.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ppokit.reproduce.table1 import CITATION, Setting

BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
TIME_KEYS = ("time_env_s", "time_inference_s", "time_update_s", "time_other_s")
RUN_TIME_KEYS = ("wall_time_s", *TIME_KEYS)  # the seconds a run's summary.json gives


def add_run_time(totals: dict[str, float], run: dict[str, float]) -> None:
    """Add a finished run's seconds (its ``summary.json``), or another such ``totals``, to ``totals``
    in place: the sums of :data:`RUN_TIME_KEYS`, the number of ``runs`` and the shortest and longest
    run's wall time (``wall_min_s``, ``wall_max_s``). A run without a wall time adds nothing."""
    if not isinstance(run.get("wall_time_s"), (int, float)):
        return
    for key in RUN_TIME_KEYS:
        if isinstance(run.get(key), (int, float)):
            totals[key] = totals.get(key, 0.0) + float(run[key])
    totals["runs"] = totals.get("runs", 0) + run.get("runs", 1)
    for key, pick in (("wall_min_s", min), ("wall_max_s", max)):
        wall = float(run.get(key, run["wall_time_s"]))
        totals[key] = pick(totals.get(key, wall), wall)


def summed_time(groups: list[dict[str, float]]) -> dict[str, float]:
    """The sums of :data:`RUN_TIME_KEYS` over ``groups`` (each a :func:`add_run_time` total or a
    ``results.json``'s ``time_s``)."""
    return {key: sum(group[key] for group in groups if key in group)
            for key in RUN_TIME_KEYS if any(key in group for group in groups)}


@dataclass
class Results:
    """What the report is made of; ``raw`` and ``normalized`` hold one score per seed (seed order)."""

    envs: list[str]
    settings: list[Setting]  # those with every run finished
    seeds: int
    steps: int
    random: dict[str, float]
    raw: dict[tuple[str, str], list[float]]
    normalized: dict[tuple[str, str], list[float]]
    missing: dict[str, int] = field(default_factory=dict)  # setting -> runs not finished
    times: dict[str, float] = field(default_factory=dict)  # summed over the finished runs: wall, env, ...
    env_times: dict[str, dict[str, float]] = field(default_factory=dict)  # env -> the same over its runs (add_run_time)


def require_rliable() -> None:
    """ConfigError (one line, with the pip command) when the ``repro`` extra is not installed."""
    from ppokit.extras import require

    for module in ("rliable.library", "rliable.metrics", "matplotlib"):
        require(module, "repro", "ppokit reproduce")


def intervals(results: Results) -> dict[str, dict[str, tuple[float, float, float]]]:
    """``setting -> {"mean" | "iqm": (point, low, high)}``: rliable's aggregate over the
    ``[seeds, envs]`` matrix of normalized scores, with a 95% stratified bootstrap interval."""
    from rliable import library, metrics

    matrices = {s.name: np.array([results.normalized[env, s.name] for env in results.envs]).T
                for s in results.settings}
    matrices = {name: m for name, m in matrices.items() if np.isfinite(m).all()}
    if not matrices:
        return {}

    def aggregates(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)])

    # rliable 1.2 draws its resamples from numpy's global generator (np.random.choice), whatever
    # random_state says: seed that for the call, and give the caller's state back after it.
    global_state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        with warnings.catch_warnings():  # arch (under rliable) deprecates the RandomState rliable passes it
            warnings.simplefilter("ignore", FutureWarning)
            points, bounds = library.get_interval_estimates(matrices, aggregates, reps=BOOTSTRAP_REPS,
                                                            random_state=np.random.RandomState(BOOTSTRAP_SEED))
    finally:
        np.random.set_state(global_state)
    return {name: {key: (float(points[name][i]), float(bounds[name][0, i]), float(bounds[name][1, i]))
                   for i, key in enumerate(("mean", "iqm"))} for name in matrices}


def _interval(value: tuple[float, float, float] | None) -> str:
    return "n/a" if value is None else f"{value[0]:.2f} [{value[1]:.2f}, {value[2]:.2f}]"


def _number(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:,.1f}"


def markdown(results: Results, estimates: dict[str, dict[str, tuple[float, float, float]]], command: str) -> str:
    """The report as Markdown: Table 1 with intervals beside the paper's numbers, then the raw
    returns per env, the time split and what is missing."""
    lines = [
        "# PPO paper, Table 1, reproduced with ppokit", "",
        f"`{command}`", "",
        f"{results.steps:,} steps per run, seeds 0-{results.seeds - 1}, envs: {', '.join(results.envs)}. "
        "Score of a run: mean return of its last 100 training episodes; per env the random policy scores 0 and "
        "the best setting 1. Intervals: 95% stratified bootstrap over runs (rliable, "
        f"{BOOTSTRAP_REPS} resamples). Paper: {CITATION} (MuJoCo v1, 7 envs, 3 seeds).", "",
        "| setting | paper | normalized score, mean [95% CI] | IQM [95% CI] |",
        "| --- | ---: | ---: | ---: |",
    ]
    for s in results.settings:
        found = estimates.get(s.name, {})
        lines.append(f"| {s.name} ({s.label}) | {s.paper_score:.2f} | {_interval(found.get('mean'))} | "
                     f"{_interval(found.get('iqm'))} |")
    for name, count in results.missing.items():
        lines.append(f"| {name} | | not yet measured ({count} runs missing) | |")
    lines += ["", "## Raw returns (mean +/- std over seeds)", "",
              "| setting | " + " | ".join(results.envs) + " |", "| --- |" + " ---: |" * len(results.envs)]
    lines.append("| random policy | " + " | ".join(_number(results.random[env]) for env in results.envs) + " |")
    for s in results.settings:
        cells = [f"{np.mean(v):,.1f} +/- {np.std(v):,.1f}" for v in (results.raw[env, s.name] for env in results.envs)]
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    if results.times:
        wall = results.times.get("wall_time_s", 0.0)
        split = ", ".join(f"{key[5:-2]} {results.times[key]:,.0f} s" for key in TIME_KEYS if key in results.times)
        lines += ["", "## Time", "", f"Summed over the finished runs: {wall:,.0f} s of training ({split})."]
    if results.env_times:
        lines += ["", "| env | runs | one run's wall time | summed: " + " | ".join(key[5:-2] for key in TIME_KEYS) +
                  " |", "| --- | ---: | ---: |" + " ---: |" * len(TIME_KEYS)]
        for env, t in results.env_times.items():
            lines.append(f"| {env} | {t['runs']:.0f} | {t['wall_min_s']:,.0f}-{t['wall_max_s']:,.0f} s | " +
                         " | ".join(f"{t.get(key, math.nan):,.0f} s" for key in TIME_KEYS) + " |")
    return "\n".join(lines) + "\n"


def write_json(results: Results, estimates: dict, path: Path) -> None:
    """Every number of the report, machine-readable."""
    data = {
        "steps": results.steps, "seeds": results.seeds, "envs": results.envs,
        "random_policy": results.random,
        "settings": {s.name: {
            "paper": s.paper_score, "algo": s.algo, "sets": list(s.sets),
            "raw": {env: results.raw[env, s.name] for env in results.envs},
            "normalized": {env: results.normalized[env, s.name] for env in results.envs},
            **{key: dict(zip(("point", "low", "high"), value)) for key, value in estimates.get(s.name, {}).items()},
        } for s in results.settings},
        "missing_runs": results.missing, "time_s": results.times, "time_per_env_s": results.env_times,
    }
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def plot_curves(curves: dict[tuple[str, str], list[tuple[list[float], list[float]]]], envs: list[str],
                settings: list[Setting], out: Path) -> None:
    """One panel per env, one line per setting: the training return (mean of the last 20
    episodes) averaged over seeds, on the steps all its seeds reached."""
    from ppokit.plot import pyplot

    plt = pyplot("ppokit reproduce's curves", "repro")

    columns = min(4, len(envs))
    rows = math.ceil(len(envs) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for index, env in enumerate(envs):
        panel = axes[index // columns][index % columns]
        for s in settings:
            seeds = [(steps, returns) for steps, returns in curves.get((env, s.name), []) if steps]
            if not seeds:
                continue
            end = min(steps[-1] for steps, _ in seeds)
            grid = np.linspace(max(steps[0] for steps, _ in seeds), end, 100)
            mean = np.mean([np.interp(grid, steps, returns) for steps, returns in seeds], axis=0)
            panel.plot(grid, mean, label=s.name, linewidth=1.2)
        panel.set_title(env, fontsize=10)
        panel.set_xlabel("environment steps", fontsize=8)
        panel.grid(alpha=0.3)
    for index in range(len(envs), rows * columns):
        axes[index // columns][index % columns].axis("off")
    axes[0][0].set_ylabel("training return")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    figure.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    figure.savefig(out, dpi=110)
    plt.close(figure)
