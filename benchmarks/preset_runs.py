"""Per-seed and over-seed results of finished ``ppokit train`` run folders, for docs/presets.md.

Reads each run folder's ``summary.json``, groups the runs by env, and writes one JSON with every
seed's numbers plus a Markdown table of the means and standard deviations over seeds::

    python benchmarks/preset_runs.py runs/hc-seed0 runs/hc-seed1 runs/hc-seed2 \\
        --out benchmarks/results/presets.json --markdown presets-table.md

Columns: the mean return of the last 20 and the last 100 training episodes (the issue's and the
PPO paper's scores), the final evaluation (deterministic policy, its episodes), and the wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from _common import machine_info, versions

COLUMNS = ("train_return_last20", "train_return_last100", "eval_return_mean", "wall_time_s")


def read_run(run_dir: Path) -> dict:
    """One finished run's numbers: env, seed, steps and :data:`COLUMNS` (SystemExit if unfinished)."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        sys.exit(f"{run_dir}: no summary.json (the run has not finished)")
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "completed":
        sys.exit(f"{run_dir}: status {summary.get('status')!r}, not 'completed'")
    run = {key: summary[key] for key in ("env_id", "seed", "total_steps", *COLUMNS)}
    run["run_dir"] = str(run_dir)
    return run


def spread(values: list[float]) -> str:
    """``mean +/- std`` over seeds (the sample standard deviation)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):,.1f} +/- {std:,.1f}"


def markdown(runs: list[dict]) -> str:
    """One row per env: seeds, steps, then mean +/- std over seeds of every column."""
    lines = ["| env | seeds | steps | last 20 training episodes | last 100 | final eval | wall time per run (s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for env in sorted({run["env_id"] for run in runs}):
        mine = [run for run in runs if run["env_id"] == env]
        seeds = ",".join(str(run["seed"]) for run in sorted(mine, key=lambda run: run["seed"]))
        steps = {run["total_steps"] for run in mine}
        cells = [spread([run[column] for run in mine]) for column in COLUMNS]
        lines.append(f"| {env} | {seeds} | {'/'.join(f'{s:,}' for s in sorted(steps))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--out", type=Path, required=True, help="JSON with every run's numbers")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    runs = [read_run(run_dir) for run_dir in args.runs]
    table = markdown(runs)
    args.out.write_text(json.dumps({"machine": machine_info(), "versions": versions(), "runs": runs},
                                   indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    print(table, end="")


if __name__ == "__main__":
    main()
