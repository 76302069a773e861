"""Learning curves from run folders: runs of one setting (their configs equal but for the seed)
are drawn as one line, the mean over seeds with a 95% confidence band.

:func:`group_runs` finds the settings, :func:`mean_band` averages curves on a common grid, and
:func:`plot_runs` draws the figure: the training return (mean of the last 20 episodes) per
setting, the evaluation curve (evaluations.csv) dashed in the same colour where runs have one,
the preset's solved threshold as a dotted line, a title naming the env and algorithm, against
environment steps or wall-clock time.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ppokit.config import ConfigError, check_output_file, load_yaml, quote
from ppokit.evaluations import read_evaluations
from ppokit.extras import require
from ppokit.files import write_atomic_with
from ppokit.stats import bootstrap_mean_ci

X_AXES = {"steps": ("global_step", "environment steps"), "time": ("wall_time_s", "wall-clock time (s)")}
# Config fields that do not change what is learned: runs differing only in these are one setting.
NOT_A_SETTING = ("seed", "total_steps", "device", "torch_threads", "update_path", "checkpoint_every",
                 "checkpoint_interval_s", "dist_timeout_s", "eval_episodes", "eval", "preset")


def read_curve(run_dir: Path, x: str = "global_step") -> tuple[list[float], list[float]]:
    """``(x, episodic_return_mean)`` of a run, x a metrics.csv column (``global_step`` or
    ``wall_time_s``); rows without a return are skipped."""
    if not run_dir.exists():
        raise ConfigError(f"run folder {quote(run_dir)} does not exist")
    if not run_dir.is_dir():
        raise ConfigError(f"{quote(run_dir)} is not a folder (expected a run folder with metrics.csv)")
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise ConfigError(f"{quote(run_dir)} is not a run folder (it has no metrics.csv)")
    steps, returns = [], []
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {x, "episodic_return_mean"} <= set(reader.fieldnames):
                raise ConfigError(f"{quote(path)} is not a ppokit metrics.csv (no {x} and "
                                  "episodic_return_mean columns)")
            for line, row in enumerate(reader, start=2):
                value = row.get("episodic_return_mean") or ""
                step = row.get(x) or ""
                if not value or not step:  # no episode finished yet, or a row cut short by a crash
                    continue
                try:
                    steps.append(float(step))
                    returns.append(float(value))
                except ValueError:
                    raise ConfigError(f"{quote(path)} line {line}: not a number") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{quote(path)} cannot be read ({error})") from None
    return steps, returns



@dataclass
class Setting:
    """Runs whose configs are equal but for :data:`NOT_A_SETTING` (typically: the seeds)."""

    config: dict[str, Any]
    runs: list[Path] = field(default_factory=list)
    label: str = ""


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _setting_of(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as flat dotted fields, without those that are not a setting; a run
    without one is a setting of its own."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {"run": str(run_dir.resolve())}
    flat = _flatten(load_yaml(path))
    return {key: value for key, value in flat.items() if key.split(".")[0] not in NOT_A_SETTING}


def _algo_section(key: str, config: dict[str, Any]) -> bool:
    """Whether ``key`` belongs to another algorithm's section than the setting's (noise in labels)."""
    from ppokit.algos import ALGOS

    section = key.split(".")[0]
    sections = {spec.section for spec in ALGOS.values()}
    algo = config.get("algo")
    return section in sections and (algo not in ALGOS or ALGOS[algo].section != section)


def group_runs(run_dirs: list[Path]) -> list[Setting]:
    """The settings among ``run_dirs``, in order of first appearance, each labelled by what sets it
    apart: the env and algorithm when those differ, and the fields in which settings differ."""
    settings: list[Setting] = []
    for run_dir in run_dirs:
        config = _setting_of(run_dir)
        match = next((s for s in settings if s.config == config), None)
        if match is None:
            settings.append(match := Setting(config))
        match.runs.append(run_dir)
    keys = sorted({k for s in settings for k in s.config})
    differing = [k for k in keys if len({repr(s.config.get(k)) for s in settings}) > 1]
    for s in settings:
        parts = [str(s.config[k]) for k in ("env_id", "algo") if k in differing and k in s.config]
        parts += [f"{k}={s.config.get(k)}" for k in differing
                  if k not in ("env_id", "algo", "run") and not _algo_section(k, s.config)]
        name = ", ".join(parts) or (s.runs[0].name if "run" in s.config else str(s.config.get("algo", "")))
        s.label = f"{name} ({len(s.runs)} run{'s' if len(s.runs) > 1 else ''})"
    return settings


def mean_band(curves: list[tuple[list[float], list[float]]], points: int = 200
              ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """``(grid [G], mean [G], (low [G], high [G]) or None)`` of curves ``(x, y)`` over the x range
    that they all cover, each interpolated linearly on the grid.

    The band is the 95% percentile-bootstrap confidence interval of the mean over runs (runs
    resampled with replacement, fixed generator): unlike a t-interval over 3 seeds it stays within
    the returns the runs reached. None for a single curve."""
    low = max(min(x) for x, _ in curves)
    high = min(max(x) for x, _ in curves)
    grid = np.linspace(low, high, points) if high > low else np.array([high])
    values = np.stack([np.interp(grid, x, y) for x, y in curves])  # [R, G]
    mean = values.mean(0)
    return grid, mean, bootstrap_mean_ci(values)


def _threshold(settings: list[Setting]) -> float | None:
    values = {float(v) for s in settings if (v := s.config.get("solved_threshold")) is not None}
    return values.pop() if len(values) == 1 else None


def _title(settings: list[Setting]) -> str:
    envs = sorted({str(s.config.get("env_id", "?")) for s in settings})
    algos = sorted({str(s.config.get("algo", "?")) for s in settings})
    return f"{' / '.join(envs)}: {', '.join(algos)}"


def pyplot(feature: str, extra: str) -> Any:
    """matplotlib.pyplot drawing to files (the Agg backend); ConfigError naming ``extra`` when missing."""
    matplotlib = require("matplotlib", extra, feature)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_runs(run_dirs: list[Path], out: Path, x: str = "steps") -> dict[str, Any]:
    """Draw the runs' learning curves, grouped by setting (see the module docstring).

    ConfigError, before anything is drawn, for a bad ``out`` or ``x``, or a run that cannot be
    read or has no finished episode. Returns what was drawn: title, lines, threshold."""
    if x not in X_AXES:
        raise ConfigError(f"--x {quote(x)}: expected one of {', '.join(X_AXES)}")
    column, x_label = X_AXES[x]
    out = check_output_file(out, (".png", ".pdf", ".svg"))
    curves = {run_dir: read_curve(run_dir, column) for run_dir in run_dirs}
    for run_dir, (steps, _) in curves.items():
        if not steps:  # nothing to draw: refuse rather than write empty axes
            raise ConfigError(f"run {quote(run_dir)} has no finished episode yet (its metrics.csv has no "
                              "episodic_return_mean); plot needs runs with at least one (train longer)")
    settings = group_runs(run_dirs)
    plt = pyplot("ppokit plot", "plot")

    figure, axes = plt.subplots(figsize=(8, 5))
    drawn: dict[str, Any] = {"title": _title(settings), "lines": [], "threshold": _threshold(settings)}
    for index, setting in enumerate(settings):
        color = f"C{index % 10}"
        grid, mean, band = mean_band([curves[run] for run in setting.runs])
        axes.plot(grid, mean, color=color, label=f"{setting.label}: training return")
        if band is not None:
            axes.fill_between(grid, *band, color=color, alpha=0.2, linewidth=0)
        drawn["lines"].append({"label": setting.label, "kind": "train", "x": grid, "mean": mean, "band": band})
        evaluations = [read_evaluations(run) for run in setting.runs]
        if all(evaluations):
            eval_curves = [([row[column] for row in rows], [row["eval_return_mean"] for row in rows])
                           for rows in evaluations]
            grid, mean, band = mean_band(eval_curves)
            axes.plot(grid, mean, color=color, linestyle="--", marker="o" if len(grid) < 30 else None,
                      markersize=3, label=f"{setting.label}: evaluation")
            if band is not None:
                axes.fill_between(grid, *band, color=color, alpha=0.1, linewidth=0)
            drawn["lines"].append({"label": setting.label, "kind": "eval", "x": grid, "mean": mean, "band": band})
    if drawn["threshold"] is not None:
        axes.axhline(drawn["threshold"], color="grey", linestyle=":", label=f"solved ({drawn['threshold']:g})")
    axes.set_title(drawn["title"])
    axes.set_xlabel(x_label)
    axes.set_ylabel("return (mean over runs, 95% bootstrap band)" if any(len(s.runs) > 1 for s in settings)
                    else "return")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    try:
        write_atomic_with(out, lambda tmp: figure.savefig(tmp, dpi=120, format=out.suffix.lower()[1:]))
    finally:
        plt.close(figure)
    return drawn
