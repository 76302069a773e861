"""Run outputs: metrics.csv, TensorBoard events, the progress display, W&B tracking and summary.json.

Only rank 0 writes; every method is a no-op on other ranks (``enabled=False``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppokit.files import open_append, open_regular, write_atomic
from ppokit.progress import ProgressDisplay

if TYPE_CHECKING:
    from ppokit.algos.registry import AlgoSpec
    from ppokit.tracking import Tracker

CSV_COLUMNS = [
    "global_step", "wall_time_s", "sps", "episodic_return_mean", "episodic_length_mean", "episodes",
    "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance", "learning_rate",
]
# Columns every run adds after the contract's; then the algorithm's own (AlgoSpec.metrics).
RUN_COLUMNS = ["iteration", "time_env_s", "time_inference_s", "time_update_s", "time_other_s",
               "eval_return_mean", "eval_return_std"]  # eval_*: only in rows with an evaluation during training


def columns_for(spec: AlgoSpec) -> list[str]:
    """metrics.csv's columns for a run of the algorithm ``spec``."""
    return CSV_COLUMNS + RUN_COLUMNS + [c for c in spec.metrics if c not in CSV_COLUMNS]


MAX_LINE = 1 << 20  # a metrics.csv line longer than this is not one ppokit wrote


def read_header(path: Path) -> list[str] | None:
    """The column names of metrics.csv (its first line, read without following a link), or None."""
    with open_regular(path) as handle:
        return parse_line(handle.readline(MAX_LINE))


def parse_line(line: bytes) -> list[str] | None:
    """The cells of one complete metrics.csv line (ending in a newline), else None."""
    try:
        return next(csv.reader([line.decode()]), None) if line.endswith(b"\n") else None
    except (UnicodeDecodeError, csv.Error):
        return None


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


class EpisodeWindow:
    """The most recent finished training episodes (returns and lengths, up to 100)."""

    def __init__(self, returns: list[float] | None = None, lengths: list[int] | None = None):
        self.returns: deque[float] = deque(returns or [], maxlen=100)
        self.lengths: deque[int] = deque(lengths or [], maxlen=100)

    def add(self, returns: list[float], lengths: list[int]) -> None:
        self.returns.extend(returns)
        self.lengths.extend(lengths)

    def mean_return(self, last: int = 20) -> float | None:
        if not self.returns:
            return None
        recent = list(self.returns)[-last:]
        return sum(recent) / len(recent)

    def mean_length(self, last: int = 20) -> float | None:
        if not self.lengths:
            return None
        recent = list(self.lengths)[-last:]
        return sum(recent) / len(recent)


class MetricsWriter:
    """Appends one row per iteration to metrics.csv, TensorBoard and the ``tracker`` if any
    (:mod:`ppokit.tracking`); shows progress (:mod:`ppokit.progress`)."""

    def __init__(self, run_dir: Path, columns: list[str], total_steps: int, start_step: int, *, enabled: bool,
                 quiet: bool, log_every: int = 0, tracker: Tracker | None = None):
        self.enabled = enabled
        self.run_dir = run_dir
        self.display: ProgressDisplay | None = None
        self.tb = None
        self.tracker = tracker if enabled else None
        if not enabled:
            return
        path = run_dir / "metrics.csv"
        self.csv_file = open_append(path)  # a regular file, never a link
        new_file = os.fstat(self.csv_file.fileno()).st_size == 0
        self.columns = columns
        if not new_file:  # a resumed run keeps the columns it started with
            self.columns = read_header(path) or columns
        self.csv = csv.DictWriter(self.csv_file, fieldnames=self.columns, extrasaction="ignore")
        if new_file:
            self.csv.writeheader()
        from torch.utils.tensorboard.writer import FileWriter

        self.tb = FileWriter(str(run_dir))  # SummaryWriter's event-file writer, without its per-value API
        self.display = ProgressDisplay(ProgressDisplay.choose(quiet, log_every), total_steps, start_step, log_every)

    def log(self, row: dict[str, Any]) -> None:
        """Write one iteration's row (keys: CSV columns; missing ones stay empty)."""
        if not self.enabled:
            return
        self.csv.writerow({k: _cell(row.get(k)) for k in self.columns})
        self.csv_file.flush()
        step = int(row["global_step"])
        scalars = {_tb_name(key): float(value) for key, value in row.items()
                   if key != "global_step" and isinstance(value, (int, float)) and math.isfinite(value)}
        self._write_tensorboard(scalars, step)
        if self.tracker is not None:
            self.tracker.log(scalars, step)
        if self.display is not None:
            self.display.update(row)

    def _write_tensorboard(self, scalars: dict[str, float], step: int) -> None:
        """All of a row's scalars as one TensorBoard event (``add_scalar`` per value costs ~25x more)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
        self.tb.add_summary(Summary(value=values), step)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.display is not None:
            self.display.close()
        self.csv_file.close()
        if self.tb is not None:
            self.tb.close()

    def finish(self, summary: dict[str, Any]) -> None:
        """The end of the run: the summary to the tracker, then summary.json (see :func:`write_summary`)."""
        if not self.enabled:
            return
        if self.tracker is not None:
            self.tracker.finish(summary)
        write_summary(self.run_dir, summary)


def _tb_name(key: str) -> str:
    if key.startswith("eval_"):
        return f"eval/{key[len('eval_'):]}"
    if key.startswith("time_") or key in ("sps", "wall_time_s"):
        return f"time/{key}"
    if key.startswith("episod"):
        return f"rollout/{key}"
    return f"train/{key}"


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write summary.json atomically, never through a link (NaN becomes null)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
    write_atomic(run_dir / "summary.json", json.dumps(clean, indent=2))
