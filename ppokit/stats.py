"""Confidence intervals over runs (seeds), one place for every report that gives them."""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000  # bootstrap resamples; the generator is fixed, so a report is reproducible


def bootstrap_mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
    """The percentile-bootstrap confidence interval of the mean over runs: ``values [R, ...]``
    (one row per run) -> ``(low [...], high [...])``; None for fewer than 2 runs.

    Runs are resampled with replacement by a fixed generator: unlike a t-interval over 3 seeds,
    the interval stays within the values the runs reached."""
    values = np.asarray(values, dtype=float)
    if values.shape[0] < 2:
        return None
    picks = np.random.default_rng(0).integers(0, values.shape[0], (RESAMPLES, values.shape[0]))  # [S, R]
    means = values[picks].mean(1)  # [S, ...]
    tail = 100 * (1 - level) / 2
    return np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)
