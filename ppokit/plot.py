"""Learning curves from one or more run folders' metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from ppokit.config import ConfigError, check_output_file, quote
from ppokit.files import write_atomic_with


def read_curve(run_dir: Path) -> tuple[list[float], list[float]]:
    """``(global_steps, episodic_return_mean)`` of a run; rows without a return are skipped."""
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
            if reader.fieldnames is None or not {"global_step", "episodic_return_mean"} <= set(reader.fieldnames):
                raise ConfigError(f"{quote(path)} is not a ppokit metrics.csv (no global_step and "
                                  "episodic_return_mean columns)")
            for line, row in enumerate(reader, start=2):
                value = row.get("episodic_return_mean") or ""
                step = row.get("global_step") or ""
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


def plot_runs(run_dirs: list[Path], out: Path) -> None:
    """Plot mean training return (last 20 episodes) against environment steps, one line per run.

    ConfigError, before anything is drawn, for a bad ``out`` or a run that cannot be read or has
    no finished episode."""
    out = check_output_file(out, (".png", ".pdf", ".svg"))
    curves = [(run_dir, *read_curve(run_dir)) for run_dir in run_dirs]
    for run_dir, steps, _ in curves:
        if not steps:  # nothing to draw: refuse rather than write empty axes
            raise ConfigError(f"run {quote(run_dir)} has no finished episode yet (its metrics.csv has no "
                              "episodic_return_mean); plot needs runs with at least one (train longer)")
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
    try:
        write_atomic_with(out, lambda tmp: figure.savefig(tmp, dpi=120, format=out.suffix.lower()[1:]))
    finally:
        plt.close(figure)
