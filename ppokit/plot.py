"""Learning curves from one or more run folders' metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from ppokit.config import ConfigError


def read_curve(run_dir: Path) -> tuple[list[float], list[float]]:
    """``(global_steps, episodic_return_mean)`` of a run; rows without a return are skipped."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        raise ConfigError(f"'{run_dir}' is not a run folder (no metrics.csv)")
    steps, returns = [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                value = row.get("episodic_return_mean") or ""
                if value:
                    steps.append(float(row["global_step"]))
                    returns.append(float(value))
            except (KeyError, ValueError):
                raise ConfigError(f"'{path}' is not a ppokit metrics.csv") from None
    return steps, returns


def plot_runs(run_dirs: list[Path], out: Path) -> None:
    """Plot mean training return (last 20 episodes) against environment steps, one line per run."""
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"--out '{out}': expected a .png, .pdf or .svg file name")
    curves = [(run_dir, *read_curve(run_dir)) for run_dir in run_dirs]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for run_dir, steps, returns in curves:
        axes.plot(steps, returns, label=run_dir.name)
    axes.set_xlabel("environment steps")
    axes.set_ylabel("training return (mean of last 20 episodes)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
