"""What a run shows while it trains, in at most 80 columns.

On a terminal: a tqdm bar followed by the run's state, ``45%|████    | 45.1k/100k 6.57k/s ret
187.3 pi -0.0123 vf 12.3 kl 0.00401 ...``. With ``--quiet``, or when stdout is not a terminal
(a log file, CI): the same state as one plain line every ``log_every`` iterations (and the last).
The parts are in order of importance and those that do not fit the width are left out.

Labels: ``ret`` mean return of the last 20 training episodes, ``eval`` the latest evaluation
during training, ``pi`` policy loss, ``vf`` value loss, ``kl`` approximate KL, ``ent`` entropy,
``eta`` time left at the run's average speed.
"""

from __future__ import annotations

import math
import shutil
import sys
from typing import Any, TextIO

WIDTH = 80
BAR_FORMAT = "{percentage:3.0f}%|{bar:8}| {desc}"
BAR_PREFIX = len("100%|12345678| ")  # what the bar takes before the state text
# (row key, label): the losses and statistics, in order of importance
STATISTICS = (("policy_loss", "pi"), ("value_loss", "vf"), ("approx_kl", "kl"), ("entropy", "ent"))


def si(number: float) -> str:
    """``45056 -> '45.1k'``, ``1e6 -> '1M'`` (3 significant digits)."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(number) >= size * 0.9995:
            return f"{number / size:.3g}{unit}"
    return f"{number:.3g}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def state_parts(row: dict[str, Any], total_steps: int, last_eval: float | None = None) -> list[str]:
    """The run's state after the iteration of metrics row ``row``, most important first."""
    step = int(row["global_step"])
    parts = [f"{si(step)}/{si(total_steps)}"]
    sps = _number(row.get("sps"))
    if sps is not None:
        parts.append(f"{si(sps)}/s")
    ret = _number(row.get("episodic_return_mean"))
    parts.append(f"ret {ret:.1f}" if ret is not None else "ret -")
    if last_eval is not None:
        parts.append(f"eval {last_eval:.1f}")
    parts += [f"{label} {value:.3g}" for key, label in STATISTICS if (value := _number(row.get(key))) is not None]
    if sps:
        parts.append(f"eta {_duration(max(0, total_steps - step) / sps)}")
    return parts


def fit(parts: list[str], width: int) -> str:
    """``parts`` joined by spaces, leaving out from the end what does not fit in ``width``."""
    text = ""
    for part in parts:
        candidate = f"{text} {part}" if text else part
        if len(candidate) > width:
            break
        text = candidate
    return text


def plain_line(row: dict[str, Any], total_steps: int, last_eval: float | None = None, width: int = WIDTH) -> str:
    """The line a quiet or non-terminal run prints: ``' 45% 45.1k/100k 6.57k/s ret 187.3 ...'``."""
    percent = f"{100 * int(row['global_step']) / max(total_steps, 1):3.0f}%"
    return f"{percent} {fit(state_parts(row, total_steps, last_eval), width - len(percent) - 1)}"


class ProgressDisplay:
    """Shows each iteration's metrics row: ``mode`` "bar" (tqdm), "lines" (every ``log_every``
    iterations and the last) or "off"."""

    def __init__(self, mode: str, total_steps: int, start_step: int, log_every: int = 10,
                 stream: TextIO | None = None):
        self.mode, self.total_steps, self.log_every = mode, total_steps, log_every
        self.stream = stream or sys.stdout
        self.last_eval: float | None = None
        self.last_step = start_step
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.width = min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
            self.bar = tqdm(total=total_steps, initial=start_step, bar_format=BAR_FORMAT, ncols=self.width,
                            file=self.stream)

    @staticmethod
    def choose(quiet: bool, log_every: int, stream: TextIO | None = None) -> str:
        """"bar" on a terminal unless ``quiet``; else "lines" if ``log_every`` > 0; else "off"."""
        stream = stream or sys.stdout
        if not quiet and stream.isatty():
            return "bar"
        return "lines" if log_every > 0 else "off"

    def update(self, row: dict[str, Any]) -> None:
        step = int(row["global_step"])
        if _number(row.get("eval_return_mean")) is not None:
            self.last_eval = float(row["eval_return_mean"])
        if self.bar is not None:
            self.bar.set_description_str(fit(state_parts(row, self.total_steps, self.last_eval),
                                             self.width - BAR_PREFIX), refresh=False)
            self.bar.update(step - self.last_step)
        elif self.mode == "lines":
            iteration = int(row.get("iteration", 0))
            if iteration % self.log_every == 0 or step >= self.total_steps:
                print(plain_line(row, self.total_steps, self.last_eval), file=self.stream, flush=True)
        self.last_step = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
