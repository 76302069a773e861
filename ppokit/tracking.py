"""Optional tracking to Weights & Biases (``ppokit train --track [PROJECT]``, the ``wandb`` extra).

:class:`MetricsWriter <ppokit.metrics.MetricsWriter>` hands a :class:`Tracker` what it writes to
TensorBoard: the resolved config when the run starts, every iteration's scalars (the metrics.csv
row, evaluations during training included, under the same names as in TensorBoard) keyed by
``global_step``, and summary.json when it ends. Only the writing process (rank 0) tracks.

The W&B files go to ``RUN_DIR/wandb/`` unless ``WANDB_DIR`` is set; ``WANDB_MODE=offline`` keeps
them there until ``wandb sync``. A tracking failure during the run is a warning: training goes on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ppokit.errors import ConfigError, first_line, quote
from ppokit.extras import require

log = logging.getLogger("ppokit")

DEFAULT_PROJECT = "ppokit"
FORBIDDEN = set("/\\#?%:")  # characters W&B refuses in a project name


def check_project(project: str) -> None:
    """ConfigError for a project name W&B would refuse."""
    if not isinstance(project, str) or not project or len(project) > 128 or FORBIDDEN & set(project) \
            or not project.isprintable():
        raise ConfigError(f"--track {quote(project)}: expected a W&B project name (1 to 128 characters, none of "
                          f"{' '.join(sorted(FORBIDDEN))})")


def require_wandb() -> Any:
    """The wandb module; ConfigError with the pip command when the ``wandb`` extra is missing."""
    return require("wandb", "wandb", "--track (Weights & Biases)")


class Tracker:
    """One W&B run: :meth:`log` per iteration, :meth:`finish` with the summary."""

    def __init__(self, project: str, config: dict[str, Any], run_dir: Path, quiet: bool = True):
        wandb = require_wandb()
        try:
            self.run = wandb.init(
                project=project, name=run_dir.name, group=str(config.get("env_id")), job_type="train",
                config=config, dir=None if os.environ.get("WANDB_DIR") else str(run_dir),
                settings=wandb.Settings(silent=True),
            )
        except Exception as error:  # noqa: BLE001  (no login, no network, a bad setting: one line)
            raise ConfigError(f"--track: W&B could not start a run ({type(error).__name__}: {first_line(error)}); "
                              "log in with `wandb login` or set WANDB_MODE=offline") from None
        if not quiet:
            log.info("tracking to W&B project %s: %s", project, self.run.url or Path(self.run.dir).parent)

    def log(self, scalars: dict[str, float], step: int) -> None:
        """One iteration's scalars at ``step`` (environment steps)."""
        if self.run is None:
            return
        try:
            self.run.log(scalars, step=step)
        except Exception as error:  # noqa: BLE001  (tracking must not end a training run)
            log.warning("W&B tracking stopped: %s: %s", type(error).__name__, error)
            self.run = None

    def finish(self, summary: dict[str, Any]) -> None:
        """Put summary.json's fields in the W&B run's summary and close it (exit code 1 unless completed)."""
        if self.run is None:
            return
        try:
            self.run.summary.update(summary)
            self.run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        except Exception as error:  # noqa: BLE001
            log.warning("W&B tracking could not finish: %s: %s", type(error).__name__, error)
        self.run = None
